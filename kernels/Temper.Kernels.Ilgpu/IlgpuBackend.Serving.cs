// The ILGPU backend's serving ops: paged attention over a block-table KV cache and the gathered
// (per-row adapter) LoRA linear. Block tables, row indices and scales go up through the arena.
using Temper.Core;

namespace Temper.Kernels.Ilgpu;

public sealed partial class IlgpuBackend
{
    public void PagedAttention(in PagedAttentionArgs a)
    {
        const string op = "PagedAttention";
        F32(op, a.Q, a.KCache, a.VCache, a.Output);
        var (q, k) = (a.Q.Shape, a.KCache.Shape);
        Require(q.Rank == 3 && k.Rank == 4 && a.VCache.Shape == k && a.Output.Shape == q && k[3] == q[2] && k[2] > 0 && q[1] % k[2] == 0,
            op, $"q {q}, k cache {k}, v cache {a.VCache.Shape}, output {a.Output.Shape}: need q,output [N,H,D], caches [Blocks,BlockSize,Hkv,D], H a multiple of Hkv");
        Require(a.RowSequence.Length == q[0] && a.RowKvLength.Length == q[0] && a.MaxBlocks > 0 && a.BlockTables.Length % a.MaxBlocks == 0,
            op, $"{a.RowSequence.Length} row sequences, {a.RowKvLength.Length} lengths for {q[0]} rows; table of {a.BlockTables.Length} entries, {a.MaxBlocks} per sequence");
        int sequences = a.BlockTables.Length / a.MaxBlocks, blockSize = k[1];
        var tables = a.BlockTables.Span;
        for (int r = 0; r < q[0]; r++)
        {
            int s = a.RowSequence.Span[r], len = a.RowKvLength.Span[r];
            Require((uint)s < (uint)sequences && len >= 0 && len <= a.MaxBlocks * blockSize, op, $"row {r} names sequence {s} of {sequences} with {len} keys");
            for (int b = 0; b < (len + blockSize - 1) / blockSize; b++)
                Require((uint)tables[s * a.MaxBlocks + b] < (uint)k[0], op, $"sequence {s} block {b} is {tables[s * a.MaxBlocks + b]}, outside the cache's {k[0]} blocks");
        }
        Begin();
        Ops.PagedAttention.Forward(_dc, F(op, a.Q), F(op, a.KCache), F(op, a.VCache), F(op, a.Output), tables, a.RowSequence.Span, a.RowKvLength.Span,
            new Ops.PagedAttentionDims { H = q[1], Hkv = k[2], D = q[2], BlockSize = blockSize, MaxBlocks = a.MaxBlocks, Scale = a.Scale });
    }

    public void GatheredLoraLinear(Tensor x, Tensor loraA, Tensor loraB, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter, Tensor y)
    {
        const string op = "GatheredLoraLinear";
        F32(op, x, loraA, loraB, y);
        Require(loraA.Shape.Rank == 3 && loraB.Shape.Rank == 3 && loraA.Shape[0] == loraB.Shape[0] && loraA.Shape[1] == loraB.Shape[2] && x.Shape.Rank >= 1 && x.Shape[-1] == loraA.Shape[2],
            op, $"x {x.Shape}, A {loraA.Shape}, B {loraB.Shape}: need A [L,r,K], B [L,M,r]");
        int adapters = loraA.Shape[0], r = loraA.Shape[1], k = loraA.Shape[2], m = loraB.Shape[1];
        Require(y.Shape == x.Shape.WithLast(m) && rowAdapter.Length == x.Shape.Rows && scales.Length == adapters,
            op, $"y {y.Shape} must be {x.Shape.WithLast(m)}, {rowAdapter.Length} row adapters for {x.Shape.Rows} rows, {scales.Length} scales for {adapters} adapters");
        foreach (int i in rowAdapter) Require(i < adapters, op, $"a row names adapter {i} of {adapters}");
        Begin();
        Ops.GatheredLoraLinear.Forward(_dc, F(op, x), F(op, loraA), F(op, loraB), scales, rowAdapter, F(op, y), k, m, r);
    }
}
