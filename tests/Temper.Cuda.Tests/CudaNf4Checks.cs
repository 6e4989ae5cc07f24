// CudaNf4 (cuda/nf4.cu) against the CPU's NF4 decoding, bit for bit: the block absmax values against
// Nf4Weight.BlockAbsmax (bitsandbytes' two roundings), and every dequantised weight against code book[code]
// * absmax evaluated here, for weights with a partial last 64-block, more than 256 blocks (several
// absmax scales), an odd element count (a half-used last code byte), and an output address that is not
// 16-byte aligned (the element path). The output is poisoned first, with one guard element past the end.
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaNf4Checks
{
    [Theory]
    [InlineData(131, 200, false)] // 26,200 weights: 410 blocks, 2 scales, a partial last block
    [InlineData(37, 61, false)]   // 2,257 weights: odd
    [InlineData(33, 64, true)]    // output one float past an aligned address
    public void Absmax_and_dequantisation_match_the_cpu_bit_for_bit(int rows, int cols, bool unaligned)
    {
        using var device = Gpu.OpenForKernels();
        var r = new Random(rows * cols);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(r.NextDouble() * 2 - 1) * (i % 97 == 0 ? 0.5f : 0.02f);
        using var q = Nf4Weight.Quantize(w, new Shape(rows, cols), "w");
        var absmax = q.BlockAbsmax();
        var codes = q.Codes.Bytes.ToArray();
        var lut = Nf4CodeBook.Values;
        using var nf4 = new CudaNf4(device);
        using var dcodes = device.Upload<byte>(codes);
        using var dq = device.Upload<byte>(q.AbsmaxCodes.Bytes);
        using var dscales = device.Upload<float>(q.AbsmaxScales.Floats);
        using var dabs = device.Upload<float>(Enumerable.Repeat(float.NaN, absmax.Length).ToArray());
        nf4.Absmax(dq, dscales, q.AbsmaxOffset, dabs, absmax.Length);
        Assert.Equal(absmax, device.Download<float>(dabs));

        int n = w.Length, shift = unaligned ? 1 : 0;
        using var dout = device.Upload<float>(Enumerable.Repeat(float.NaN, n + shift + 1).ToArray());
        var target = CudaDeviceMemory.Borrow(dout.Pointer + (ulong)(4 * shift), 4L * n, device.Context);
        nf4.Dequantize(dcodes, dq, dscales, q.AbsmaxOffset, target, n);
        var got = device.Download<float>(dout);
        for (int i = 0; i < n; i++)
        {
            float expected = lut[i % 2 == 0 ? codes[i / 2] >> 4 : codes[i / 2] & 15] * absmax[i / 64];
            if (BitConverter.SingleToInt32Bits(got[i + shift]) != BitConverter.SingleToInt32Bits(expected))
                Assert.Fail($"weight {i}: {got[i + shift]}, expected {expected}");
        }
        Assert.True(float.IsNaN(got[n + shift]), "the kernel wrote past n");
    }

    [Fact]
    public void Buffers_too_small_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var nf4 = new CudaNf4(device);
        using var small = device.Allocate<float>(4);
        using var big = device.Allocate<float>(1024);
        var e = Assert.Throws<CudaException>(() => nf4.Dequantize(big, big, big, 0f, small, 100));
        Assert.Contains("output holds 16 bytes, the sizes need 400", e.Message);
        var a = Assert.Throws<CudaException>(() => nf4.Absmax(small, big, 0f, big, 100));
        Assert.Contains("the absmax codes holds 16 bytes, the sizes need 100", a.Message);
    }
}
