// CudaGemv (cuda/gemv_bf16.cu, decode's matrix-vector products) against a float64 evaluation with the bf16
// weights widened exactly: Forward y[rows,n] = residual + bias + xn W^T with xn = x or RMSNorm(x), at 1, 3 and 8
// rows (1, 2 and 4 outputs per warp), widths that end in a partial warp group and block, depths that are
// multiples of 8 but not of 256, the residual aliasing y; SwiGlu with gate values that saturate silu both
// ways; the argmax slots (a planted exact tie goes to the smaller index, NaN logits never win) and their
// host encoding; refusals by name. Outputs are poisoned with NaN, with a guard element past the end that must
// stay NaN. A capture of Forward and SwiGlu into a CUDA graph replays to the same bits (CudaGemvGraphChecks).
// Runs on a GPU and on the CUDA emulator.
using Temper.Core;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaGemvChecks
{
    internal static float[] Floats(int n, int seed, float lo = -1f, float hi = 1f)
    {
        var r = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = lo + (float)r.NextDouble() * (hi - lo);
        return v;
    }

    internal static ushort[] Bf16(float[] values)
    {
        var bits = new ushort[values.Length];
        BFloat16.FromSingle(values, bits);
        return bits;
    }

    private static float[] Poison(int n) => Enumerable.Repeat(float.NaN, n).ToArray();

    /// <summary>xn[m,k] in f64: x, or x g / sqrt(mean(x^2) + eps) row by row.</summary>
    internal static double[] Normalised(float[] x, float[]? g, float eps, int rows, int k)
    {
        var xn = new double[rows * k];
        for (int m = 0; m < rows; m++)
        {
            double ss = 0;
            for (int q = 0; q < k; q++) ss += (double)x[m * k + q] * x[m * k + q];
            double r = g == null ? 1 : 1 / Math.Sqrt(ss / k + eps);
            for (int q = 0; q < k; q++) xn[m * k + q] = x[m * k + q] * (g == null ? 1 : g[q] * r);
        }
        return xn;
    }

    /// <summary>sum_k W[j,k] xn[m,k] and sum_k |W[j,k] xn[m,k]| (the scale of its rounding error).</summary>
    internal static (double Dot, double Magnitude) Dot(ushort[] w, double[] xn, int m, int j, int k)
    {
        double s = 0, a = 0;
        for (int q = 0; q < k; q++)
        {
            double p = BFloat16.ToSingle(w[j * k + q]) * xn[m * k + q];
            s += p;
            a += Math.Abs(p);
        }
        return (s, a);
    }

    private static void Near(float got, double expected, double magnitude, string what)
    {
        if (!(Math.Abs(got - expected) <= 1e-5 * magnitude + 1e-30)) Assert.Fail($"{what}: {got}, expected {expected} (scale {magnitude:G3})");
    }

    [Theory]
    [InlineData(1, 37, 264, false, false, false, false)]  // a partial 256-deep step, 37 = 9 blocks of 4 outputs + 1
    [InlineData(1, 300, 1024, true, true, false, false)] // the norm folded in, four full steps
    [InlineData(3, 101, 520, true, false, true, true)]   // 2 outputs per warp, the residual is y itself
    [InlineData(8, 67, 1000, true, true, true, false)]   // 4 outputs per warp, 16 per block: 67 ends in a partial group
    [InlineData(8, 130, 8, false, false, true, true)]    // one 16-byte chunk per row: one lane of 32 works
    [InlineData(5, 23, 2056, false, true, false, false)] // four 512-deep rounds of loads (2 steps of 4 rows) and 8 more
    [InlineData(2, 19, 2312, true, false, false, false)] // a 2048-deep round (8 steps of 1 row) and a partial one
    [InlineData(4, 33, 136, true, true, true, true)]      // the other row counts: 2 and 4 outputs per warp,
    [InlineData(6, 29, 72, false, false, true, false)]    // 8 to 28 of 32 sums per warp in use
    [InlineData(7, 31, 520, true, false, false, false)]
    // The persistent kernel (one row, the grid capped: every warp loops over several groups, copies running on across them)
    [InlineData(1, 37, 264, false, false, false, false, true)]
    [InlineData(1, 300, 1024, true, true, true, true, true)]
    [InlineData(1, 70, 2312, true, false, false, false, true)] // two rounds a group, the second partial
    public void Forward_matches_an_f64_evaluation(int rows, int n, int k, bool norm, bool bias, bool residual, bool residualIsY, bool persistent = false)
    {
        using var device = Gpu.OpenForKernels();
        using var gemv = new CudaGemv(device) { Persistent = persistent };
        var x = Floats(rows * k, 1);
        var w = Bf16(Floats(n * k, 2));
        float[]? g = norm ? Floats(k, 3, 0.5f, 1.5f) : null;
        var b = Floats(n, 4);
        var res = Floats(rows * n, 5, -4f, 4f);
        const float eps = 0.1f; // large enough to matter beside mean(x^2) = 1/3
        var xn = Normalised(x, g, eps, rows, k);

        using var dx = device.Upload<float>(x);
        using var dw = device.Upload<ushort>(w);
        using var dg = device.Upload<float>(g ?? [0f]);
        using var db = device.Upload<float>(b);
        using var dres = device.Upload<float>(res);
        using var yBuf = device.Upload<float>(residualIsY ? [.. res, float.NaN] : Poison(rows * n + 1));
        var y = CudaDeviceMemory.Borrow(yBuf.Pointer, 4L * rows * n, device.Context);
        gemv.Forward(dw, dx, y, rows, n, k, norm ? dg : null, eps, bias ? db : null, residual ? (residualIsY ? y : dres) : null);
        var got = device.Download<float>(yBuf);

        for (int m = 0; m < rows; m++)
            for (int j = 0; j < n; j++)
            {
                var (dot, magnitude) = Dot(w, xn, m, j, k);
                double expected = dot + (bias ? b[j] : 0) + (residual ? res[m * n + j] : 0);
                Near(got[m * n + j], expected, magnitude + Math.Abs(expected), $"y[{m},{j}]");
            }
        Assert.True(float.IsNaN(got[rows * n]), "Forward wrote past y");
    }

    [Theory]
    [InlineData(1, 45, 264, false, true)]
    [InlineData(3, 50, 520, true, false)] // 1 output (2 weight rows) per warp
    [InlineData(8, 37, 1000, true, true)] // 2 outputs (4 weight rows) per warp
    [InlineData(2, 9, 72, false, false)]
    [InlineData(6, 21, 136, true, true)]
    [InlineData(1, 45, 264, false, true, true)] // the persistent kernel
    [InlineData(1, 70, 1000, true, false, true)]
    public void SwiGlu_matches_an_f64_evaluation(int rows, int n, int k, bool norm, bool biases, bool persistent = false)
    {
        using var device = Gpu.OpenForKernels();
        using var gemv = new CudaGemv(device) { Persistent = persistent };
        var x = Floats(rows * k, 11);
        var gate = Floats(n * k, 12);
        // Gate rows 0 and 1 of row 0 of x: +-8 sum |x| (about 4 k >> 88), so exp(-a) underflows to 0 (silu = a)
        // and overflows to infinity (silu = -0, not NaN).
        for (int q = 0; q < k; q++)
        {
            gate[q] = x[q] >= 0 ? 8f : -8f;
            gate[k + q] = -gate[q];
        }
        var wg = Bf16(gate);
        var wu = Bf16(Floats(n * k, 13));
        float[]? g = norm ? Floats(k, 14, 0.5f, 1.5f) : null;
        var bg = Floats(n, 15);
        var bu = Floats(n, 16);
        const float eps = 0.05f;
        var xn = Normalised(x, g, eps, rows, k);

        using var dx = device.Upload<float>(x);
        using var dwg = device.Upload<ushort>(wg);
        using var dwu = device.Upload<ushort>(wu);
        using var dg = device.Upload<float>(g ?? [0f]);
        using var dbg = device.Upload<float>(bg);
        using var dbu = device.Upload<float>(bu);
        using var yBuf = device.Upload<float>(Poison(rows * n + 1));
        var y = CudaDeviceMemory.Borrow(yBuf.Pointer, 4L * rows * n, device.Context);
        gemv.SwiGlu(dwg, dwu, dx, y, rows, n, k, norm ? dg : null, eps, biases ? dbg : null, biases ? dbu : null);
        var got = device.Download<float>(yBuf);

        for (int m = 0; m < rows; m++)
            for (int j = 0; j < n; j++)
            {
                var (ga, gm) = Dot(wg, xn, m, j, k);
                var (ub, um) = Dot(wu, xn, m, j, k);
                double a = ga + (biases ? bg[j] : 0), bv = ub + (biases ? bu[j] : 0), sig = 1 / (1 + Math.Exp(-a));
                double expected = a * sig * bv;
                // The rounding of a and b, carried through silu(a) b (silu' is at most 1.1).
                double scale = 1.1 * (gm + Math.Abs(a)) * Math.Abs(bv) + Math.Abs(a * sig) * (um + Math.Abs(bv));
                Near(got[m * n + j], expected, scale, $"y[{m},{j}]");
            }
        double a0 = Dot(wg, xn, 0, 0, k).Dot, a1 = Dot(wg, xn, 0, 1, k).Dot;
        Assert.True(a0 > 100 && a1 < -100, $"the planted gates are {a0} and {a1}, not beyond exp's range");
        Assert.True(got[1] == 0, $"silu({a1}) times b gave {got[1]}, not 0");
        Assert.True(float.IsNaN(got[rows * n]), "SwiGlu wrote past y");
    }

    /// <summary>The argmax slots against the outputs written beside them (the slot is exactly the largest y, the
    /// smallest index among equals) and against f64: W row `copy` duplicates the f64 winner of row 0 at a
    /// smaller index, an exact tie the smaller index must win, and W row `nan` holds a NaN, a NaN logit in
    /// every row that must not win. Up to 300 outputs: up to 75 blocks combine their slots with atomicMax.</summary>
    [Theory]
    [InlineData(1, 300, 264, true)]
    [InlineData(3, 300, 520, false)]
    [InlineData(8, 70, 256, true)]
    [InlineData(1, 300, 264, true, true)] // the persistent kernel: a lane's slot over several outputs
    public void Argmax_slots_hold_each_rows_largest_output_and_its_smallest_index(int rows, int n, int k, bool norm, bool persistent = false)
    {
        using var device = Gpu.OpenForKernels();
        using var gemv = new CudaGemv(device) { Persistent = persistent };
        var x = Floats(rows * k, 21);
        var w = Bf16(Floats(n * k, 22));
        var b = Floats(n, 23, -0.5f, 0.5f);
        float[]? g = norm ? Floats(k, 24, 0.5f, 1.5f) : null;
        const float eps = 1e-5f;
        var xn = Normalised(x, g, eps, rows, k);
        double Logit(int m, int j) => Dot(w, xn, m, j, k).Dot + b[j];

        int winner = Enumerable.Range(0, n).MaxBy(j => Logit(0, j));
        int copy = winner > 0 ? winner / 2 : n - 1; // with winner 0 the copy sits above it and must lose
        Array.Copy(w, winner * k, w, copy * k, k);
        b[copy] = b[winner];
        int nan = copy == 7 || winner == 7 ? 8 : 7;
        w[nan * k + 3] = 0x7FC0; // a bf16 NaN
        int tie = Math.Min(winner, copy);

        using var dx = device.Upload<float>(x);
        using var dw = device.Upload<ushort>(w);
        using var db = device.Upload<float>(b);
        using var dg = device.Upload<float>(g ?? [0f]);
        using var dy = device.Upload<float>(Poison(rows * n));
        using var slots = device.Upload<ulong>(new ulong[rows]);
        gemv.Forward(dw, dx, dy, rows, n, k, norm ? dg : null, eps, db, argmax: slots);
        var y = device.Download<float>(dy);
        var got = device.Download<ulong>(slots);

        for (int m = 0; m < rows; m++)
        {
            Assert.True(float.IsNaN(y[m * n + nan]), $"row {m}: the NaN weight row gave {y[m * n + nan]}");
            int best = -1;
            for (int j = 0; j < n; j++)
                if (!float.IsNaN(y[m * n + j]) && (best < 0 || y[m * n + j] > y[m * n + best])) best = j;
            Assert.Equal(CudaGemv.ArgmaxPack(y[m * n + best], best), got[m]);
            int index = CudaGemv.ArgmaxIndex(got[m]);
            var logits = Enumerable.Range(0, n).Where(j => j != nan).Select(j => Logit(m, j)).ToArray();
            double max = logits.Max(), tol = 1e-5 * Enumerable.Range(0, k).Sum(q => Math.Abs(xn[m * k + q]));
            Assert.True(Logit(m, index) >= max - tol, $"row {m}: index {index} has logit {Logit(m, index)}, the largest is {max}");
        }
        Assert.Equal(tie, CudaGemv.ArgmaxIndex(got[0]));
    }

    [Fact]
    public void Argmax_slots_order_values_then_smaller_indices_and_round_trip()
    {
        float[] ascending = [float.NegativeInfinity, -3e38f, -1f, -float.Epsilon, -0f, 0f, float.Epsilon, 1e-3f, 1f, 3e38f, float.PositiveInfinity];
        for (int i = 0; i + 1 < ascending.Length; i++)
            Assert.True(CudaGemv.ArgmaxPack(ascending[i], 5) < CudaGemv.ArgmaxPack(ascending[i + 1], 5), $"{ascending[i]} does not sort below {ascending[i + 1]}");
        float[] nans = [.. new uint[] { 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF }.Select(BitConverter.UInt32BitsToSingle)];
        foreach (float nan in nans)
            Assert.True(CudaGemv.ArgmaxPack(nan, 0) < CudaGemv.ArgmaxPack(float.NegativeInfinity, int.MaxValue), $"NaN 0x{BitConverter.SingleToUInt32Bits(nan):X8} sorts above -inf");
        Assert.True(CudaGemv.ArgmaxPack(2f, 3) > CudaGemv.ArgmaxPack(2f, 4), "a tie does not go to the smaller index");
        foreach (int index in new[] { 0, 1, 127, 128255, int.MaxValue })
            foreach (float v in ascending.Concat(nans))
                Assert.Equal(index, CudaGemv.ArgmaxIndex(CudaGemv.ArgmaxPack(v, index)));
        Assert.Equal(-1, CudaGemv.ArgmaxIndex(0)); // a slot nothing was written to
    }

    [Fact]
    public void Shapes_and_buffers_it_cannot_take_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var gemv = new CudaGemv(device);
        using var big = device.Allocate<float>(4096);
        using var small = device.Allocate<float>(8);
        string Refusal(Action a) => Assert.Throws<CudaException>(a).Message;

        Assert.Contains("k must be a positive multiple of 8 (16-byte weight loads), not 1001", Refusal(() => gemv.Forward(big, big, small, 1, 2, 1001)));
        Assert.Contains("rows must be 1 to 8, not 0", Refusal(() => gemv.Forward(big, big, small, 0, 2, 64)));
        Assert.Contains("rows must be 1 to 8, not 9", Refusal(() => gemv.SwiGlu(big, big, big, small, 9, 2, 64)));
        Assert.Contains("n must be >= 1, not 0", Refusal(() => gemv.Forward(big, big, small, 1, 0, 64)));
        Assert.Equal("CudaGemv.Forward: y holds 32 bytes, the sizes need 64", Refusal(() => gemv.Forward(big, big, small, 2, 8, 64)));
        Assert.Contains("w holds 32 bytes, the sizes need 256", Refusal(() => gemv.Forward(small, big, small, 1, 2, 64)));
        Assert.Contains("wUp holds 32 bytes", Refusal(() => gemv.SwiGlu(big, small, big, small, 1, 2, 64)));
        Assert.Contains("x holds 32 bytes, the sizes need 512", Refusal(() => gemv.Forward(big, small, big, 2, 2, 64)));
        Assert.Contains("normWeight holds 32 bytes", Refusal(() => gemv.Forward(big, big, small, 1, 2, 64, normWeight: small)));
        using var bigger = device.Allocate<float>(4096);
        Assert.Contains("residual holds 32 bytes, the sizes need 64", Refusal(() => gemv.Forward(big, bigger, big, 2, 8, 64, residual: small)));
        Assert.Contains("argmax holds 32 bytes, the sizes need 64", Refusal(() => gemv.Forward(big, big, small, 8, 1, 64, argmax: small)));
        var shifted = CudaDeviceMemory.Borrow(big.Pointer + 8, 1024, device.Context);
        Assert.Contains("w must be 16-byte aligned", Refusal(() => gemv.Forward(shifted, bigger, small, 1, 2, 64)));
        Assert.Contains("x and y overlap", Refusal(() => gemv.Forward(bigger, big, shifted, 1, 2, 64)));
        Assert.DoesNotContain('\n', Refusal(() => gemv.Forward(big, big, small, 1, 2, 12)));
    }
}

/// <summary>Forward (with its argmax) and SwiGlu captured into a CUDA graph: the captured launches neither
/// allocate nor synchronise, and a replay gives the bits of the direct launches. In the graph collection, away
/// from other tests' GPU work (see CudaGraphChecks).</summary>
[Trait("Kernels", "cuda")]
[Collection(typeof(CudaGraphCollection))]
public class CudaGemvGraphChecks
{
    [Fact]
    public void A_captured_forward_and_swiglu_replay_the_direct_launches_bits()
    {
        const int rows = 2, n = 40, k = 64, f = 24;
        using var device = Gpu.OpenForKernels();
        using var gemv = new CudaGemv(device);
        using var x = device.Upload<float>(CudaGemvChecks.Floats(rows * k, 31));
        using var g = device.Upload<float>(CudaGemvChecks.Floats(k, 32));
        using var w = device.Upload<ushort>(CudaGemvChecks.Bf16(CudaGemvChecks.Floats(n * k, 33)));
        using var wg = device.Upload<ushort>(CudaGemvChecks.Bf16(CudaGemvChecks.Floats(f * k, 34)));
        using var wu = device.Upload<ushort>(CudaGemvChecks.Bf16(CudaGemvChecks.Floats(f * k, 35)));
        using var y = device.Allocate<float>(rows * n);
        using var h = device.Allocate<float>(rows * f);
        using var slots = device.Upload<ulong>(new ulong[rows]);
        void Step()
        {
            gemv.Forward(w, x, y, rows, n, k, g, 1e-5f, argmax: slots);
            gemv.SwiGlu(wg, wu, x, h, rows, f, k, g, 1e-5f);
        }
        Step();
        var expected = (device.Download<float>(y), device.Download<float>(h), device.Download<ulong>(slots));

        device.CopyToDevice<float>(Enumerable.Repeat(float.NaN, rows * n).ToArray(), y);
        device.CopyToDevice<float>(Enumerable.Repeat(float.NaN, rows * f).ToArray(), h);
        device.CopyToDevice<ulong>(new ulong[rows], slots);
        device.Synchronize();
        using var graph = CudaGraph.Capture(device.Stream, Step);
        Assert.Equal(2, graph.NodeCount);
        graph.Launch(device.Stream);
        device.Synchronize();
        Assert.Equal(expected.Item1, device.Download<float>(y));
        Assert.Equal(expected.Item2, device.Download<float>(h));
        Assert.Equal(expected.Item3, device.Download<ulong>(slots));
    }
}
