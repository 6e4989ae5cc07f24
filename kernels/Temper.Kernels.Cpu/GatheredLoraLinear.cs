// Gathered LoRA linear (BGMV/SGMV, as Punica and S-LoRA): each row n of x[N,K] takes adapter
// i = rowAdapter[n] from the stacks A [L,r,K], B [L,M,r] and y[n] += scales[i] (x[n] A[i]^T) B[i]^T;
// rows with i < 0 are untouched. Rows are grouped by adapter (a segment per adapter): a segment whose
// rows are contiguous (one sequence's prefill chunk, or a batch on one adapter) runs in place on its
// slices of x and y; a scattered segment gathers its rows into a block and scatters the result.
// Each segment is two small products through Linear (GEMM/GEMV): xa = x A^T, scaled, then y += xa B^T.
// Segments write disjoint rows of y, so with at least as many segments as threads they run in
// parallel, one thread each (a batch mixing adapters then costs about what one adapter does, without
// thousands of tiny multi-threaded calls); fewer segments run one after another, each multi-threaded.
using System.Buffers;

namespace Temper.Kernels.Cpu;

public static unsafe class GatheredLoraLinear
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter,
        Span<float> y, int k, int m, int r, int threads)
    {
        int n = rowAdapter.Length, adapters = scales.Length;
        if (x.Length != (long)n * k || y.Length != (long)n * m || a.Length != (long)adapters * r * k || b.Length != (long)adapters * m * r)
            throw new ArgumentException($"GatheredLoraLinear: x {x.Length}, y {y.Length}, A {a.Length}, B {b.Length} values do not fit {n} rows, K {k}, M {m}, r {r}, {adapters} adapters");
        for (int i = 0; i < n; i++)
            if (rowAdapter[i] >= adapters) throw new ArgumentException($"GatheredLoraLinear: row {i} names adapter {rowAdapter[i]} of {adapters}");
        var rows = new List<int>?[adapters];
        for (int i = 0; i < n; i++)
            if (rowAdapter[i] >= 0) (rows[rowAdapter[i]] ??= []).Add(i);
        var scaleOf = scales.ToArray();
        var segments = Enumerable.Range(0, adapters).Where(ad => rows[ad] != null).Select(ad => (Adapter: ad, Rows: rows[ad]!, Scale: scaleOf[ad])).ToArray();
        if (segments.Length == 0) return;
        fixed (float* px = x) fixed (float* pa = a) fixed (float* pb = b) fixed (float* py = y)
        {
            nint ix = (nint)px, ia = (nint)pa, ib = (nint)pb, iy = (nint)py;
            long xLen = x.Length, aLen = a.Length, bLen = b.Length, yLen = y.Length;
            bool perSegment = segments.Length >= threads;
            long work = (long)n * r * (k + m);
            StaticPartition.For(segments.Length, perSegment ? StaticPartition.Parts(threads, segments.Length, work, 1 << 16) : 1, (s0, s1) =>
            {
                var xs = new ReadOnlySpan<float>((float*)ix, (int)xLen);
                var as_ = new ReadOnlySpan<float>((float*)ia, (int)aLen);
                var bs = new ReadOnlySpan<float>((float*)ib, (int)bLen);
                var ys = new Span<float>((float*)iy, (int)yLen);
                for (int s = s0; s < s1; s++)
                    Segment(xs, as_.Slice(segments[s].Adapter * r * k, r * k), bs.Slice(segments[s].Adapter * m * r, m * r), segments[s].Scale, segments[s].Rows, ys, k, m, r,
                        perSegment ? 1 : threads);
            });
        }
    }

    private static void Segment(ReadOnlySpan<float> x, ReadOnlySpan<float> a, ReadOnlySpan<float> b, float scale, List<int> seg, Span<float> y, int k, int m, int r, int threads)
    {
        int cnt = seg.Count, first = seg[0];
        var pool = ArrayPool<float>.Shared;
        var xaBuf = pool.Rent(cnt * r);
        var xa = xaBuf.AsSpan(0, cnt * r);
        if (seg[^1] - first == cnt - 1)
        {
            Linear.Forward(x.Slice(first * k, cnt * k), a, default, xa, cnt, k, r, accumulate: false, threads);
            Scale.Apply(xa, scale);
            Linear.Forward(xa, b, default, y.Slice(first * m, cnt * m), cnt, r, m, accumulate: true, threads);
            pool.Return(xaBuf);
            return;
        }
        // Scattered rows: gather, multiply, scatter (pooled buffers: these run thousands of times a step).
        var xsBuf = pool.Rent(cnt * k);
        var ysBuf = pool.Rent(cnt * m);
        var xs = xsBuf.AsSpan(0, cnt * k);
        var ys = ysBuf.AsSpan(0, cnt * m);
        for (int j = 0; j < cnt; j++) x.Slice(seg[j] * k, k).CopyTo(xs.Slice(j * k));
        Linear.Forward(xs, a, default, xa, cnt, k, r, accumulate: false, threads);
        Scale.Apply(xa, scale);
        Linear.Forward(xa, b, default, ys, cnt, r, m, accumulate: false, threads);
        for (int j = 0; j < cnt; j++) Add.Forward(ys.Slice(j * m, m), y.Slice(seg[j] * m, m), y.Slice(seg[j] * m, m));
        pool.Return(xsBuf);
        pool.Return(ysBuf);
        pool.Return(xaBuf);
    }
}
