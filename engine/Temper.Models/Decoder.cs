// The Llama-family decoder forward pass over backend ops (Llama, Qwen2, Qwen3, Mistral share it):
//   x = embed(ids); per layer: x += o(attn(rope(q(n1 x)), rope(k(n1 x)), v(n1 x))); x += down(silu(gate(n2 x)) * up(n2 x));
//   logits = lm_head(norm(x)). Qwen3 norms each head of q and k before RoPE (HeadNorm). A mixture-of-experts layer
//   (Mixtral, Qwen3-MoE) replaces the dense MLP by its routed experts: x += moe(n2 x) (MoeBlock).
// Token rows are [B*T] (row b*T+t); q is [B,T,H,D], the cache [B,S,Hkv,D]. The new tokens' K/V are
// appended to the cache, so prefill and each decode step are the same call.
// With a prompt- or prefix-tuning adapter attached (Weights.PromptEmbeddings [P,C] or Weights.Prefix), the first call into an empty cache puts
// the P virtual tokens before each row (VirtualTokens.Prepend) and the cache remembers them: every position the
// caller gives, then and later, counts real tokens only and is moved up by P; logits are of the real rows only.
// A prefix's keys and values replace the virtual rows' own in every layer before they enter the cache.
using Temper.Core;

namespace Temper.Models;

public sealed class Decoder(ModelConfig cfg, ModelWeights weights, IBackend backend)
{
    private readonly RopeFrequencies _rope = cfg.Rope.Frequencies(cfg.HeadDim);

    public ModelConfig Config { get; } = cfg;
    public ModelWeights Weights { get; } = weights;
    public IBackend Backend { get; } = backend;

    /// <summary>
    /// Runs ids [B,T] at positions [B,T] (mask [B,T]: 1 real, 0 padding; empty = all real) through the
    /// model, appending to <paramref name="cache"/>. Returns logits [B*T, V] when allPositions, else
    /// [B, V] for each row's last position.
    /// </summary>
    public Tensor Forward(ReadOnlySpan<int> ids, ReadOnlySpan<int> positions, ReadOnlySpan<int> mask, int batch, KvCache cache, bool allPositions)
    {
        var be = Backend;
        int n = ids.Length, t = n / batch;
        if (n % batch != 0 || positions.Length != n || (!mask.IsEmpty && mask.Length != n))
            throw new ArgumentException($"ids ({ids.Length}), positions ({positions.Length}) and mask ({mask.Length}) do not form [B={batch},T]");
        foreach (int id in ids)
            if ((uint)id >= (uint)Config.VocabSize) throw new TemperException($"token id {id} is outside the vocabulary (size {Config.VocabSize})");
        int realT = t;
        if (cache.Length == 0 && Weights.VirtualTokenCount > 0)
        {
            var (vIds, vMask, vPos) = VirtualTokens.Prepend(ids, mask, positions, batch, Weights.VirtualTokenCount, Config.VocabSize);
            ids = vIds;
            mask = vMask;
            positions = vPos;
            cache.VirtualTokens = Weights.VirtualTokenCount;
            n = ids.Length;
            t = n / batch;
        }
        else if (cache.VirtualTokens > 0) positions = VirtualTokens.Shift(positions, cache.VirtualTokens);
        cache.EnsureRoom(t);
        int c = Config.HiddenSize, h = Config.NumHeads, hkv = Config.NumKvHeads, d = Config.HeadDim, f = Config.IntermediateSize;
        int kvLen = cache.Length + t;
        var keyMask = cache.Length == 0 && mask.IsEmpty ? default : (ReadOnlyMemory<int>)BuildKeyMask(cache, mask, batch, t, kvLen);

        using var x = be.Zeros(new Shape(n, c));
        using var hn = be.Zeros(new Shape(n, c));
        using var q = be.Zeros(new Shape(n, h * d));
        using var k = be.Zeros(new Shape(n, hkv * d));
        using var v = be.Zeros(new Shape(n, hkv * d));
        using var attn = be.Zeros(new Shape(n, h * d));
        using var proj = be.Zeros(new Shape(n, c));
        // The dense MLP's [n,F] buffers, only where some layer is dense (Mixtral's every layer routes to experts).
        bool anyDense = Config.Moe == null || Weights.Layers.Any(l => l.Moe == null);
        using var gate = anyDense ? be.Zeros(new Shape(n, f)) : null;
        using var up = anyDense ? be.Zeros(new Shape(n, f)) : null;

        VirtualTokens.Embed(be, Weights, Config.VocabSize, ids, x);
        float scale = 1f / MathF.Sqrt(d);
        for (int l = 0; l < Weights.Layers.Length; l++)
        {
            var w = Weights.Layers[l];
            be.RmsNorm(x, w.InputNorm, Config.RmsNormEps, hn);
            w.Q.Forward(be, hn, q);
            w.K.Forward(be, hn, k);
            w.V.Forward(be, hn, v);
            HeadNorm.Apply(be, w, Config.RmsNormEps, q, k);
            be.Rope(View(q, n, h, d), positions, _rope);
            be.Rope(View(k, n, hkv, d), positions, _rope);
            if (t != realT && Weights.Prefix is { } prefix) VirtualTokens.OverwriteKv(be, prefix, l, k, v, batch);
            cache.Write(l, k, v, t);
            be.Attention(new AttentionArgs(View4(q, batch, t, h, d), cache.K(l), cache.V(l), View4(attn, batch, t, h, d), kvLen, cache.Length, scale, keyMask));
            w.O.Forward(be, attn, proj);
            be.AddRmsNorm(x, proj, x, w.PostAttentionNorm, Config.RmsNormEps, hn);
            if (w.Moe is { } moe)
            {
                MoeBlock.AddTo(be, moe, hn, x);
                continue;
            }
            w.Gate.Forward(be, hn, gate!);
            w.Up.Forward(be, hn, up!);
            be.SwiGlu(gate!, up!, gate!);
            w.Down.Forward(be, gate!, proj);
            be.Add(x, proj, x);
        }
        cache.Advance(t, mask);

        be.RmsNorm(x, Weights.FinalNorm, Config.RmsNormEps, hn);
        if (allPositions)
        {
            using var real = t == realT ? null : be.Uninitialized(new Shape(batch * realT, c));
            if (real != null) VirtualTokens.CopyRealRows(be, hn, batch, t - realT, real);
            var logits = be.Zeros(new Shape(batch * realT, Config.VocabSize));
            Weights.LmHead.Forward(be, real ?? hn, logits);
            return logits;
        }
        using var last = be.Zeros(new Shape(batch, c));
        for (int b = 0; b < batch; b++) be.CopyRows(hn, (b + 1) * t - 1, last, b, 1);
        var lastLogits = be.Zeros(new Shape(batch, Config.VocabSize));
        Weights.LmHead.Forward(be, last, lastLogits);
        return lastLogits;
    }

    private static int[] BuildKeyMask(KvCache cache, ReadOnlySpan<int> mask, int batch, int t, int kvLen)
    {
        var m = new int[batch * kvLen];
        var old = cache.KeyMask(cache.Length);
        for (int b = 0; b < batch; b++)
        {
            old.AsSpan(b * cache.Length, cache.Length).CopyTo(m.AsSpan(b * kvLen));
            for (int i = 0; i < t; i++) m[b * kvLen + cache.Length + i] = mask.IsEmpty ? 1 : mask[b * t + i];
        }
        return m;
    }

    private static Tensor View(Tensor t, int n, int heads, int d) => new(new Shape(n, heads, d), t.DType, t.Storage, t.Name);
    private static Tensor View4(Tensor t, int b, int len, int heads, int d) => new(new Shape(b, len, heads, d), t.DType, t.Storage, t.Name);
}
