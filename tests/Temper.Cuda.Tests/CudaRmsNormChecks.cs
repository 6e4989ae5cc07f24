// CudaRmsNorm (cuda/rmsnorm.cu) against RMSNorm evaluated here in f64: y and rstd from the forward, dx and
// dw (added to a non-zero dw) from the backward (and dx added to a non-zero dx), for a row length that is not a multiple of 4 (the
// single-float path), one that is (the float4 path, rows longer than one pass of the block), and an
// output one float past an aligned address (the single-float path for a row length that could vectorise).
// Outputs are poisoned with NaN first, each with one guard element past its end; the backward weight
// gradient is run twice on the same inputs and must agree bit for bit (no atomics).
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaRmsNormChecks
{
    [Theory]
    [InlineData(3, 67, false)]   // c % 4 != 0
    [InlineData(2, 1100, false)] // float4 loads, two strides of the block for some threads
    [InlineData(2, 64, true)]    // outputs one float off 16-byte alignment
    public void Forward_and_backward_match_an_f64_evaluation(int rows, int c, bool unaligned)
    {
        using var device = Gpu.OpenForKernels();
        using var norm = new CudaRmsNorm(device);
        var r = new Random(rows * 1000 + c);
        float[] Rand(int n, float scale, float offset = 0) => [.. Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale + offset)];
        var x = Rand(rows * c, 2f);
        var w = Rand(c, 0.5f, 1f);
        var dy = Rand(rows * c, 1f);
        var dw0 = Rand(c, 0.1f);
        const float eps = 1e-5f;
        int shift = unaligned ? 1 : 0;

        using var dx_ = device.Upload<float>(x);
        using var dwgt = device.Upload<float>(w);
        using var ddy = device.Upload<float>(dy);
        using var yBuf = Poisoned(device, rows * c + shift + 1);
        using var rstdBuf = Poisoned(device, rows + 1);
        var y = Offset(device, yBuf, shift, rows * c);
        norm.Forward(dx_, dwgt, eps, y, rstdBuf, rows, c);

        using var dxBuf = Poisoned(device, rows * c + shift + 1);
        using var dwBuf = device.Upload<float>([.. dw0, float.NaN]);
        var dxView = Offset(device, dxBuf, shift, rows * c);
        var dwView = CudaDeviceMemory.Borrow(dwBuf.Pointer, 4L * c, device.Context);
        norm.Backward(ddy, dx_, dwgt, rstdBuf, dxView, dwView, rows, c);

        var gotY = device.Download<float>(yBuf);
        var gotRstd = device.Download<float>(rstdBuf);
        var gotDx = device.Download<float>(dxBuf);
        var gotDw = device.Download<float>(dwBuf);
        var dw = new double[c];
        for (int n = 0; n < rows; n++)
        {
            double ss = 0, dot = 0;
            for (int j = 0; j < c; j++) ss += (double)x[n * c + j] * x[n * c + j];
            double rs = 1 / Math.Sqrt(ss / c + eps);
            Near(gotRstd[n], rs, $"rstd[{n}]");
            for (int j = 0; j < c; j++)
            {
                double xhat = x[n * c + j] * rs;
                Near(gotY[n * c + j + shift], w[j] * xhat, $"y[{n},{j}]");
                dot += dy[n * c + j] * w[j] * xhat;
                dw[j] += dy[n * c + j] * xhat;
            }
            for (int j = 0; j < c; j++)
                Near(gotDx[n * c + j + shift], rs * (dy[n * c + j] * w[j] - x[n * c + j] * rs * dot / c), $"dx[{n},{j}]");
        }
        for (int j = 0; j < c; j++) Near(gotDw[j], dw0[j] + dw[j], $"dw[{j}]");
        Assert.True(float.IsNaN(gotY[rows * c + shift]) && float.IsNaN(gotDx[rows * c + shift]) && float.IsNaN(gotRstd[rows]) && float.IsNaN(gotDw[c]), "a kernel wrote past its output");

        // The weight gradient again from dw0: the same bits; dx this time added to the first pass's (accumulate: a
        // residual stream's gradient), so exactly twice it.
        using var again = device.Upload<float>([.. dw0, float.NaN]);
        norm.Backward(ddy, dx_, dwgt, rstdBuf, dxView, CudaDeviceMemory.Borrow(again.Pointer, 4L * c, device.Context), rows, c, accumulate: true);
        Assert.Equal(gotDw, device.Download<float>(again));
        var twice = device.Download<float>(dxBuf);
        for (int i = 0; i < rows * c; i++) Assert.Equal(2 * gotDx[i + shift], twice[i + shift]);
    }

    [Fact]
    public void Forward_in_place_matches_the_out_of_place_result()
    {
        using var device = Gpu.OpenForKernels();
        using var norm = new CudaRmsNorm(device);
        var x = Enumerable.Range(0, 2 * 68).Select(i => MathF.Sin(i * 0.37f) * 3).ToArray();
        var w = Enumerable.Range(0, 68).Select(i => 1 + i * 0.01f).ToArray();
        using var dx = device.Upload<float>(x);
        using var dw = device.Upload<float>(w);
        using var y = device.Allocate<float>(x.Length);
        norm.Forward(dx, dw, 1e-6f, y, null, 2, 68);
        norm.Forward(dx, dw, 1e-6f, dx, null, 2, 68);
        Assert.Equal(device.Download<float>(y), device.Download<float>(dx));
    }

    [Fact]
    public void Buffers_too_small_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var norm = new CudaRmsNorm(device);
        using var small = device.Allocate<float>(4);
        using var big = device.Allocate<float>(1024);
        var e = Assert.Throws<CudaException>(() => norm.Forward(big, small, 1e-5f, big, null, 2, 8));
        Assert.Contains("weight holds 16 bytes, the sizes need 32", e.Message);
    }

    /// <summary>AddForward (sum = a + b, then the norm of sum, in one kernel) gives the bits of the f32 add then Forward, rstd
    /// included, with sum apart and over a (in place), and with the rows off 16-byte alignment (the single-float path).</summary>
    [Theory]
    [InlineData(3, 67, false)]
    [InlineData(2, 1100, false)]
    [InlineData(2, 64, true)]
    public void AddForward_gives_the_bits_of_the_add_then_the_norm(int rows, int c, bool unaligned)
    {
        using var device = Gpu.OpenForKernels();
        using var norm = new CudaRmsNorm(device);
        var r = new Random(rows * 77 + c);
        float[] Rand(int n, float scale, float offset = 0) => [.. Enumerable.Range(0, n).Select(_ => (float)(r.NextDouble() * 2 - 1) * scale + offset)];
        var a = Rand(rows * c, 2f);
        var b = Rand(rows * c, 1f);
        var w = Rand(c, 0.5f, 1f);
        int shift = unaligned ? 1 : 0, size = rows * c;
        var sum = new float[size];
        for (int i = 0; i < size; i++) sum[i] = a[i] + b[i];
        using var dSum = device.Upload<float>(sum);
        using var dw = device.Upload<float>(w);
        using var yRef = Poisoned(device, size);
        using var rRef = Poisoned(device, rows);
        norm.Forward(dSum, dw, 1e-5f, yRef, rRef, rows, c);
        var (wantY, wantR) = (device.Download<float>(yRef), device.Download<float>(rRef));

        using var aBuf = device.Upload<float>([.. new float[shift], .. a, float.NaN]);
        using var bBuf = device.Upload<float>([.. new float[shift], .. b, float.NaN]);
        using var sBuf = Poisoned(device, size + shift + 1);
        using var yBuf = Poisoned(device, size + shift + 1);
        using var rBuf = Poisoned(device, rows + 1);
        norm.AddForward(Offset(device, aBuf, shift, size), Offset(device, bBuf, shift, size), Offset(device, sBuf, shift, size), dw, 1e-5f,
            Offset(device, yBuf, shift, size), rBuf, rows, c);
        var (gotS, gotY, gotR) = (device.Download<float>(sBuf), device.Download<float>(yBuf), device.Download<float>(rBuf));
        for (int i = 0; i < size; i++)
        {
            Assert.Equal(BitConverter.SingleToInt32Bits(sum[i]), BitConverter.SingleToInt32Bits(gotS[i + shift]));
            Assert.Equal(BitConverter.SingleToInt32Bits(wantY[i]), BitConverter.SingleToInt32Bits(gotY[i + shift]));
        }
        for (int n = 0; n < rows; n++) Assert.Equal(BitConverter.SingleToInt32Bits(wantR[n]), BitConverter.SingleToInt32Bits(gotR[n]));
        Assert.True(float.IsNaN(gotS[size + shift]) && float.IsNaN(gotY[size + shift]) && float.IsNaN(gotR[rows]), "a kernel wrote past its rows");

        // in place: sum over a, no rstd
        var inPlace = Offset(device, aBuf, shift, size);
        norm.AddForward(inPlace, Offset(device, bBuf, shift, size), inPlace, dw, 1e-5f, Offset(device, yBuf, shift, size), null, rows, c);
        var (overA, y2) = (device.Download<float>(aBuf), device.Download<float>(yBuf));
        for (int i = 0; i < size; i++)
        {
            Assert.Equal(BitConverter.SingleToInt32Bits(sum[i]), BitConverter.SingleToInt32Bits(overA[i + shift]));
            Assert.Equal(BitConverter.SingleToInt32Bits(wantY[i]), BitConverter.SingleToInt32Bits(y2[i + shift]));
        }
    }

    internal static CudaDeviceMemory Poisoned(Temper.Cuda.CudaDevice device, int n) => device.Upload<float>(Enumerable.Repeat(float.NaN, n).ToArray());

    internal static CudaDeviceMemory Offset(Temper.Cuda.CudaDevice device, CudaDeviceMemory m, int floats, int count) =>
        CudaDeviceMemory.Borrow(m.Pointer + (ulong)(4 * floats), 4L * count, device.Context);

    internal static void Near(float got, double expected, string what)
    {
        if (!(Math.Abs(got - expected) <= 1e-5 * (1 + Math.Abs(expected)))) Assert.Fail($"{what}: {got}, expected {expected}");
    }
}
