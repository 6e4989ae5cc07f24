// The decoder forward over a flat batch of token rows from many sequences (continuous batching): each
// item brings a sequence's new tokens (a prefill chunk or one decode token) at positions
// [Start, Start + Ids.Length) and the adapter its rows use. The layers are the Llama-family decoder's
// (Decoder.cs) with two changes: K/V are written into the paged cache through each sequence's block
// table (rounded to bf16 first when the cache holds bf16) and read back by PagedAttention, and every targeted projection adds each row's own LoRA
// through the gathered LoRA op (the base weights stay unmerged and shared): the step's adapters are
// made resident in the device tier first, and rows index the op's stacks by device slot.
// A mixture-of-experts layer (Mixtral, Qwen3-MoE, Qwen2-MoE) runs MoeBlock over all the step's rows at once: each
// row is routed on its own, so a token's experts and its output do not depend on the batch it shares. Adapters reach
// its router, experts and shared expert (and its gate) through MoeBlock's projection hook: the same gathered LoRA op,
// over an expert's m gathered rows with their slots gathered alongside ([m] = rowAdapter[rows]); the router's LoRA
// is added before routing, so a row on an adapted router may pick other experts. Dense layers (Qwen's
// mlp_only_layers / decoder_sparse_step) keep the dense MLP, adapters included.
// Rows are [N] = the items' tokens in order; logits come back on the host, [rows wanting them, V]: every row
// of an item with AllLogits (prompt scoring), else the last row of an item with WantLogits.
using Temper.Core;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Lora;

namespace Temper.Serving.Scheduling;

public sealed record StepItem(SequenceBlocks Blocks, int[] Ids, int Start, int Adapter, bool WantLogits, bool AllLogits = false)
{
    /// <summary>The rows of the step's logits this item gets.</summary>
    public int LogitRows => AllLogits ? Ids.Length : WantLogits ? 1 : 0;
}

public sealed class PagedDecoder(Decoder decoder, PagedKvCache cache, AdapterStack? adapters)
{
    private readonly RopeFrequencies _rope = decoder.Config.Rope.Frequencies(decoder.Config.HeadDim);

    public Decoder Decoder { get; } = decoder;
    public PagedKvCache Cache { get; } = cache;
    public AdapterStack? Adapters { get; } = adapters;

    /// <summary>Runs the items (whose blocks are reserved) and returns their logit rows (StepItem.LogitRows each, in order), [rows, V] row-major.</summary>
    public float[] Forward(IReadOnlyList<StepItem> items)
    {
        var cfg = Decoder.Config;
        var be = Decoder.Backend;
        var w = Decoder.Weights;
        int n = items.Sum(i => i.Ids.Length);
        int maxBlocks = Math.Max(1, items.Max(i => i.Blocks.Blocks.Count));
        var ids = new int[n];
        var positions = new int[n];
        var rowSeq = new int[n];
        var rowLen = new int[n];
        var rowAdapter = new int[n];
        var tables = new int[items.Count * maxBlocks];
        for (int s = 0, row = 0; s < items.Count; s++)
        {
            var it = items[s];
            for (int b = 0; b < it.Blocks.Blocks.Count; b++) tables[s * maxBlocks + b] = it.Blocks.Blocks[b];
            for (int i = 0; i < it.Ids.Length; i++, row++)
            {
                if ((uint)it.Ids[i] >= (uint)cfg.VocabSize) throw new TemperException($"token id {it.Ids[i]} is outside the vocabulary (size {cfg.VocabSize})");
                ids[row] = it.Ids[i];
                positions[row] = it.Start + i;
                rowSeq[row] = s;
                rowLen[row] = it.Start + i + 1;
                rowAdapter[row] = it.Adapter;
            }
            if (Cache.BlocksFor(it.Start + it.Ids.Length) > it.Blocks.Blocks.Count)
                throw new InvalidOperationException($"item {s}: positions up to {it.Start + it.Ids.Length} need blocks that were not reserved");
        }
        bool anyAdapter = Adapters != null && rowAdapter.Any(a => a >= 0);
        if (anyAdapter)
        {
            Adapters!.Acquire(rowAdapter);
            for (int row = 0; row < n; row++) rowAdapter[row] = Adapters.SlotOf(rowAdapter[row]);
        }
        int c = cfg.HiddenSize, h = cfg.NumHeads, hkv = cfg.NumKvHeads, d = cfg.HeadDim, f = cfg.IntermediateSize;

        using var x = be.Zeros(new Shape(n, c));
        using var hn = be.Zeros(new Shape(n, c));
        using var q = be.Zeros(new Shape(n, h * d));
        using var k = be.Zeros(new Shape(n, hkv * d));
        using var v = be.Zeros(new Shape(n, hkv * d));
        using var attn = be.Zeros(new Shape(n, h * d));
        bool bf16Cache = Cache.DType == DType.BF16;
        using var kCached = bf16Cache ? be.Uninitialized(new Shape(n, hkv * d), DType.BF16) : null; // k, v rounded for a bf16 cache (every row written below)
        using var vCached = bf16Cache ? be.Uninitialized(new Shape(n, hkv * d), DType.BF16) : null;
        using var proj = be.Zeros(new Shape(n, c));
        // The dense MLP's [n,F] buffers, only where some layer is dense (Mixtral's every layer routes to experts).
        bool anyDense = w.Layers.Any(l => l.Moe == null);
        using var gate = anyDense ? be.Zeros(new Shape(n, f)) : null;
        using var up = anyDense ? be.Zeros(new Shape(n, f)) : null;
        void Project(Projection p, Tensor input, Tensor output)
        {
            p.Forward(be, input, output);
            if (anyAdapter && Adapters!.For(p.Name) is { } st) be.GatheredLoraLinear(input, st.A, st.B, st.Scales, rowAdapter, output);
        }
        // A mixture-of-experts projection on rows[m] of the step's rows (null: all of them): their slots gathered alongside.
        void ProjectMoe(Projection p, Tensor input, Tensor output, int[]? rows)
        {
            if (Adapters!.For(p.Name) is not { } st) return;
            var slots = rows == null ? rowAdapter : Array.ConvertAll(rows, r => rowAdapter[r]);
            if (slots.Any(s => s >= 0)) be.GatheredLoraLinear(input, st.A, st.B, st.Scales, slots, output);
        }

        be.Embedding(w.Embed, ids, x);
        float scale = 1f / MathF.Sqrt(d);
        for (int l = 0; l < w.Layers.Length; l++)
        {
            var lw = w.Layers[l];
            be.RmsNorm(x, lw.InputNorm, cfg.RmsNormEps, hn);
            Project(lw.Q, hn, q);
            Project(lw.K, hn, k);
            Project(lw.V, hn, v);
            HeadNorm.Apply(be, lw, cfg.RmsNormEps, q, k);
            be.Rope(View(q, n, h, d), positions, _rope);
            be.Rope(View(k, n, hkv, d), positions, _rope);
            if (bf16Cache)
            {
                be.RoundToBf16(k, kCached!);
                be.RoundToBf16(v, vCached!);
            }
            for (int s = 0, row = 0; s < items.Count; row += items[s].Ids.Length, s++)
                Cache.Write(l, items[s].Blocks, items[s].Start, kCached ?? k, vCached ?? v, row, items[s].Ids.Length);
            be.PagedAttention(new PagedAttentionArgs(View(q, n, h, d), Cache.K(l), Cache.V(l), View(attn, n, h, d), tables, maxBlocks, rowSeq, rowLen, scale));
            Project(lw.O, attn, proj);
            be.AddRmsNorm(x, proj, x, lw.PostAttentionNorm, cfg.RmsNormEps, hn);
            if (lw.Moe is { } moe)
            {
                MoeBlock.AddTo(be, moe, hn, x, anyAdapter ? ProjectMoe : null);
                continue;
            }
            Project(lw.Gate, hn, gate!);
            Project(lw.Up, hn, up!);
            be.SwiGlu(gate!, up!, gate!);
            Project(lw.Down, gate!, proj);
            be.Add(x, proj, x);
        }
        be.RmsNorm(x, w.FinalNorm, cfg.RmsNormEps, hn);

        int wanted = items.Sum(i => i.LogitRows);
        if (wanted == 0) return [];
        using var last = be.Zeros(new Shape(wanted, c));
        var lastAdapter = new int[wanted];
        for (int i = 0, row = 0, s = 0; s < items.Count; row += items[s].Ids.Length, s++)
        {
            int rows = items[s].LogitRows;
            if (rows == 0) continue;
            be.CopyRows(hn, row + items[s].Ids.Length - rows, last, i, rows);
            for (int r = 0; r < rows; r++) lastAdapter[i++] = anyAdapter ? Adapters!.SlotOf(items[s].Adapter) : items[s].Adapter;
        }
        using var logits = be.Zeros(new Shape(wanted, cfg.VocabSize));
        w.LmHead.Forward(be, last, logits);
        if (anyAdapter && Adapters!.For(w.LmHead.Name) is { } head) be.GatheredLoraLinear(last, head.A, head.B, head.Scales, lastAdapter, logits);
        if (logits.IsHost) return logits.Floats.ToArray();
        using var host = be.ToHost(logits);
        return host.Floats.ToArray();
    }

    private static Tensor View(Tensor t, int n, int heads, int d) => new(new Shape(n, heads, d), t.DType, t.Storage, t.Name);
}
