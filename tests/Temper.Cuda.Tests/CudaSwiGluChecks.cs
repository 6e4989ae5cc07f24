// CudaSwiGlu (cuda/swiglu.cu) against SwiGLU evaluated here in f64: y from the forward, dGate and dUp from
// the backward, for an element count that is not a multiple of 4 (the single-float tail), several blocks,
// gate values large enough to saturate the sigmoid both ways, and outputs one float off 16-byte alignment
// (the single-float path). Outputs are poisoned with NaN first, each with a guard element past its end.
using Temper.Kernels.Cuda;
using static Temper.Cuda.Tests.CudaRmsNormChecks;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaSwiGluChecks
{
    [Theory]
    [InlineData(2051, false)] // 3 blocks, a tail of 3
    [InlineData(64, true)]    // outputs one float off alignment
    public void Forward_and_backward_match_an_f64_evaluation(int n, bool unaligned)
    {
        using var device = Gpu.OpenForKernels();
        using var swiglu = new CudaSwiGlu(device);
        var r = new Random(n);
        float[] Rand(float scale) => [.. Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale)];
        var gate = Rand(6f);
        gate[0] = 90f;  // exp(-g) underflows
        gate[1] = -90f; // exp(-g) overflows to infinity: silu = -0
        var up = Rand(2f);
        var dy = Rand(1f);
        int shift = unaligned ? 1 : 0;
        using var dg = device.Upload<float>(gate);
        using var du = device.Upload<float>(up);
        using var ddy = device.Upload<float>(dy);
        using var yBuf = Poisoned(device, n + shift + 1);
        using var dGateBuf = Poisoned(device, n + shift + 1);
        using var dUpBuf = Poisoned(device, n + shift + 1);
        swiglu.Forward(dg, du, Offset(device, yBuf, shift, n), n);
        swiglu.Backward(ddy, dg, du, Offset(device, dGateBuf, shift, n), Offset(device, dUpBuf, shift, n), n);
        var y = device.Download<float>(yBuf);
        var dGate = device.Download<float>(dGateBuf);
        var dUp = device.Download<float>(dUpBuf);
        for (int i = 0; i < n; i++)
        {
            double g = gate[i], sig = 1 / (1 + Math.Exp(-g));
            Near(y[i + shift], g * sig * up[i], $"y[{i}]");
            Near(dUp[i + shift], dy[i] * g * sig, $"dUp[{i}]");
            Near(dGate[i + shift], dy[i] * up[i] * sig * (1 + g * (1 - sig)), $"dGate[{i}]");
        }
        Assert.True(float.IsNaN(y[n + shift]) && float.IsNaN(dGate[n + shift]) && float.IsNaN(dUp[n + shift]), "a kernel wrote past n");
    }
}
