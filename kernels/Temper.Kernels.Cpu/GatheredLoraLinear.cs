// Gathered LoRA linear (BGMV/SGMV, as Punica and S-LoRA): each row n of x[N,K] takes adapter
// i = rowAdapter[n] from the stacks A [L,r,K], B [L,M,r] and y[n] += scales[i] (x[n] A[i]^T) B[i]^T;
// rows with i < 0 are untouched. Rows are grouped by adapter (a segment per adapter): a segment whose
// rows are contiguous (one sequence's prefill chunk, or a batch on one adapter) runs in place on its
// slices of x and y; a scattered segment gathers its rows into a block and scatters the result.
// Each segment is two small products through Linear (GEMM/GEMV): xa = x A^T, scaled, then y += xa B^T,
// so a batch mixing adapters costs about what one adapter does.
namespace Temper.Kernels.Cpu;

public static class GatheredLoraLinear
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
        for (int ad = 0; ad < adapters; ad++)
        {
            if (rows[ad] is not { } seg) continue;
            int cnt = seg.Count, first = seg[0];
            var aw = a.Slice(ad * r * k, r * k);
            var bw = b.Slice(ad * m * r, m * r);
            var xa = new float[cnt * r];
            if (seg[^1] - first == cnt - 1)
            {
                Linear.Forward(x.Slice(first * k, cnt * k), aw, default, xa, cnt, k, r, accumulate: false, threads);
                Scale.Apply(xa, scales[ad]);
                Linear.Forward(xa, bw, default, y.Slice(first * m, cnt * m), cnt, r, m, accumulate: true, threads);
                continue;
            }
            var xs = new float[cnt * k];
            for (int j = 0; j < cnt; j++) x.Slice(seg[j] * k, k).CopyTo(xs.AsSpan(j * k));
            Linear.Forward(xs, aw, default, xa, cnt, k, r, accumulate: false, threads);
            Scale.Apply(xa, scales[ad]);
            var ys = new float[cnt * m];
            Linear.Forward(xa, bw, default, ys, cnt, r, m, accumulate: false, threads);
            for (int j = 0; j < cnt; j++) Add.Forward(ys.AsSpan(j * m, m), y.Slice(seg[j] * m, m), y.Slice(seg[j] * m, m));
        }
    }
}
