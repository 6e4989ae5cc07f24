// The argument checks of the serving ops, shared by every backend so that each refuses the same inputs
// with the same message ("<backend> <op>: ..."): shapes of the paged cache and its rows, block-table
// entries inside the cache, the gathered LoRA's stacked [L,r,K] / [L,M,r] factors and row adapters.
namespace Temper.Core;

public static class ServingShapes
{
    /// <summary>Checks a paged attention call; returns the block size.</summary>
    public static int PagedAttention(in PagedAttentionArgs a, string backend)
    {
        const string op = "PagedAttention";
        var (q, k) = (a.Q.Shape, a.KCache.Shape);
        Require(q.Rank == 3 && k.Rank == 4 && a.VCache.Shape == k && a.Output.Shape == q && k[3] == q[2] && k[2] > 0 && q[1] % k[2] == 0,
            backend, op, $"q {q}, k cache {k}, v cache {a.VCache.Shape}, output {a.Output.Shape}: need q,output [N,H,D], caches [Blocks,BlockSize,Hkv,D], H a multiple of Hkv");
        Require((a.KCache.DType == DType.F32 || a.KCache.DType == DType.BF16) && a.VCache.DType == a.KCache.DType,
            backend, op, $"k cache {a.KCache.DType}, v cache {a.VCache.DType}: need both f32 or both bf16");
        Require(a.RowSequence.Length == q[0] && a.RowKvLength.Length == q[0] && a.MaxBlocks > 0 && a.BlockTables.Length % a.MaxBlocks == 0,
            backend, op, $"{a.RowSequence.Length} row sequences, {a.RowKvLength.Length} lengths for {q[0]} rows; table of {a.BlockTables.Length} entries, {a.MaxBlocks} per sequence");
        int sequences = a.BlockTables.Length / a.MaxBlocks, blockSize = k[1];
        var tables = a.BlockTables.Span;
        for (int r = 0; r < q[0]; r++)
        {
            int s = a.RowSequence.Span[r], len = a.RowKvLength.Span[r];
            Require((uint)s < (uint)sequences && len >= 0 && len <= a.MaxBlocks * blockSize, backend, op, $"row {r} names sequence {s} of {sequences} with {len} keys");
            for (int b = 0; b < (len + blockSize - 1) / blockSize; b++)
                Require((uint)tables[s * a.MaxBlocks + b] < (uint)k[0], backend, op, $"sequence {s} block {b} is {tables[s * a.MaxBlocks + b]}, outside the cache's {k[0]} blocks");
        }
        return blockSize;
    }

    /// <summary>Checks a gathered LoRA call: x[N,K], A[L,r,K], B[L,M,r], y[N,M], rowAdapter[N] in -1..L-1, scales[L].</summary>
    public static (int Adapters, int Rank, int In, int Out) GatheredLora(Tensor x, Tensor loraA, Tensor loraB, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter, Tensor y, string backend)
    {
        const string op = "GatheredLoraLinear";
        Require(loraA.Shape.Rank == 3 && loraB.Shape.Rank == 3 && loraA.Shape[0] == loraB.Shape[0] && loraA.Shape[1] == loraB.Shape[2] && x.Shape.Rank >= 1 && x.Shape[-1] == loraA.Shape[2],
            backend, op, $"x {x.Shape}, A {loraA.Shape}, B {loraB.Shape}: need A [L,r,K], B [L,M,r]");
        int adapters = loraA.Shape[0], r = loraA.Shape[1], k = loraA.Shape[2], m = loraB.Shape[1];
        Require(y.Shape == x.Shape.WithLast(m) && rowAdapter.Length == x.Shape.Rows && scales.Length == adapters,
            backend, op, $"y {y.Shape} must be {x.Shape.WithLast(m)}, {rowAdapter.Length} row adapters for {x.Shape.Rows} rows, {scales.Length} scales for {adapters} adapters");
        foreach (int i in rowAdapter) Require(i < adapters, backend, op, $"a row names adapter {i} of {adapters}");
        return (adapters, r, k, m);
    }

    private static void Require(bool ok, string backend, string op, string detail)
    {
        if (!ok) throw new ArgumentException($"{backend} {op}: {detail}");
    }

    private static void Require(bool ok, string backend, string op, [System.Runtime.CompilerServices.InterpolatedStringHandlerArgument(nameof(ok))] ref CheckMessage detail)
    {
        if (!ok) throw new ArgumentException($"{backend} {op}: {detail.ToStringAndClear()}");
    }
}
