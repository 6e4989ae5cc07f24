// CudaRope (cuda/rope.cu) against the rotation evaluated here in f64 from the same f32 cos/sin tables
// (built as the ILGPU op's RopeTables builds them, with an attention scaling), forward (sign +1) and
// backward (sign -1), for half = 6 (single floats), half = 8 (16-byte loads), and x one float off
// alignment (single floats again); positions out of order and repeated. x carries a NaN guard element
// past its end and must keep it.
using Temper.Kernels.Cuda;
using static Temper.Cuda.Tests.CudaRmsNormChecks;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaRopeChecks
{
    [Theory]
    [InlineData(6, 1f, false)]
    [InlineData(8, 1f, false)]
    [InlineData(8, -1f, false)]
    [InlineData(8, 1f, true)]
    public void Rotation_matches_an_f64_evaluation(int half, float sign, bool unaligned)
    {
        using var device = Gpu.OpenForKernels();
        using var rope = new CudaRope(device);
        int[] positions = [5, 0, 9, 5];
        int rows = positions.Length, heads = 3, tableRows = 16, shift = unaligned ? 1 : 0;
        const float scaling = 1.25f;
        var inv = Enumerable.Range(0, half).Select(i => (float)Math.Pow(10000, -2.0 * i / (2 * half))).ToArray();
        var cos = new float[tableRows * half];
        var sin = new float[tableRows * half];
        for (int p = 0; p < tableRows; p++)
            for (int i = 0; i < half; i++)
            {
                float angle = p * inv[i];
                cos[p * half + i] = MathF.Cos(angle) * scaling;
                sin[p * half + i] = MathF.Sin(angle) * scaling;
            }
        var r = new Random(half);
        int n = rows * heads * 2 * half;
        var x = Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1)).ToArray();
        using var xBuf = device.Upload<float>([.. Enumerable.Repeat(0f, shift), .. x, float.NaN]);
        using var dPos = device.Upload<int>(positions);
        using var dCos = device.Upload<float>(cos);
        using var dSin = device.Upload<float>(sin);
        rope.Apply(Offset(device, xBuf, shift, n), dPos, dCos, dSin, rows, heads, half, sign);
        var got = device.Download<float>(xBuf);
        for (int row = 0; row < rows; row++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++)
                {
                    int o = (row * heads + h) * 2 * half, t = positions[row] * half + i;
                    double c = cos[t], s = sign * (double)sin[t], x1 = x[o + i], x2 = x[o + i + half];
                    Near(got[shift + o + i], x1 * c - x2 * s, $"x[{row},{h},{i}]");
                    Near(got[shift + o + i + half], x2 * c + x1 * s, $"x[{row},{h},{i + half}]");
                }
        Assert.True(float.IsNaN(got[shift + n]), "the kernel wrote past x");
    }
}
