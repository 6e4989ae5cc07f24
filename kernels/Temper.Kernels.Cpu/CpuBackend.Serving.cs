// The CPU backend's serving ops: paged attention over a block-table KV cache and the gathered
// (per-row adapter) LoRA linear. Checks as the other ops do, then hands spans to the kernels.
using Temper.Core;

namespace Temper.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void PagedAttention(in PagedAttentionArgs a)
    {
        const string op = "PagedAttention";
        Host(op, a.Q, a.KCache, a.VCache, a.Output);
        F32(op, a.Q, a.KCache, a.VCache, a.Output);
        var (q, k) = (a.Q.Shape, a.KCache.Shape);
        Require(q.Rank == 3 && k.Rank == 4 && a.VCache.Shape == k && a.Output.Shape == q && k[3] == q[2] && k[2] > 0 && q[1] % k[2] == 0,
            op, $"q {q}, k cache {k}, v cache {a.VCache.Shape}, output {a.Output.Shape}: need q,output [N,H,D], caches [Blocks,BlockSize,Hkv,D], H a multiple of Hkv");
        Require(a.RowSequence.Length == q[0] && a.RowKvLength.Length == q[0] && a.MaxBlocks > 0 && a.BlockTables.Length % a.MaxBlocks == 0,
            op, $"{a.RowSequence.Length} row sequences, {a.RowKvLength.Length} lengths for {q[0]} rows; table of {a.BlockTables.Length} entries, {a.MaxBlocks} per sequence");
        Cpu.PagedAttention.Forward(a.Q.Floats, a.KCache.Floats, a.VCache.Floats, a.Output.Floats, a.BlockTables.Span, a.MaxBlocks, a.RowSequence.Span, a.RowKvLength.Span,
            q[1], k[2], q[2], k[1], a.Scale, _threads);
    }

    public void GatheredLoraLinear(Tensor x, Tensor loraA, Tensor loraB, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter, Tensor y)
    {
        const string op = "GatheredLoraLinear";
        Host(op, x, loraA, loraB, y);
        F32(op, x, loraA, loraB, y);
        Require(loraA.Shape.Rank == 3 && loraB.Shape.Rank == 3 && loraA.Shape[0] == loraB.Shape[0] && loraA.Shape[1] == loraB.Shape[2] && x.Shape.Rank >= 1 && x.Shape[-1] == loraA.Shape[2],
            op, $"x {x.Shape}, A {loraA.Shape}, B {loraB.Shape}: need A [L,r,K], B [L,M,r]");
        int adapters = loraA.Shape[0], r = loraA.Shape[1], k = loraA.Shape[2], m = loraB.Shape[1];
        Require(y.Shape == x.Shape.WithLast(m) && rowAdapter.Length == x.Shape.Rows && scales.Length == adapters,
            op, $"y {y.Shape} must be {x.Shape.WithLast(m)}, {rowAdapter.Length} row adapters for {x.Shape.Rows} rows, {scales.Length} scales for {adapters} adapters");
        Cpu.GatheredLoraLinear.Forward(x.Floats, loraA.Floats, loraB.Floats, scales, rowAdapter, y.Floats, k, m, r, _threads);
    }
}
