// The CPU backend's serving ops: paged attention over a block-table KV cache and the gathered
// (per-row adapter) LoRA linear. Shapes checked by ServingShapes (as every backend does), then spans go to the kernels.
using Temper.Core;

namespace Temper.Kernels.Cpu;

public sealed partial class CpuBackend
{
    public void PagedAttention(in PagedAttentionArgs a)
    {
        const string op = "PagedAttention";
        Host(op, a.Q, a.KCache, a.VCache, a.Output);
        F32(op, a.Q, a.Output);
        int blockSize = ServingShapes.PagedAttention(a, "cpu");
        var (q, k) = (a.Q.Shape, a.KCache.Shape);
        if (a.KCache.DType == DType.BF16)
            Cpu.PagedAttention.Forward(a.Q.Floats, a.KCache.Span<ushort>(), a.VCache.Span<ushort>(), a.Output.Floats, a.BlockTables.Span, a.MaxBlocks, a.RowSequence.Span, a.RowKvLength.Span,
                q[1], k[2], q[2], blockSize, a.Scale, _threads);
        else
            Cpu.PagedAttention.Forward(a.Q.Floats, a.KCache.Floats, a.VCache.Floats, a.Output.Floats, a.BlockTables.Span, a.MaxBlocks, a.RowSequence.Span, a.RowKvLength.Span,
                q[1], k[2], q[2], blockSize, a.Scale, _threads);
    }

    public void GatheredLoraLinear(Tensor x, Tensor loraA, Tensor loraB, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter, Tensor y)
    {
        const string op = "GatheredLoraLinear";
        Host(op, x, loraA, loraB, y);
        F32(op, x, loraA, loraB, y);
        var (_, r, k, m) = ServingShapes.GatheredLora(x, loraA, loraB, scales, rowAdapter, y, "cpu");
        Cpu.GatheredLoraLinear.Forward(x.Floats, loraA.Floats, loraB.Floats, scales, rowAdapter, y.Floats, k, m, r, _threads);
    }
}
