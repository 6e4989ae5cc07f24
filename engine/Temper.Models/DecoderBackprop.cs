// The decoder's training pass, written out by hand (llm.c style, no autograd tape): a forward over
// ids [B,T] that keeps each layer's activations, a head on the final normed hidden state [B*T,C]
// (by default the fused LM-head + cross-entropy over vocabulary chunks, so the [B*T,V] logits are
// never held; see IDecoderHead for the others), then the backward of every op in reverse order.
// Labels follow transformers: labels[b,t] is the target of the logits at t-1 (-100 = no loss), so
// position t predicts labels[b,t+1]. Gradients go to whatever gradOf(param) returns (null = frozen):
// every base weight for full fine-tuning, the LoRA A/B for adapters.
using Temper.Core;

namespace Temper.Models;

public sealed class DecoderBackprop(Decoder decoder)
{
    private sealed class LayerActivations
    {
        public required Tensor XIn, Rstd1, Hn1, Q, K, V, Attn, Lse, XMid, Rstd2, Hn2, Gate, Up, Act;
        public readonly Dictionary<Projection, Tensor> Xa = [];
    }

    public Decoder Decoder { get; } = decoder;

    /// <summary>
    /// Runs forward and (when gradOf is given) backward for one micro-batch. Returns the per-token
    /// cross-entropy [B*T] (0 where no label) — its sum times lossScale (times rowScales[row], when
    /// given: per-token weights, as preference losses need) is what the gradients are of.
    /// </summary>
    public float[] Run(ReadOnlySpan<int> ids, ReadOnlySpan<int> labels, ReadOnlySpan<int> mask, int batch, float lossScale, Func<Tensor, Tensor?>? gradOf, ReadOnlySpan<float> rowScales = default)
    {
        if (labels.Length != ids.Length || ids.Length % Math.Max(1, batch) != 0)
            throw new ArgumentException("ids, labels and mask must all be [B,T]");
        var head = new CrossEntropyHead(NextTokenTargets(labels, ids.Length / batch), lossScale, rowScales.ToArray());
        return Run(ids, mask, batch, head, gradOf);
    }

    /// <summary>targets[n] = labels[n+1] within each row of [B,T] (the token position n predicts), -100 at each row's last position.</summary>
    public static int[] NextTokenTargets(ReadOnlySpan<int> labels, int t)
    {
        var targets = new int[labels.Length];
        for (int i = 0; i < targets.Length; i++) targets[i] = i % t == t - 1 ? -100 : labels[i + 1];
        return targets;
    }

    /// <summary>
    /// Runs forward, the head on the final normed hidden state [B*T,C], and (when gradOf is given) the
    /// backward of what the head puts into d hidden. Returns what the head returns.
    /// </summary>
    public float[] Run(ReadOnlySpan<int> ids, ReadOnlySpan<int> mask, int batch, IDecoderHead head, Func<Tensor, Tensor?>? gradOf)
    {
        var cfg = Decoder.Config;
        var w = Decoder.Weights;
        var be = Decoder.Backend;
        int n = ids.Length, t = n / batch;
        if ((!mask.IsEmpty && mask.Length != n) || n % batch != 0)
            throw new ArgumentException("ids and mask must both be [B,T]");
        foreach (int id in ids)
            if ((uint)id >= (uint)cfg.VocabSize) throw new TemperException($"token id {id} is outside the vocabulary (size {cfg.VocabSize})");
        int c = cfg.HiddenSize, h = cfg.NumHeads, hkv = cfg.NumKvHeads, d = cfg.HeadDim, f = cfg.IntermediateSize;
        var rope = cfg.Rope.Frequencies(d);
        float scale = 1f / MathF.Sqrt(d);
        var keyMask = mask.IsEmpty ? default : (ReadOnlyMemory<int>)mask.ToArray();
        var positions = new int[n];
        for (int i = 0; i < n; i++) positions[i] = i % t;

        var owned = new List<Tensor>();
        Tensor New(params int[] shape)
        {
            var x = be.Zeros(new Shape(shape));
            owned.Add(x);
            return x;
        }
        try
        {
            // ---- forward, keeping activations ----
            var x = New(n, c);
            be.Embedding(w.Embed, ids, x);
            var acts = new LayerActivations[w.Layers.Length];
            for (int l = 0; l < acts.Length; l++)
            {
                var lw = w.Layers[l];
                var a = new LayerActivations
                {
                    XIn = x, Rstd1 = New(n), Hn1 = New(n, c), Q = New(n, h * d), K = New(n, hkv * d), V = New(n, hkv * d),
                    Attn = New(n, h * d), Lse = New(batch, h, t), XMid = New(n, c), Rstd2 = New(n), Hn2 = New(n, c),
                    Gate = New(n, f), Up = New(n, f), Act = New(n, f),
                };
                be.RmsNorm(a.XIn, lw.InputNorm, cfg.RmsNormEps, a.Hn1, a.Rstd1);
                Project(lw.Q, a.Hn1, a.Q, a);
                Project(lw.K, a.Hn1, a.K, a);
                Project(lw.V, a.Hn1, a.V, a);
                be.Rope(View(a.Q, n, h, d), positions, rope);
                be.Rope(View(a.K, n, hkv, d), positions, rope);
                be.Attention(Args(a, batch, t, h, hkv, d, scale, keyMask));
                var o = New(n, c);
                Project(lw.O, a.Attn, o, a);
                be.Add(a.XIn, o, a.XMid);
                be.RmsNorm(a.XMid, lw.PostAttentionNorm, cfg.RmsNormEps, a.Hn2, a.Rstd2);
                Project(lw.Gate, a.Hn2, a.Gate, a);
                Project(lw.Up, a.Hn2, a.Up, a);
                be.SwiGlu(a.Gate, a.Up, a.Act);
                var down = New(n, c);
                Project(lw.Down, a.Act, down, a);
                x = New(n, c);
                be.Add(a.XMid, down, x);
                acts[l] = a;
            }
            var rstdF = New(n);
            var hF = New(n, c);
            be.RmsNorm(x, w.FinalNorm, cfg.RmsNormEps, hF, rstdF);
            var dHidden = gradOf == null ? null : New(n, c);
            var result = head.Apply(Decoder, hF, dHidden, gradOf);
            if (gradOf == null) return result;

            // ---- backward ----
            var dx = New(n, c);
            be.RmsNormBackward(dHidden!, x, w.FinalNorm, rstdF, dx, gradOf(w.FinalNorm));
            var dNorm = New(n, c);
            var dF = New(n, f);
            var dGate = New(n, f);
            var dUp = New(n, f);
            var dAttn = New(n, h * d);
            var dq = New(n, h * d);
            var dk = New(n, hkv * d);
            var dv = New(n, hkv * d);
            for (int l = acts.Length - 1; l >= 0; l--)
            {
                var lw = w.Layers[l];
                var a = acts[l];
                // x_out = x_mid + down(silu(gate) * up), gate/up from norm2(x_mid)
                ProjectBackward(lw.Down, dx, a.Act, dF, false, a, gradOf);
                be.SwiGluBackward(dF, a.Gate, a.Up, dGate, dUp);
                ProjectBackward(lw.Gate, dGate, a.Hn2, dNorm, false, a, gradOf);
                ProjectBackward(lw.Up, dUp, a.Hn2, dNorm, true, a, gradOf);
                var dMidNorm = New(n, c);
                be.RmsNormBackward(dNorm, a.XMid, lw.PostAttentionNorm, a.Rstd2, dMidNorm, gradOf(lw.PostAttentionNorm));
                be.Add(dx, dMidNorm, dx); // dx is now d x_mid
                // x_mid = x_in + o(attn(rope(q), rope(k), v)), q/k/v from norm1(x_in)
                ProjectBackward(lw.O, dx, a.Attn, dAttn, false, a, gradOf);
                be.AttentionBackward(Args(a, batch, t, h, hkv, d, scale, keyMask), View4(dAttn, batch, t, h, d), View4(dq, batch, t, h, d), View4(dk, batch, t, hkv, d), View4(dv, batch, t, hkv, d));
                be.RopeBackward(View(dq, n, h, d), positions, rope);
                be.RopeBackward(View(dk, n, hkv, d), positions, rope);
                ProjectBackward(lw.Q, dq, a.Hn1, dNorm, false, a, gradOf);
                ProjectBackward(lw.K, dk, a.Hn1, dNorm, true, a, gradOf);
                ProjectBackward(lw.V, dv, a.Hn1, dNorm, true, a, gradOf);
                be.RmsNormBackward(dNorm, a.XIn, lw.InputNorm, a.Rstd1, dMidNorm, gradOf(lw.InputNorm));
                be.Add(dx, dMidNorm, dx); // dx is now d x_in
            }
            if (gradOf(w.Embed) is { } dEmbed) be.EmbeddingBackward(dx, ids, dEmbed);
            return result;
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }

        void Project(Projection p, Tensor input, Tensor y, LayerActivations a)
        {
            if (p.Lora is { } lora)
            {
                var xa = New(n, lora.Rank);
                a.Xa[p] = xa;
                be.LoraLinear(input, p.Weight, p.Bias, lora.A, lora.B, lora.Scale, y, xa);
            }
            else be.Linear(input, p.Weight, p.Bias, y);
        }

        void ProjectBackward(Projection p, Tensor dy, Tensor input, Tensor dInput, bool accumulate, LayerActivations a, Func<Tensor, Tensor?> grad)
        {
            be.LinearBackward(dy, input, p.Weight, dInput, grad(p.Weight), p.Bias == null ? null : grad(p.Bias), accumulate);
            if (p.Lora is { } lora)
                be.LoraLinearBackward(dy, input, a.Xa[p], lora.A, lora.B, lora.Scale, dInput, grad(lora.A), grad(lora.B));
        }
    }

    private static AttentionArgs Args(LayerActivations a, int b, int t, int h, int hkv, int d, float scale, ReadOnlyMemory<int> mask) =>
        new(View4(a.Q, b, t, h, d), View4(a.K, b, t, hkv, d), View4(a.V, b, t, hkv, d), View4(a.Attn, b, t, h, d), t, 0, scale, mask, a.Lse);

    private static Tensor View(Tensor x, int n, int heads, int d) => new(new Shape(n, heads, d), x.DType, x.Storage, x.Name);
    private static Tensor View4(Tensor x, int b, int len, int heads, int d) => new(new Shape(b, len, heads, d), x.DType, x.Storage, x.Name);
}
