// The ILGPU backend's serving ops: paged attention over a block-table KV cache and the gathered
// (per-row adapter) LoRA linear. Block tables, row indices and scales go up through the arena.
using Temper.Core;

namespace Temper.Kernels.Ilgpu;

public sealed partial class IlgpuBackend
{
    public void PagedAttention(in PagedAttentionArgs a)
    {
        const string op = "PagedAttention";
        F32(op, a.Q, a.Output);
        int blockSize = ServingShapes.PagedAttention(a, Name);
        var (q, k) = (a.Q.Shape, a.KCache.Shape);
        var dims = new Ops.PagedAttentionDims { H = q[1], Hkv = k[2], D = q[2], BlockSize = blockSize, MaxBlocks = a.MaxBlocks, Scale = a.Scale };
        Begin();
        if (a.KCache.DType == DType.BF16)
            Ops.PagedAttention.Forward(_dc, F(op, a.Q), Bf16(op, a.KCache), Bf16(op, a.VCache), F(op, a.Output), a.BlockTables.Span, a.RowSequence.Span, a.RowKvLength.Span, dims);
        else
            Ops.PagedAttention.Forward(_dc, F(op, a.Q), F(op, a.KCache), F(op, a.VCache), F(op, a.Output), a.BlockTables.Span, a.RowSequence.Span, a.RowKvLength.Span, dims);
    }

    public void GatheredLoraLinear(Tensor x, Tensor loraA, Tensor loraB, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter, Tensor y)
    {
        const string op = "GatheredLoraLinear";
        F32(op, x, loraA, loraB, y);
        var (_, r, k, m) = ServingShapes.GatheredLora(x, loraA, loraB, scales, rowAdapter, y, Name);
        Begin();
        Ops.GatheredLoraLinear.Forward(_dc, F(op, x), F(op, loraA), F(op, loraB), scales, rowAdapter, F(op, y), k, m, r);
    }
}
