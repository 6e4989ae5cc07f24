// CudaLinear (cuda/gemm_bf16.cu's mma.sync pipeline and cuda/linear_bf16.cu's WMMA kernel, on tensor cores)
// against a float64 evaluation of the same function with x and W rounded to bf16: y = alpha x W^T + bias +
// y0 and the input gradient, at shapes ending in partial 128-row and 128-column tiles and a partial
// 32-deep slice, rows whose length allows 16-byte loads and rows whose length does not, with and without
// bias and accumulation; the LoRA term of the epilogue and NF4 weights; refusals by name. Every element
// of y is poisoned (NaN) first where it is overwritten, so an unwritten one fails. Runs on a GPU and on
// the CUDA emulator.
using Temper.Core;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaLinearChecks
{
    private static float[] Floats(int n, int seed)
    {
        var r = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(r.NextDouble() * 2 - 1);
        return v;
    }

    /// <summary>Every element written (no NaN left of the poison) and the whole within NMSE 1e-8 of the
    /// float64 evaluation: f32 sums of exact bf16 products; a wrong index or tile gives ~1, rounding ~1e-13.</summary>
    private static void WrittenAndClose(float[] actual, double[] expected, string what)
    {
        double err = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            Assert.False(float.IsNaN(actual[i]), $"{what}[{i}] was not written");
            err += (actual[i] - expected[i]) * (actual[i] - expected[i]);
            norm += expected[i] * expected[i];
        }
        Assert.True(err / norm < 1e-8, $"{what}: normalised MSE {err / norm:E2}");
    }

    [Theory]
    [InlineData(200, 72, 130, true, true, true)]
    [InlineData(1, 64, 64, false, false, true)]
    [InlineData(129, 33, 257, true, false, true)] // K % 8 != 0: the WMMA kernel whatever the switch
    [InlineData(131, 160, 136, false, true, true)] // five slices through the 3-stage ring
    [InlineData(100, 264, 100, true, true, true)] // nine slices: the ring wraps three times
    [InlineData(200, 72, 130, true, true, false)] // the WMMA kernel (linear_bf16.cu)
    [InlineData(131, 160, 136, false, true, false)]
    public void Bf16_linear_matches_a_float64_evaluation(int n, int k, int m, bool bias, bool accumulate, bool pipelined)
    {
        using var device = Gpu.OpenForKernels();
        var x = Floats(n * k, 1);
        var w = Floats(m * k, 2);
        var b = Floats(m, 3);
        var y0 = accumulate ? Floats(n * m, 4) : Enumerable.Repeat(float.NaN, n * m).ToArray();
        var wBits = new ushort[w.Length];
        BFloat16.FromSingle(w, wBits);
        const float alpha = 0.5f;
        var expected = new double[n * m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
            {
                double s = 0;
                for (int q = 0; q < k; q++) s += (double)BFloat16.ToSingle(BFloat16.FromSingle(x[i * k + q])) * BFloat16.ToSingle(wBits[j * k + q]);
                expected[i * m + j] = alpha * s + (bias ? b[j] : 0) + (accumulate ? y0[i * m + j] : 0);
            }
        using var dx = device.Upload<float>(x);
        using var dw = device.Upload<ushort>(wBits);
        using var db = device.Upload<float>(b);
        using var dy = device.Upload<float>(y0);
        using var linear = new CudaLinear(device) { Pipelined = pipelined };
        linear.Forward(dx, new LinearWeight.Bf16(dw), bias ? db : null, dy, n, k, m, alpha, accumulate);
        device.Synchronize();
        WrittenAndClose(device.Download<float>(dy), expected, "y");
    }

    [Fact]
    public void Sizes_the_buffers_cannot_hold_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var small = device.Allocate<float>(4);
        using var linear = new CudaLinear(device);
        var e = Assert.Throws<CudaException>(() => linear.Forward(small, new LinearWeight.Bf16(small), null, small, 4, 4, 4));
        Assert.Contains("x holds 16 bytes, the sizes need 64", e.Message);
        var g = Assert.Throws<CudaException>(() => linear.InputGradient(small, new LinearWeight.Bf16(small), small, 4, 4, 4));
        Assert.Contains("dy holds 16 bytes, the sizes need 64", g.Message);
        using var big = device.Allocate<float>(64 * 64);
        var q = Assert.Throws<CudaException>(() => linear.Forward(big, new LinearWeight.Nf4(big, small, big), null, big, 8, 16, 64));
        Assert.Contains("the NF4 absmax holds 16 bytes, the sizes need 64", q.Message);
    }

    [Theory]
    [InlineData(200, 130, 72, false, true)] // K % 8 != 0: the WMMA kernel whatever the switch
    [InlineData(129, 257, 33, true, true)]
    [InlineData(70, 136, 96, true, true)]   // the mma.sync pipeline (K, M multiples of 8), three slices
    [InlineData(100, 200, 168, false, true)] // six slices, two column tiles
    [InlineData(70, 136, 96, true, false)]  // the WMMA kernel: 16-byte loads of W's rows
    public void Bf16_input_gradient_matches_a_float64_evaluation(int n, int k, int m, bool accumulate, bool pipelined)
    {
        using var device = Gpu.OpenForKernels();
        using var linear = new CudaLinear(device) { Pipelined = pipelined };
        InputGradientMatchesAFloat64Evaluation(device, linear, n, k, m, accumulate, 1f);
    }

    /// <summary>dx = alpha dy W (+ dx0) on a given CudaLinear against float64 (CudaGemmSm90Checks runs it on the sm_90a route).</summary>
    internal static void InputGradientMatchesAFloat64Evaluation(CudaDevice device, CudaLinear linear, int n, int k, int m, bool accumulate, float alpha)
    {
        var dy = Floats(n * m, 5);
        var w = Floats(m * k, 6);
        var dx0 = accumulate ? Floats(n * k, 7) : Enumerable.Repeat(float.NaN, n * k).ToArray();
        var wBits = new ushort[w.Length];
        BFloat16.FromSingle(w, wBits);
        var expected = new double[n * k];
        for (int i = 0; i < n; i++)
            for (int q = 0; q < k; q++)
            {
                double s = 0;
                for (int j = 0; j < m; j++) s += (double)BFloat16.ToSingle(BFloat16.FromSingle(dy[i * m + j])) * BFloat16.ToSingle(wBits[j * k + q]);
                expected[i * k + q] = alpha * s + (accumulate ? dx0[i * k + q] : 0);
            }
        using var ddy = device.Upload<float>(dy);
        using var dw = device.Upload<ushort>(wBits);
        using var ddx = device.Upload<float>(dx0);
        linear.InputGradient(ddy, new LinearWeight.Bf16(dw), ddx, n, k, m, alpha, accumulate);
        device.Synchronize();
        WrittenAndClose(device.Download<float>(ddx), expected, "dx");
    }

    /// <summary>The LoRA term of the epilogue and the NF4 weight against float64: the forward's y = x W^T + bias +
    /// s xa B^T and the input gradient's dx = dy W + dxa A, L and R in f32 (not rounded), W bf16 or NF4 (its
    /// codes dequantised as staged: lut[code] * absmax rounded to bf16), at partial tiles, ranks 16, 4 and 3,
    /// rows whose length takes the 8-byte NF4 code loads (a multiple of 16) and rows that do not.</summary>
    [Theory]
    [InlineData(200, 72, 130, 16, false, false)]
    [InlineData(131, 160, 136, 3, true, false)]
    [InlineData(131, 160, 136, 5, false, false)]
    [InlineData(150, 96, 136, 4, false, true)]
    [InlineData(131, 40, 70, 4, false, true)]
    [InlineData(150, 96, 136, 4, true, true)]
    [InlineData(70, 136, 42, 4, true, true)]
    public void Lora_term_and_nf4_weights_match_a_float64_evaluation(int n, int k, int m, int r, bool inputGradient, bool nf4)
    {
        using var device = Gpu.OpenForKernels();
        using var linear = new CudaLinear(device);
        LoraTermMatchesAFloat64Evaluation(device, linear, n, k, m, r, inputGradient, nf4);
    }

    /// <summary>NF4 products of at least CudaLinear.Nf4DequantizeMinRows rows through the dequantise-then-GEMM route (Nf4Dequantize,
    /// opt-in: CudaNf4.ToBf16 into scratch, then the pipelined bf16 products) against the same float64 evaluation, forward and
    /// input gradient, with and without k a multiple of 16; the route's scratch holds the weight in bf16 afterwards.</summary>
    [Theory]
    [InlineData(150, 96, 136, 4, false)]
    [InlineData(150, 96, 136, 4, true)]
    [InlineData(131, 40, 72, 16, false)]
    [InlineData(200, 72, 40, 3, true)]
    public void Nf4_products_through_the_dequantised_route_match_a_float64_evaluation(int n, int k, int m, int r, bool inputGradient)
    {
        using var device = Gpu.OpenForKernels();
        using var linear = new CudaLinear(device) { Nf4Dequantize = true };
        LoraTermMatchesAFloat64Evaluation(device, linear, n, k, m, r, inputGradient, nf4: true);
        Assert.True(linear.ScratchBytes >= 2L * m * k, $"the route keeps the dequantised weight in scratch ({linear.ScratchBytes} bytes)");
    }

    /// <summary>The LoRA term check on a given CudaLinear (CudaGemmSm90Checks runs it on the sm_90a epilogue).</summary>
    internal static void LoraTermMatchesAFloat64Evaluation(CudaDevice device, CudaLinear linear, int n, int k, int m, int r, bool inputGradient, bool nf4)
    {
        int cols = inputGradient ? k : m, depth = inputGradient ? m : k;
        var x = Floats(n * depth, 8);
        var l = Floats(n * r, 10);
        var rMatrix = Floats(r * cols, 11); // B [m, r] for the forward, A [r, k] for the input gradient
        var bias = Floats(m, 16);
        const float scale = 1.75f;
        float s = inputGradient ? 1f : scale;
        var owned = new List<CudaDeviceMemory>();
        CudaDeviceMemory Up<T>(T[] values) where T : unmanaged
        {
            var d = device.Upload<T>(values);
            owned.Add(d);
            return d;
        }
        var (weight, wq) = nf4 ? Nf4Weight(Floats(m * k, 12), m, k, Up, Up) : Bf16Weight(Floats(m * k, 9), Up);
        var expected = new double[n * cols];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < cols; j++)
            {
                double sum = 0, low = 0;
                for (int t = 0; t < depth; t++)
                    sum += (double)BFloat16.ToSingle(BFloat16.FromSingle(x[i * depth + t])) * (inputGradient ? wq[t * k + j] : wq[j * k + t]);
                for (int t = 0; t < r; t++) low += (double)l[i * r + t] * (inputGradient ? rMatrix[t * k + j] : rMatrix[j * r + t]);
                expected[i * cols + j] = sum + s * low + (inputGradient ? 0 : bias[j]);
            }
        try
        {
            var dy = Up(Enumerable.Repeat(float.NaN, n * cols).ToArray());
            if (inputGradient) linear.InputGradient(Up(x), weight, dy, n, k, m, lora: LowRankTerm.InputGradient(Up(l), Up(rMatrix), r, k));
            else linear.Forward(Up(x), weight, Up(bias), dy, n, k, m, lora: LowRankTerm.Forward(Up(l), Up(rMatrix), r, scale));
            device.Synchronize();
            WrittenAndClose(device.Download<float>(dy), expected, inputGradient ? "dx" : "y");
        }
        finally
        {
            foreach (var d in owned) d.Dispose();
        }
    }

    // A bf16 weight on the device and the values the kernel multiplies.
    private static (LinearWeight, float[]) Bf16Weight(float[] w, Func<ushort[], CudaDeviceMemory> up)
    {
        var bits = new ushort[w.Length];
        BFloat16.FromSingle(w, bits);
        return (new LinearWeight.Bf16(up(bits)), bits.Select(BFloat16.ToSingle).ToArray());
    }

    // An NF4 weight (quantised on the CPU) on the device and the bf16 values the kernel dequantises it to.
    private static (LinearWeight, float[]) Nf4Weight(float[] w, int m, int k, Func<byte[], CudaDeviceMemory> upBytes, Func<float[], CudaDeviceMemory> upFloats)
    {
        using var q = Temper.Core.Quantization.Nf4Weight.Quantize(w, new Shape(m, k), "w");
        var absmax = q.BlockAbsmax();
        var codes = q.Codes.Bytes.ToArray();
        var lut = Temper.Core.Quantization.Nf4CodeBook.Values.ToArray();
        var values = new float[m * k];
        for (int i = 0; i < values.Length; i++)
            values[i] = BFloat16.ToSingle(BFloat16.FromSingle(lut[i % 2 == 0 ? codes[i / 2] >> 4 : codes[i / 2] & 15] * absmax[i / 64]));
        return (new LinearWeight.Nf4(upBytes(codes), upFloats(absmax), upFloats(lut)), values);
    }

    [Fact]
    public void A_lora_rank_the_epilogue_cannot_take_is_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var linear = new CudaLinear(device);
        using var big = device.Allocate<float>(64 * 64);
        var e = Assert.Throws<CudaException>(() => linear.Forward(big, new LinearWeight.Bf16(big), null, big, 4, 4, 4, lora: LowRankTerm.Forward(big, big, 17, 1f)));
        Assert.Contains("rank must be 1 to 16", e.Message);
        using var tiny = device.Allocate<float>(8);
        var small = Assert.Throws<CudaException>(() => linear.Forward(big, new LinearWeight.Bf16(big), null, big, 64, 4, 64, lora: LowRankTerm.Forward(big, tiny, 2, 1f)));
        Assert.Contains("the LoRA term's R holds 32 bytes, the sizes need 512", small.Message);
    }

}
