// CudaGemmSm90 (cuda/gemm_bf16_sm90.cu: wgmma from a 4-stage cp.async ring in the 128B-swizzled layout, or
// with Tma from a ring a producer warp fills by TMA copies, full/empty mbarriers per stage) against a float64 evaluation with x and W in bf16: y = alpha x W^T + bias + y0 at shapes ending in partial
// 128-row and 128- or 256-column tiles and a partial 64-deep slice, a single row, one slice only, and enough slices
// to wrap the ring; y poisoned with NaN where it is overwritten, so an unwritten element fails. The
// emulator computes a wgmma group only at the wgmma_wait that retires it, so a stage rewritten while its
// wgmmas are in flight (planted: wgmma_wait<2>) or accumulators read early fail here too; the TMA kernels'
// copies land only when every thread waits and complete their barrier's tx-count then, so a wrong swizzle
// mode, expect_tx, wait parity or a stage released before its wgmmas retired fails (see tma_ops.cuh). Runs on the
// CUDA emulator (whatever compute capability it reports) and on a compute capability 9.0 GPU; skipped on
// other GPUs, whose driver refuses sm_90a PTX. Also: CudaLinear's route to it and its opt-in gate, and
// refusals by name.
using Temper.Core;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaGemmSm90Checks
{
    private static CudaDevice OpenHopperOrEmulator()
    {
        var device = Gpu.OpenForKernels();
        if (!device.IsEmulated && device.ComputeCapability != (9, 0))
        {
            device.Dispose();
            Assert.Skip("sm_90a PTX runs only on compute capability 9.0 (or the CUDA emulator)");
        }
        return device;
    }

    private static float[] Floats(int n, int seed)
    {
        var r = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)(r.NextDouble() * 2 - 1);
        return v;
    }

    [Theory]
    [InlineData(200, 72, 130, true, true, false, false)]   // partial tiles both ways, a partial second slice
    [InlineData(1, 64, 64, false, false, false, false)]    // one row, one slice
    [InlineData(129, 8, 257, true, false, false, false)]   // K = 8: one slice, mostly zero-filled
    [InlineData(131, 328, 136, false, true, false, false)] // six slices: the 4-stage ring wraps
    [InlineData(200, 72, 300, true, true, true, false)]    // 128 x 256 tiles: a partial second column tile
    [InlineData(131, 328, 136, false, true, true, false)]  // ... the ring wraps, columns 128.. of a tile partly past M
    // TMA: the boxes zero-filled past N, M and K by the copies, full/empty mbarriers per stage
    [InlineData(200, 72, 130, true, true, false, true)]    // partial tiles both ways, a K tail in the second slice
    [InlineData(1, 8, 64, false, false, false, true)]      // one row, K = 8: one box almost all zeros
    [InlineData(131, 456, 136, true, false, false, true)]  // eight slices: the 6-stage ring wraps (empty barriers' second phase)
    [InlineData(200, 72, 300, false, true, true, true)]    // 128 x 256 tiles, a partial second column tile
    [InlineData(131, 328, 136, true, true, true, true)]    // ... six slices: the 4-stage ring wraps
    [InlineData(1100, 8, 300, true, false, false, true)]   // 9 x 3 tiles: a full band of 8 row tiles and a band of 1
    [InlineData(70, 16, 131, true, true, true, true)]      // M odd: the last column stored alone, pairs unaligned
    public void Forward_matches_a_float64_evaluation(int n, int k, int m, bool bias, bool accumulate, bool wide, bool tma)
    {
        using var device = OpenHopperOrEmulator();
        var x = Floats(n * k, 1);
        var w = Floats(m * k, 2);
        var b = Floats(m, 3);
        var y0 = accumulate ? Floats(n * m, 4) : Enumerable.Repeat(float.NaN, n * m).ToArray();
        ushort[] xBits = new ushort[x.Length], wBits = new ushort[w.Length];
        BFloat16.FromSingle(x, xBits);
        BFloat16.FromSingle(w, wBits);
        const float alpha = 0.75f;
        var expected = new double[n * m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
            {
                double s = 0;
                for (int q = 0; q < k; q++) s += (double)BFloat16.ToSingle(xBits[i * k + q]) * BFloat16.ToSingle(wBits[j * k + q]);
                expected[i * m + j] = alpha * s + (bias ? b[j] : 0) + (accumulate ? y0[i * m + j] : 0);
            }
        using var dx = device.Upload<ushort>(xBits);
        using var dw = device.Upload<ushort>(wBits);
        using var db = device.Upload<float>(b);
        using var dy = device.Upload<float>(y0);
        using var gemm = new CudaGemmSm90(device) { Wide = wide, Tma = tma };
        gemm.Forward(dx, dw, bias ? db : null, dy, n, k, m, alpha, accumulate);
        device.Synchronize();
        var y = device.Download<float>(dy);
        double err = 0, norm = 0;
        for (int i = 0; i < y.Length; i++)
        {
            Assert.False(float.IsNaN(y[i]), $"y[{i}] (row {i / m}, column {i % m}) was not written");
            err += (y[i] - expected[i]) * (y[i] - expected[i]);
            norm += expected[i] * expected[i];
        }
        Assert.True(err / norm < 1e-8, $"y: normalised MSE {err / norm:E2}");
    }

    // CudaLinear's route to the kernel (Sm90 forced, as on the emulator UseOnThisDevice is false): f32 x
    // converted to bf16 first, then the wgmma product the opt-in variable picks (FromEnvironment; set here
    // for the test's duration, no other check reads it where Sm90 is forced); the same f64 evaluation.
    [Theory]
    [InlineData(200, 72, 130, "1")]
    [InlineData(131, 136, 300, "1")]
    [InlineData(131, 136, 300, "tma")]
    [InlineData(200, 72, 300, "tma-wide")]
    public void CudaLinear_forward_through_the_sm90_kernel_matches_a_float64_evaluation(int n, int k, int m, string optIn)
    {
        string? before = Environment.GetEnvironmentVariable(CudaGemmSm90.OptInVariable);
        Environment.SetEnvironmentVariable(CudaGemmSm90.OptInVariable, optIn);
        try
        {
            LinearForwardThroughSm90(n, k, m);
        }
        finally
        {
            Environment.SetEnvironmentVariable(CudaGemmSm90.OptInVariable, before);
        }
    }

    private static void LinearForwardThroughSm90(int n, int k, int m)
    {
        using var device = OpenHopperOrEmulator();
        var x = Floats(n * k, 5);
        var w = Floats(m * k, 6);
        var b = Floats(m, 7);
        var wBits = new ushort[w.Length];
        BFloat16.FromSingle(w, wBits);
        var expected = new double[n * m];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
            {
                double s = 0;
                for (int q = 0; q < k; q++) s += (double)BFloat16.ToSingle(BFloat16.FromSingle(x[i * k + q])) * BFloat16.ToSingle(wBits[j * k + q]);
                expected[i * m + j] = s + b[j];
            }
        using var dx = device.Upload<float>(x);
        using var dw = device.Upload<ushort>(wBits);
        using var db = device.Upload<float>(b);
        using var dy = device.Upload<float>(Enumerable.Repeat(float.NaN, n * m).ToArray());
        using var linear = new CudaLinear(device) { Sm90 = true };
        linear.Forward(dx, new LinearWeight.Bf16(dw), db, dy, n, k, m);
        device.Synchronize();
        var y = device.Download<float>(dy);
        double err = 0, norm = 0;
        for (int i = 0; i < y.Length; i++)
        {
            Assert.False(float.IsNaN(y[i]), $"y[{i}] was not written");
            err += (y[i] - expected[i]) * (y[i] - expected[i]);
            norm += expected[i] * expected[i];
        }
        Assert.True(err / norm < 1e-8, $"y: normalised MSE {err / norm:E2}");
    }

    // The input gradient through W^T (transpose_16.cu) and the sm_90a GEMM (Sm90InputGradient, opt-in by
    // TEMPER_GEMM_SM90_NN=1): dx = alpha dy W (+ dx0) against float64 with dy and W in bf16, at partial tiles, a
    // K tail, a ring that wraps, a second call with a larger W (the scratch grows) and accumulation.
    [Theory]
    [InlineData(200, 136, 72, "1", false)]
    [InlineData(131, 300, 328, "tma-wide", true)]
    [InlineData(70, 40, 136, "tma", true)]
    public void CudaLinear_input_gradient_through_the_sm90_kernel_matches_a_float64_evaluation(int n, int k, int m, string optIn, bool accumulate)
    {
        string? before = Environment.GetEnvironmentVariable(CudaGemmSm90.OptInVariable);
        Environment.SetEnvironmentVariable(CudaGemmSm90.OptInVariable, optIn);
        try
        {
            using var device = OpenHopperOrEmulator();
            using var linear = new CudaLinear(device) { Sm90 = true, Sm90InputGradient = true };
            CudaLinearChecks.InputGradientMatchesAFloat64Evaluation(device, linear, 24, 16, 8, accumulate, 0.5f); // a small W first: the scratch grows next
            CudaLinearChecks.InputGradientMatchesAFloat64Evaluation(device, linear, n, k, m, accumulate, 1.5f);
            Assert.True(linear.ScratchBytes >= 2L * m * k + 2L * n * m, "W^T and dy in bf16 live in the instance's scratch");
        }
        finally
        {
            Environment.SetEnvironmentVariable(CudaGemmSm90.OptInVariable, before);
        }
    }

    // The LoRA term in the sm_90a epilogue (Sm90Lora, opt-in by TEMPER_GEMM_SM90_LORA=1): CudaLinearChecks' float64 check
    // of y = x W^T + bias + s xa B^T and dx = dy W + dxa A (the input gradient through W^T) on each variant, at partial
    // tiles both ways, ranks 16, 5 and 1, and a 128 x 256 tile whose second half lies partly past M.
    [Theory]
    [InlineData(200, 72, 130, 16, false, "1")]
    [InlineData(131, 160, 136, 3, true, "1")]
    [InlineData(300, 136, 264, 5, false, "wide")]
    [InlineData(200, 72, 130, 16, false, "tma")]
    [InlineData(131, 160, 136, 1, true, "tma")]
    [InlineData(300, 136, 264, 5, false, "tma-wide")]
    [InlineData(70, 264, 136, 16, true, "tma-wide")]
    public void Lora_epilogue_matches_a_float64_evaluation(int n, int k, int m, int r, bool inputGradient, string optIn)
    {
        string? before = Environment.GetEnvironmentVariable(CudaGemmSm90.OptInVariable);
        Environment.SetEnvironmentVariable(CudaGemmSm90.OptInVariable, optIn);
        try
        {
            using var device = OpenHopperOrEmulator();
            using var linear = new CudaLinear(device) { Sm90 = true, Sm90InputGradient = true, Sm90Lora = true };
            Assert.True(linear.Sm90LoraEpilogue);
            CudaLinearChecks.LoraTermMatchesAFloat64Evaluation(device, linear, n, k, m, r, inputGradient, nf4: false);
        }
        finally
        {
            Environment.SetEnvironmentVariable(CudaGemmSm90.OptInVariable, before);
        }
    }

    [Fact]
    public void CudaLinear_takes_the_sm90_kernel_only_on_compute_capability_9_0()
    {
        Assert.True(CudaGemmSm90.Selected((9, 0), "1"));
        Assert.True(CudaGemmSm90.Selected((9, 0), "wide"));
        Assert.Equal("tma-wide", CudaGemmSm90.Variant((9, 0), null));                  // unset: the fastest on an H100
        Assert.Equal("wide", CudaGemmSm90.Variant((9, 0), null, "the CUDA driver has no cuTensorMapEncodeTiled"));
        Assert.Null(CudaGemmSm90.Variant((8, 0), null));
        Assert.Null(CudaGemmSm90.Variant((12, 0), null));
        Assert.False(CudaGemmSm90.Selected((9, 0), "0"));
        Assert.False(CudaGemmSm90.Selected((8, 0), "1"));
        Assert.False(CudaGemmSm90.Selected((10, 0), "1"));
        Assert.True(CudaGemmSm90.Selected((9, 0), "tma"));
        Assert.True(CudaGemmSm90.Selected((9, 0), "tma-wide"));
        Assert.False(CudaGemmSm90.Selected((8, 9), "tma"));
        Assert.False(CudaGemmSm90.Selected((9, 0), "tma", "the CUDA driver has no cuTensorMapEncodeTiled"));
        Assert.True(CudaGemmSm90.Selected((9, 0), "1", "the CUDA driver has no cuTensorMapEncodeTiled"));
    }

    // The driver's tensor map encoding: present here (CUDA 12 drivers and the emulator), its argument checks
    // surfacing as one CudaException line naming the tensor; a missing entry point is reported, not called.
    [Fact]
    public void Tensor_maps_are_encoded_or_refused_by_name()
    {
        using var device = OpenHopperOrEmulator();
        Assert.Null(CudaTensorMaps.Unavailable);
        Assert.False(CudaLibrary.Exports("cuNoSuchEntryPoint"));
        using var x = device.Allocate<ushort>(64 * 72);
        CudaTensorMaps.Encode2D(x.Pointer, CudaTensorMapDataType.BFloat16, 64, 72, 144, 64, 64, CudaTensorMapSwizzle.Bytes128);
        var stride = Assert.Throws<CudaException>(() =>
            CudaTensorMaps.Encode2D(x.Pointer, CudaTensorMapDataType.BFloat16, 64, 68, 136, 64, 64, CudaTensorMapSwizzle.Bytes128));
        Assert.Contains("cuTensorMapEncodeTiled", stride.Message);
        Assert.Contains("rows 136 bytes apart", stride.Message);
        // A 128-byte inner box does not fit the 64B swizzle's span.
        Assert.Throws<CudaException>(() => CudaTensorMaps.Encode2D(x.Pointer, CudaTensorMapDataType.BFloat16, 64, 72, 144, 64, 64, CudaTensorMapSwizzle.Bytes64));
    }

    [Fact]
    public void Unsupported_and_undersized_operands_are_refused_by_name()
    {
        using var device = OpenHopperOrEmulator();
        using var small = device.Allocate<float>(64);
        using var gemm = new CudaGemmSm90(device);
        var e = Assert.Throws<CudaException>(() => gemm.Forward(small, small, null, small, 2, 12, 2));
        Assert.Contains("k must be a multiple of 8 (not 12)", e.Message);
        var s = Assert.Throws<CudaException>(() => gemm.Forward(small, small, null, small, 16, 16, 16));
        Assert.Contains("x holds 256 bytes, the sizes need 512", s.Message);
    }
}
