// gemm_bf16.cu's f32 -> bf16 conversion of the activations (CudaLinear.ConvertToBf16), bit for bit against
// BFloat16.FromSingle (round to nearest even, NaN kept quiet): random values, ties, the smallest and largest
// normals, subnormals, infinities and NaN, at lengths that end in a partial group of four, nothing written
// past the end. Its first version (__float2bfloat16 and a memcpy that nvcc 11.8 made byte stores) failed
// this on an H100 with the low byte of 60 of 64 elements wrong, which the emulator could not show: it runs
// the .cu on the CPU. Runs on a GPU and on the CUDA emulator.
using Temper.Core;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaConvertChecks
{
    private static float[] Inputs(int n)
    {
        var r = new Random(n);
        var v = new float[n];
        float[] special = [0f, -0f, 1f, -1f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, float.Epsilon, -float.Epsilon,
            float.MaxValue, -float.MaxValue, 1.17549435e-38f, BitConverter.UInt32BitsToSingle(0x3F808000), BitConverter.UInt32BitsToSingle(0x3F818000),
            BitConverter.UInt32BitsToSingle(0x7F7FFFFF), BitConverter.UInt32BitsToSingle(0x3F80FFFF)];
        for (int i = 0; i < n; i++) v[i] = i < special.Length ? special[i] : (float)((r.NextDouble() * 2 - 1) * Math.Pow(2, r.Next(-20, 20)));
        return v;
    }

    [Theory]
    [InlineData(64)]
    [InlineData(1001)]
    public void Converted_bits_equal_round_to_nearest_even(int n)
    {
        using var device = Gpu.OpenForKernels();
        var x = Inputs(n);
        var expected = new ushort[n];
        BFloat16.FromSingle(x, expected);
        using var dx = device.Upload<float>(x);
        using var dout = device.Upload<ushort>(Enumerable.Repeat((ushort)0xFFFF, n + 8).ToArray());
        using var linear = new CudaLinear(device);
        linear.ConvertToBf16(dx, dout, n);
        device.Synchronize();
        var actual = device.Download<ushort>(dout);
        var wrong = Enumerable.Range(0, n).Where(i => actual[i] != expected[i]).ToList();
        int lowOnly = wrong.Count(i => (actual[i] >> 8) == (expected[i] >> 8)), highOnly = wrong.Count(i => (actual[i] & 0xFF) == (expected[i] & 0xFF));
        Assert.True(wrong.Count == 0, $"{wrong.Count} of {n} wrong ({lowOnly} in the low byte only, {highOnly} in the high byte only); first: " +
            string.Join(", ", wrong.Take(6).Select(i => $"[{i}] {x[i]:R} expected 0x{expected[i]:X4} got 0x{actual[i]:X4}")));
        Assert.All(actual.AsSpan(n).ToArray(), b => Assert.Equal(0xFFFF, b)); // nothing written past the end
    }
}
