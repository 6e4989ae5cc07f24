// CudaAttention.Forward (cuda/attention_bf16.cu on tensor cores, and cuda/attention_bf16_mma.cu's kernels) against a float64 evaluation of causal GQA
// attention written here, with q, k and v rounded to bf16 as the kernel rounds them: out[B,Tq,H,D] and
// lse[B,H,Tq] for D = 64 and 128, GQA, Tq not a multiple of the 64-query tile, a query offset with
// KvLength < S (chunked prefill), a key mask that hides every key of some queries (zeros, lse -inf),
// packed segments (whole key tiles skipped), and inputs not 16-byte aligned (element loads). out and lse
// are poisoned (NaN) first, so an unwritten element fails. Runs on a GPU or on the CUDA emulator (tiny
// shapes: the emulator multiplies each WMMA tile once per lane).
using Temper.Core;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaAttentionChecks
{
    public enum Keys { All, Mask, Segments, MaskAndSegments }

    internal static float[] Bf16Floats(int n, int seed)
    {
        var r = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = BFloat16.ToSingle(BFloat16.FromSingle((float)(r.NextDouble() * 2 - 1)));
        return v;
    }

    // Every batch's keys 3, 10, 11 hidden; the last batch also hides its first 20 keys (left padding), so its
    // queries at positions < 20 see no key at all.
    internal static int[] Mask(int b, int kvLength)
    {
        var mask = new int[b * kvLength];
        for (int bb = 0; bb < b; bb++)
            for (int j = 0; j < kvLength; j++)
                mask[bb * kvLength + j] = j is 3 or 10 or 11 || (bb == b - 1 && j < 20) ? 0 : 1;
        return mask;
    }

    // Packed rows: segment 0 up to 70, 1 up to 100, then 2 (the query tile from 128 skips key tile 0).
    internal static int[] Segments(int b, int kvLength)
    {
        var seg = new int[b * kvLength];
        for (int bb = 0; bb < b; bb++)
            for (int j = 0; j < kvLength; j++) seg[bb * kvLength + j] = j < 70 ? 0 : j < 100 ? 1 : 2;
        return seg;
    }

    /// <summary>Query (b, i, h)'s softmax over the keys in float64 into p[KvLength] (0 where a key is hidden), and
    /// its lse; false (p all 0) when it sees no key. The test's own statement of the visibility rules.</summary>
    internal static bool Probabilities(float[] q, float[] k, int[]? mask, int[]? seg, CudaAttention.Shape a, int b, int i, int h, double[] p, out double lse)
    {
        int kh = h / (a.H / a.Hkv), pos = a.QueryOffset + i, qo = ((b * a.Tq + i) * a.H + h) * a.D;
        double max = double.NegativeInfinity;
        for (int j = 0; j < a.KvLength; j++)
        {
            p[j] = double.NegativeInfinity;
            bool visible = j <= pos && (mask == null || mask[b * a.KvLength + j] != 0)
                && (seg == null || seg[b * a.KvLength + j] == seg[b * a.KvLength + pos]);
            if (!visible) continue;
            double dot = 0;
            int ko = ((b * a.S + j) * a.Hkv + kh) * a.D;
            for (int t = 0; t < a.D; t++) dot += (double)q[qo + t] * k[ko + t];
            p[j] = a.Scale * dot;
            max = Math.Max(max, p[j]);
        }
        if (double.IsNegativeInfinity(max))
        {
            Array.Clear(p, 0, a.KvLength);
            lse = double.NegativeInfinity;
            return false;
        }
        double sum = 0;
        for (int j = 0; j < a.KvLength; j++) sum += p[j] = Math.Exp(p[j] - max); // exp(-inf) = 0
        for (int j = 0; j < a.KvLength; j++) p[j] /= sum;
        lse = max + Math.Log(sum);
        return true;
    }

    /// <summary>The float64 evaluation: out and lse (-inf and zeros for a query that sees no key).</summary>
    private static (double[] Out, double[] Lse) Evaluate(float[] q, float[] k, float[] v, int[]? mask, int[]? seg, CudaAttention.Shape a)
    {
        var output = new double[a.B * a.Tq * a.H * a.D];
        var lse = new double[a.B * a.H * a.Tq];
        var p = new double[a.KvLength];
        for (int b = 0; b < a.B; b++)
            for (int i = 0; i < a.Tq; i++)
                for (int h = 0; h < a.H; h++)
                {
                    int kh = h / (a.H / a.Hkv), qo = ((b * a.Tq + i) * a.H + h) * a.D;
                    if (!Probabilities(q, k, mask, seg, a, b, i, h, p, out lse[(b * a.H + h) * a.Tq + i])) continue;
                    for (int j = 0; j < a.KvLength; j++)
                    {
                        if (p[j] == 0) continue;
                        int vo = ((b * a.S + j) * a.Hkv + kh) * a.D;
                        for (int t = 0; t < a.D; t++) output[qo + t] += p[j] * v[vo + t];
                    }
                }
        return (output, lse);
    }

    // out within NMSE 1e-5 of the float64 evaluation: the kernel rounds P to bf16 for P V (2^-9 relative
    // per weight: NMSE 0.9e-6 to 1.6e-6 at these shapes on the emulator); a wrong tile or index gives ~1e-1
    // and more, and leaving out the rescale of O when a row's max grows gave 5e-4 to 9e-2 (attention_bf16_mma.cu
    // on the emulator, planted: a swapped P fragment gave 0.6 to 1.3, no alpha rescale 2e-3 to 0.35, no barrier
    // before a K/V buffer is refilled 6e-3 to 0.96, Q not negated for a negative scale 0.75). A query that sees
    // nothing must give exact zeros and lse -inf; elsewhere lse (f32 softmax sums, no bf16 P) within 1e-3.
    private static void Close(float[] output, float[] lse, (double[] Out, double[] Lse) expected)
    {
        double err = 0, norm = 0;
        for (int i = 0; i < output.Length; i++)
        {
            Assert.False(float.IsNaN(output[i]), $"out[{i}] was not written");
            err += (output[i] - expected.Out[i]) * (output[i] - expected.Out[i]);
            norm += expected.Out[i] * expected.Out[i];
        }
        Assert.True(err / norm <= 1e-5, $"out: normalised MSE {err / norm:E2}");
        for (int i = 0; i < lse.Length; i++)
        {
            Assert.False(float.IsNaN(lse[i]), $"lse[{i}] was not written");
            if (double.IsNegativeInfinity(expected.Lse[i])) Assert.True(float.IsNegativeInfinity(lse[i]), $"lse[{i}] is {lse[i]}, not -inf (a query that sees no key)");
            else Assert.True(Math.Abs(lse[i] - expected.Lse[i]) <= 1e-3, $"lse[{i}] is {lse[i]}, expected {expected.Lse[i]:F5}");
        }
    }

    // (d, b, tq, h, s, hkv, kvLength, queryOffset, keys, unaligned), each run by every forward kernel.
    private static readonly object[][] ForwardCases =
    [
        [64, 1, 100, 4, 100, 2, 100, 0, Keys.All, false], // GQA, Tq = 64 + 36
        [128, 1, 70, 4, 70, 2, 70, 0, Keys.All, false],
        [64, 2, 30, 2, 128, 1, 100, 70, Keys.All, false], // queries at 70..99 of a 128-row cache filled to 100
        [64, 2, 30, 2, 128, 1, 100, 70, Keys.All, true], // the same from addresses 4 bytes past 16-byte alignment: element loads
        [64, 2, 72, 2, 72, 2, 72, 0, Keys.Mask, false], // batch 1's first 20 queries see no key
        [64, 1, 130, 2, 130, 1, 130, 0, Keys.Segments, false],
        [128, 2, 50, 2, 136, 2, 130, 80, Keys.MaskAndSegments, false],
        [64, 1, 300, 2, 300, 1, 300, 0, Keys.All, false], // past one 256-query block of the wide kernel: two blocks, the second partial
    ];

    /// <summary>ForwardCases for attention_bf16.cu (Wmma) and attention_bf16_mma.cu (Mma; MmaTwoRowTiles and MmaTwoRowTilesWide: D = 64 only).</summary>
    public static IEnumerable<object[]> ForwardCasesOfEveryKernel =>
        from c in ForwardCases
        from kernel in Enum.GetValues<CudaAttention.ForwardKernel>()
        where kernel is not (CudaAttention.ForwardKernel.MmaTwoRowTiles or CudaAttention.ForwardKernel.MmaTwoRowTilesWide) || (int)c[0] == 64
        select (object[])[.. c, kernel];

    [Theory]
    [MemberData(nameof(ForwardCasesOfEveryKernel))]
    public void Forward_matches_a_float64_evaluation(int d, int b, int tq, int h, int s, int hkv, int kvLength, int queryOffset, Keys keys, bool unaligned, CudaAttention.ForwardKernel kernel)
        => CheckForward(new(b, tq, h, s, hkv, d, kvLength, queryOffset, 3f / MathF.Sqrt(d)), keys, unaligned, kernel);

    // A negative scale (attention_bf16_mma.cu negates Q as it stages it and takes the max of raw scores).
    [Theory]
    [InlineData(CudaAttention.ForwardKernel.Wmma)]
    [InlineData(CudaAttention.ForwardKernel.Mma)]
    [InlineData(CudaAttention.ForwardKernel.MmaTwoRowTiles)]
    [InlineData(CudaAttention.ForwardKernel.MmaTwoRowTilesWide)]
    public void Forward_with_a_negative_scale_matches_a_float64_evaluation(CudaAttention.ForwardKernel kernel)
        => CheckForward(new(1, 70, 2, 70, 1, 64, 70, 0, -2f / MathF.Sqrt(64)), Keys.All, false, kernel);

    private static void CheckForward(CudaAttention.Shape a, Keys keys, bool unaligned, CudaAttention.ForwardKernel kernel)
    {
        using var device = Gpu.OpenForKernels();
        var (q, k, v, mask, seg) = Inputs(a, keys);
        var (output, lse) = RunForward(device, a, q, k, v, mask, seg, unaligned, kernel, bf16Inputs: false);
        Close(output, lse, Evaluate(q, k, v, mask, seg, a));
    }

    // Seeded bf16-exact q, k, v and the keys' mask and segments for a shape.
    private static (float[] Q, float[] K, float[] V, int[]? Mask, int[]? Seg) Inputs(CudaAttention.Shape a, Keys keys)
    {
        int[]? mask = keys is Keys.Mask or Keys.MaskAndSegments ? Mask(a.B, a.KvLength) : null;
        int[]? seg = keys is Keys.Segments or Keys.MaskAndSegments ? Segments(a.B, a.KvLength) : null;
        return (Bf16Floats(a.B * a.Tq * a.H * a.D, 1), Bf16Floats(a.B * a.S * a.Hkv * a.D, 2), Bf16Floats(a.B * a.S * a.Hkv * a.D, 3), mask, seg);
    }

    // One forward into NaN-poisoned out and lse, q, k, v uploaded as f32 or as bf16 bits (one element past an aligned
    // address when unaligned: 4 or 2 bytes, so element loads).
    private static (float[] Out, float[] Lse) RunForward(CudaDevice device, CudaAttention.Shape a, float[] q, float[] k, float[] v, int[]? mask, int[]? seg,
        bool unaligned, CudaAttention.ForwardKernel kernel, bool bf16Inputs)
    {
        int skip = unaligned ? 1 : 0;
        var inputs = new List<IDisposable>();
        CudaDeviceMemory Upload(float[] x)
        {
            var all = bf16Inputs ? device.Upload<ushort>([.. new ushort[skip], .. x.Select(BFloat16.FromSingle)]) : device.Upload<float>([.. new float[skip], .. x]);
            inputs.Add(all);
            int size = bf16Inputs ? 2 : 4;
            var view = CudaDeviceMemory.Borrow(all.Pointer + (ulong)(size * skip), (long)size * x.Length, device.Context);
            inputs.Add(view);
            return view;
        }
        try
        {
            var (dq, dk, dv) = (Upload(q), Upload(k), Upload(v));
            using var dOut = device.Upload<float>(Enumerable.Repeat(float.NaN, q.Length).ToArray());
            using var dLse = device.Upload<float>(Enumerable.Repeat(float.NaN, a.B * a.H * a.Tq).ToArray());
            using var dMask = mask != null ? device.Upload<int>(mask) : null;
            using var dSeg = seg != null ? device.Upload<int>(seg) : null;
            using var attention = new CudaAttention(device) { Kernel = kernel };
            attention.Forward(dq, dk, dv, dOut, dLse, dMask, dSeg, a, bf16Inputs);
            device.Synchronize();
            return (device.Download<float>(dOut), device.Download<float>(dLse));
        }
        finally
        {
            foreach (var x in Enumerable.Reverse(inputs)) x.Dispose();
        }
    }

    /// <summary>ForwardCases with a positive and a negative scale, for the kernels with _bf16in builds (D = 128 takes Mma's).</summary>
    public static IEnumerable<object[]> Bf16InputCases =>
        from c in ForwardCases
        from scaleSign in new[] { 1f, -1f }
        from kernel in new[] { CudaAttention.ForwardKernel.MmaTwoRowTiles, CudaAttention.ForwardKernel.MmaTwoRowTilesWide }
        where (int)c[0] == 64 || kernel == CudaAttention.ForwardKernel.MmaTwoRowTiles
        select (object[])[.. c, scaleSign, kernel];

    // The _bf16in kernels stage bf16 q, k, v as they are, where the f32 kernels round them: for bf16-exact values the
    // same bits in shared memory, so the same out and lse, bit for bit. (Planted on the emulator: not negating the bf16 Q
    // for a negative scale, or swapping a slot's two halves, fails every case it reaches.)
    [Theory]
    [MemberData(nameof(Bf16InputCases))]
    public void Forward_from_bf16_inputs_gives_the_bits_of_f32_inputs(int d, int b, int tq, int h, int s, int hkv, int kvLength, int queryOffset, Keys keys, bool unaligned,
        float scaleSign, CudaAttention.ForwardKernel kernel)
    {
        using var device = Gpu.OpenForKernels();
        var a = new CudaAttention.Shape(b, tq, h, s, hkv, d, kvLength, queryOffset, scaleSign * 3f / MathF.Sqrt(d));
        var (q, k, v, mask, seg) = Inputs(a, keys);
        var (expectedOut, expectedLse) = RunForward(device, a, q, k, v, mask, seg, unaligned, kernel, bf16Inputs: false);
        var (output, lse) = RunForward(device, a, q, k, v, mask, seg, unaligned, kernel, bf16Inputs: true);
        Assert.Equal(expectedOut.Select(BitConverter.SingleToInt32Bits), output.Select(BitConverter.SingleToInt32Bits));
        Assert.Equal(expectedLse.Select(BitConverter.SingleToInt32Bits), lse.Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void Unsupported_shapes_and_small_buffers_are_refused_by_name()
    {
        using var device = Gpu.OpenForKernels();
        using var small = device.Allocate<float>(4);
        using var big = device.Allocate<float>(4096);
        using var attention = new CudaAttention(device);
        var d96 = Assert.Throws<CudaException>(() => attention.Forward(big, big, big, big, null, null, null, new(1, 1, 1, 1, 1, 96, 1, 0, 1f)));
        Assert.Contains("head dim 96 is not supported (64 or 128)", d96.Message);
        var k = Assert.Throws<CudaException>(() => attention.Forward(big, small, big, big, null, null, null, new(1, 8, 1, 8, 1, 64, 8, 0, 1f)));
        Assert.Contains("k holds 16 bytes, the sizes need 2048", k.Message);
        var seg = Assert.Throws<CudaException>(() => attention.Forward(big, big, big, big, null, null, big, new(1, 4, 1, 8, 1, 64, 8, 6, 1f)));
        Assert.Contains("QueryOffset 6 + Tq 4 > KvLength 8", seg.Message);
        using var bf16K = device.Allocate<ushort>(500); // 1000 bytes, under the 1024 of a bf16 [1,8,1,64]
        var kBf16 = Assert.Throws<CudaException>(() => attention.Forward(big, bf16K, big, big, null, null, null, new(1, 8, 1, 8, 1, 64, 8, 0, 1f), bf16Inputs: true));
        Assert.Contains("k holds 1000 bytes, the sizes need 1024", kBf16.Message); // bf16: 2 bytes an element
    }
}
