// The decoder's training pass, written out by hand (llm.c style, no autograd tape): a forward over
// ids [B,T] that keeps each layer's activations, a head on the final normed hidden state [B*T,C]
// (by default the fused LM-head + cross-entropy over vocabulary chunks, so the [B*T,V] logits are
// never held; see IDecoderHead for the others), then the backward of every op in reverse order.
// Labels follow transformers: labels[b,t] is the target of the logits at t-1 (-100 = no loss), so
// position t predicts labels[b,t+1]. Gradients go to whatever gradOf(param) returns (null = frozen):
// every base weight for full fine-tuning, the LoRA A/B for adapters. Qwen3's head norms (HeadNorm) sit
// between the q/k projections and RoPE, their inputs and 1/rms kept for backward.
// A mixture-of-experts layer (MoeBlock's forward, its projections through the same LoRA/DoRA/IA3/dropout paths) keeps the
// router logits [N,E] and routing on the host and, per expert, gate/up/act [m,F] and its unweighted output [m,C] over its m
// tokens (inputs are gathered again in backward); backward sends each expert's rows' dy times the routing weight through
// its SwiGLU, and dw[n,j] = dy[n] . expert_j(h[n]) back through the renormalisation and softmax to the router's logits
// and through the router into d hn (top-k's choice is piecewise constant: no gradient); Qwen2-MoE's shared expert gets
// dy * sigmoid(g) and its gate dg = (dy . shared(h)) s (1 - s).
// With RouterAuxLossCoef > 0 the pass also computes transformers' router load-balancing loss (load_balancing_loss_func) over
// the M counted (layer, token) pairs of the sparse layers (tokens with mask 1; prefix tuning's virtual rows not counted):
// f[e] = (times e is among a token's top k) / M, P[e] = sum of softmax(logits)[e] / M, aux = E sum_e f[e] P[e]; the
// gradient is coef x d aux through P alone (the top-k counts are constants): d logits[n] += coef p (g - p . g), g = E f / M.
// With GradientCheckpointing (and in any pass without gradients) the forward keeps only each layer's input x_in[B*T,C] and the backward
// recomputes that layer's activations (q/k/v [B*T,H*D], MLP [B*T,F], ...) just before its backward.
// On a device backend a bf16 model's MLP keeps gate and up in bf16 (KeepsBf16Mlp), act computed from the rounded values so
// that backward rebuilds it bit for bit, and its attention keeps q, k, v in bf16 (KeepsBf16Attention: rounded after RoPE,
// attention forward and backward reading them); every other activation stays f32.
// With LoraDropout p > 0, training passes follow PEFT: y = x W^T + b + s B A dropout(x), the dropped
// input [B*T,In] kept per projection for backward (the mask is a function of its seed, so a recomputed
// layer draws the same one).
// A DoRA projection (LoraView.Magnitude) keeps its norm [Out] (of the current A, B; a constant in backward, as
// PEFT detaches it) and its unscaled product z [B*T,Out] = x W^T + s (x A^T) B^T; backward gives the
// magnitude dm = sum_t dy z / norm and sends dz = m / norm * dy through the base and LoRA backward.
// With LoRA dropout, DoRA follows PEFT's training forward, y = x W^T + b + (g - 1) (x_d W^T) + g s (x_d A^T) B^T
// with x_d = dropout(x) and g = m / norm, computed as (x - x_d) W^T + b + g z_d (z_d the unscaled product of x_d).
// An (IA)^3 projection (Projection.Ia3, l f32) keeps, when it scales its output, z [B*T,Out] = x W^T + b: backward
// gives dl[o] = sum_n dy[n,o] z[n,o] and sends dy * l through the base; scaling its input (feedforward) it keeps
// nothing more than x: with g = dy W [B*T,In], dl[i] = sum_n x[n,i] g[n,i] and dx = g * l. The base stays frozen.
// With NeftuneNoiseAlpha > 0 (NEFTune, transformers' neftune_noise_alpha), passes that compute gradients add uniform
// noise in [-alpha/sqrt(T*C), alpha/sqrt(T*C)] to the embeddings [B*T,C] (T the padded length), drawn from DropoutSeed;
// the noise is a constant to backward, so the embedding gradient is unchanged.
// With a prompt-tuning adapter (ModelWeights.PromptEmbeddings [P,C]) the pass runs over [B, P+T]: P virtual tokens
// before each row (positions 0..P-1, the real ones moved up by P; VirtualTokens), the head on the real rows
// [B*T,C] alone, and the virtual rows' share of d x_in going to the prompt's gradient. The virtual tokens are
// context only: a row's first token stays unscored, as without an adapter (PEFT's own forward also scores it from
// the last virtual token when its label is not -100; TRL's DPO and KTO drop it as we do).
// A prefix-tuning adapter (ModelWeights.Prefix) runs the same [B, P+T] pass with each layer's virtual K/V rows
// replaced by the prefix's after RoPE; backward takes those rows of dk, dv as the prefix's gradient and clears them.
using Temper.Core;

namespace Temper.Models;

public sealed class DecoderBackprop(Decoder decoder)
{
    private sealed class LayerActivations
    {
        public required Tensor XIn, XOut;
        public Tensor Rstd1 = null!, Q = null!, K = null!, V = null!, Attn = null!, Lse = null!, XMid = null!, Rstd2 = null!, Gate = null!, Up = null!;
        /// <summary>The norms' outputs and the MLP's silu(gate) * up: null after a lean forward (backward rebuilds them).</summary>
        public Tensor? Hn1, Hn2, Act;
        /// <summary>Qwen3's head norms: q and k before them [B*T,H*D], [B*T,Hkv*D], and their 1/rms [B*T*H], [B*T*Hkv].</summary>
        public Tensor? QRaw, KRaw, RstdQ, RstdK;
        public readonly Dictionary<Projection, Tensor> Xa = [];
        /// <summary>LoRA dropout: the dropped-out input of the LoRA branch and the seed of its mask.</summary>
        public readonly Dictionary<Projection, (Tensor X, ulong Seed)> Dropped = [];
        /// <summary>DoRA: the norm [Out] of W + s B A and the unscaled product z [B*T,Out].</summary>
        public readonly Dictionary<Projection, (Tensor Norm, Tensor Z)> Dora = [];
        /// <summary>IA3 output scaling: the base output z [B*T,Out] before the scaling.</summary>
        public readonly Dictionary<Projection, Tensor> Ia3 = [];
        /// <summary>A mixture-of-experts layer's routing and expert activations (null for a dense MLP, whose Gate/Up/Act are kept instead).</summary>
        public MoeActivations? Moe;
    }

    /// <summary>A sparse layer's forward, kept for backward: the router logits [N,E] (host; the softmax is recomputed), the
    /// chosen experts and their weights [N*k] (host), each routed expert's activations and Qwen2-MoE's shared expert's with its sigmoid gate [N].</summary>
    private sealed class MoeActivations
    {
        public required float[] Logits;
        public required int[] Chosen;
        public required float[] Weights;
        public readonly List<ExpertActivations> Experts = [];
        public ExpertActivations? Shared;
        public float[]? SharedSigmoid;
    }

    /// <summary>One expert over its m tokens: their rows of [N,...] and slots of Chosen (row * k + j), gate/up/act [m,F] and its
    /// output before the routing weight y [m,C] (for the weight's gradient, dw = dy . y).</summary>
    private sealed record ExpertActivations(MoeExpert Expert, int[] Rows, int[] Slots, Tensor Gate, Tensor Up, Tensor Act, Tensor Y);

    public Decoder Decoder { get; } = decoder;

    /// <summary>
    /// Gradient checkpointing: forward keeps only each layer's input, and backward recomputes the
    /// layer's activations from it just before the layer's backward (one extra forward per step, the
    /// layer activations held for one layer at a time). The gradients are the same bit for bit.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>
    /// PEFT's lora_dropout, applied to the input of every LoRA branch in passes that compute gradients
    /// (never in evaluation passes). The masks are drawn from DropoutSeed, the layer and the projection.
    /// </summary>
    public float LoraDropout { get; set; }

    /// <summary>NEFTune's alpha: embedding noise in training passes (0 = off).</summary>
    public float NeftuneNoiseAlpha { get; set; }

    /// <summary>Seed of the next Run's dropout masks (and NEFTune noise); a trainer sets one per micro-batch (from its data position, so resume redraws the same).</summary>
    public ulong DropoutSeed { get; set; }

    // NEFTune: x [N,C] += U(-a/sqrt(T C), a/sqrt(T C)), element i's draw a hash of (DropoutSeed, i), so a micro-batch's noise is
    // the same however often its pass runs.
    private void AddNeftuneNoise(Tensor x, int t, int c)
    {
        var be = Decoder.Backend;
        double mag = NeftuneNoiseAlpha / Math.Sqrt((double)t * c);
        ulong seed = SplitMix64.Mix(DropoutSeed ^ 0x4E454654554E45UL);
        var noise = new float[x.Shape.Elements];
        for (int i = 0; i < noise.Length; i++)
            noise[i] = (float)(((SplitMix64.Mix(seed + (ulong)i) >> 11) * (1.0 / (1UL << 53)) * 2 - 1) * mag);
        using var device = be.FromHost(Tensor.FromFloats(x.Shape, noise, "neftune_noise"));
        be.Add(x, device, x);
    }

    /// <summary>
    /// transformers' router load-balancing loss (config.json's output_router_logits, router_aux_loss_coef): when > 0, each pass
    /// computes it (RouterAuxLoss) and a gradient pass adds coef x its gradient to the routers' logits. 0: no gradient, and the
    /// loss computed only when config.json sets output_router_logits (as transformers still reports it). null (the
    /// default): the caller does not add it, so a gradient pass over a model whose config.json sets output_router_logits is refused.
    /// </summary>
    public double? RouterAuxLossCoef { get; set; }

    /// <summary>The last pass's router load-balancing loss (NaN when it computed none).</summary>
    public double RouterAuxLoss { get; private set; } = double.NaN;

    /// <summary>Whether a dense layer's MLP keeps gate and up [B*T,F] in bf16 (rounded, act computed from the rounded values,
    /// IBackend.SwiGluRounded) rather than f32: on a backend that keeps bf16 activations, over bf16 gate and up weights, as
    /// PyTorch's autograd keeps a bf16 model's. Half their bytes, the largest of a layer's activations (MemoryPlan's
    /// Bf16MlpActivations).</summary>
    public static bool KeepsBf16Mlp(IBackend be, LayerWeights layer) =>
        be.KeepsBf16Activations && layer.Gate.Weight.DType == DType.BF16 && layer.Up.Weight.DType == DType.BF16;

    /// <summary>Whether a layer keeps its attention's q, k and v [B*T,*] in bf16 (rounded after RoPE, IBackend.RoundToBf16) rather
    /// than f32: on a backend that keeps bf16 activations, over bf16 q, k and v weights, as PyTorch keeps a bf16 model's. The
    /// device attention kernels round them to bf16 anyway, so on the CUDA C++ route this changes no result, only the bytes
    /// kept (MemoryPlan's Bf16AttentionInputs).</summary>
    public static bool KeepsBf16Attention(IBackend be, LayerWeights layer) =>
        be.KeepsBf16Activations && layer.Q.Weight.DType == DType.BF16 && layer.K.Weight.DType == DType.BF16 && layer.V.Weight.DType == DType.BF16;

    /// <summary>The most bytes the last Run held at once in its own tensors (activations and gradient buffers).</summary>
    public long PeakActivationBytes { get; private set; }

    /// <summary>
    /// Runs forward and (when gradOf is given) backward for one micro-batch. Returns the per-token
    /// cross-entropy [B*T] (0 where no label) — its sum times lossScale (times rowScales[row], when
    /// given: per-token weights, as preference losses need) is what the gradients are of.
    /// Packed rows pass positions [B,T] (restarting at 0 per example; empty = 0..T-1 in every row) and
    /// segmentIds [B,T] (which example of the row each token is; attention stays inside one).
    /// </summary>
    public float[] Run(ReadOnlySpan<int> ids, ReadOnlySpan<int> labels, ReadOnlySpan<int> mask, int batch, float lossScale, Func<Tensor, Tensor?>? gradOf, ReadOnlySpan<float> rowScales = default,
        ReadOnlySpan<int> positions = default, ReadOnlySpan<int> segmentIds = default)
    {
        if (labels.Length != ids.Length || ids.Length % Math.Max(1, batch) != 0)
            throw new ArgumentException("ids, labels and mask must all be [B,T]");
        var head = new CrossEntropyHead(NextTokenTargets(labels, ids.Length / batch), lossScale, rowScales.ToArray());
        return Run(ids, mask, batch, head, gradOf, positions, segmentIds);
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
    /// backward of what the head puts into d hidden. Returns what the head returns. positions and
    /// segmentIds as in the overload above.
    /// </summary>
    public float[] Run(ReadOnlySpan<int> ids, ReadOnlySpan<int> mask, int batch, IDecoderHead head, Func<Tensor, Tensor?>? gradOf,
        ReadOnlySpan<int> positions = default, ReadOnlySpan<int> segmentIds = default)
    {
        var cfg = Decoder.Config;
        var w = Decoder.Weights;
        var be = Decoder.Backend;
        int n = ids.Length, t = n / batch;
        if ((!mask.IsEmpty && mask.Length != n) || (!positions.IsEmpty && positions.Length != n) || (!segmentIds.IsEmpty && segmentIds.Length != n) || n % batch != 0)
            throw new ArgumentException("ids, mask, positions and segment ids must all be [B,T]");
        foreach (int id in ids)
            if ((uint)id >= (uint)cfg.VocabSize) throw new TemperException($"token id {id} is outside the vocabulary (size {cfg.VocabSize})");
        // Prompt tuning: the pass runs over [B, P+T] (virtual tokens first); the head sees the real rows only.
        int virtualRows = w.VirtualTokenCount, realT = t;
        if (virtualRows > 0)
        {
            if (!segmentIds.IsEmpty) throw new TemperException("prompt and prefix tuning put their virtual tokens before each sequence; they cannot be combined with packed rows (--packing)");
            var (vIds, vMask, vPos) = VirtualTokens.Prepend(ids, mask, positions, batch, virtualRows, cfg.VocabSize);
            ids = vIds;
            mask = vMask;
            positions = vPos;
            n = ids.Length;
            t = n / batch;
        }
        int c = cfg.HiddenSize, h = cfg.NumHeads, hkv = cfg.NumKvHeads, d = cfg.HeadDim, f = cfg.IntermediateSize;
        var rope = cfg.Rope.Frequencies(d);
        float scale = 1f / MathF.Sqrt(d);
        var keyMask = mask.IsEmpty ? default : (ReadOnlyMemory<int>)mask.ToArray();
        var segments = segmentIds.IsEmpty ? default : (ReadOnlyMemory<int>)segmentIds.ToArray();
        var pos = positions.IsEmpty ? new int[n] : positions.ToArray();
        if (positions.IsEmpty)
            for (int i = 0; i < n; i++) pos[i] = i % t;

        if (!(LoraDropout >= 0 && LoraDropout < 1)) throw new TemperException($"LoRA dropout {LoraDropout} must be in [0, 1)");
        if (gradOf != null && RouterAuxLossCoef == null && cfg.Moe is { OutputRouterLogits: true })
            throw new TemperException($"{cfg.SourcePath}: field 'output_router_logits' is true, so transformers would add router_aux_loss_coef x the load-balancing loss to the training loss; this trainer does not add it (sft, pretrain, dpo, kto, orpo and cpo do): set it to false to train on its own loss alone");
        if (RouterAuxLossCoef is { } auxCheck && !(auxCheck >= 0)) throw new TemperException($"router aux loss coefficient {auxCheck} must be >= 0");
        // The load-balancing loss's statistics, summed over the sparse layers in the forward (not in a checkpointed recompute).
        var aux = cfg.Moe != null && (RouterAuxLossCoef > 0 || (RouterAuxLossCoef == 0 && cfg.Moe.OutputRouterLogits)) ? new RouterAuxStats(cfg.Moe.Experts, AuxCountedRows(mask, n, t, w.Prefix != null ? virtualRows : 0)) : null;
        RouterAuxLoss = double.NaN;
        float[]? auxGrad = null; // coef x d aux / d p[e] of each counted token (set after the forward)
        bool dropping = gradOf != null && LoraDropout > 0;
        var owned = new List<Tensor>();
        long live = 0;
        PeakActivationBytes = 0;
        // Every tensor of the pass is the output of the op that first writes it, whole (Uninitialized: a
        // pooling backend skips clearing it), but the two that ops accumulate into (ZerosIn).
        Tensor NewIn(List<Tensor> store, params int[] shape) => Track(store, be.Uninitialized(new Shape(shape)));
        Tensor NewBf16In(List<Tensor> store, params int[] shape) => Track(store, be.Uninitialized(new Shape(shape), DType.BF16));
        Tensor ZerosIn(List<Tensor> store, params int[] shape) => Track(store, be.Zeros(new Shape(shape)));
        Tensor Track(List<Tensor> store, Tensor x)
        {
            store.Add(x);
            live += x.ByteCount;
            PeakActivationBytes = Math.Max(PeakActivationBytes, live);
            return x;
        }
        Tensor New(params int[] shape) => NewIn(owned, shape);
        void Free(List<Tensor> store)
        {
            foreach (var x in store)
            {
                live -= x.ByteCount;
                x.Dispose();
            }
            store.Clear();
        }
        try
        {
            // ---- forward, keeping activations (only each layer's input when checkpointing) ----
            var x = New(n, c);
            VirtualTokens.Embed(be, w, cfg.VocabSize, ids, x);
            if (gradOf != null && NeftuneNoiseAlpha > 0)
            {
                if (virtualRows > 0) throw new TemperException("NEFTune's noise is on the word embeddings; it is not combined with prompt or prefix tuning's virtual tokens");
                AddNeftuneNoise(x, t, c);
            }
            var acts = new LayerActivations[w.Layers.Length];
            // A pass without gradients (reference log-probs, eval loss, perplexity) keeps no more than a checkpointed one.
            bool checkpointing = GradientCheckpointing || gradOf == null;
            for (int l = 0; l < acts.Length; l++)
            {
                var scratch = checkpointing ? new List<Tensor>() : owned;
                acts[l] = ForwardLayer(l, x, scratch, lean: true);
                if (aux != null && acts[l].Moe is { } routed) aux.Add(routed.Logits, routed.Chosen, w.Layers[l].Moe!.TopK);
                x = acts[l].XOut;
                if (!checkpointing) continue;
                scratch.Remove(x);
                owned.Add(x);
                Free(scratch);
                acts[l] = new LayerActivations { XIn = acts[l].XIn, XOut = x };
            }
            if (aux != null)
            {
                RouterAuxLoss = aux.Loss();
                if (gradOf != null && aux.Pairs > 0 && RouterAuxLossCoef > 0) auxGrad = aux.Gradient(RouterAuxLossCoef!.Value);
            }
            var rstdF = New(n);
            var hF = New(n, c);
            be.RmsNorm(x, w.FinalNorm, cfg.RmsNormEps, hF, rstdF);
            var dHidden = gradOf == null ? null : ZerosIn(owned, n, c);
            float[] result;
            if (virtualRows == 0) result = head.Apply(Decoder, hF, dHidden, gradOf);
            else
            {
                var hReal = New(batch * realT, c);
                VirtualTokens.CopyRealRows(be, hF, batch, virtualRows, hReal);
                var dReal = gradOf == null ? null : ZerosIn(owned, batch * realT, c);
                result = head.Apply(Decoder, hReal, dReal, gradOf);
                if (dReal != null) VirtualTokens.CopyToRealRows(be, dReal, batch, virtualRows, dHidden!);
            }
            if (gradOf == null) return result;

            // ---- backward ----
            var dx = New(n, c);
            be.RmsNormBackward(dHidden!, x, w.FinalNorm, rstdF, dx, gradOf(w.FinalNorm));
            var dNorm = New(n, c);
            bool anyDense = w.Layers.Any(l => l.Moe == null);
            var dF = anyDense ? New(n, f) : null!;  // d act, then d gate (SwiGluBackward overwrites it in place)
            var dUp = anyDense ? New(n, f) : null!; // first act, rebuilt after a lean forward, until SwiGluBackward writes d up over it
            var dAttn = New(n, h * d);
            var dq = New(n, h * d);
            var dk = New(n, hkv * d);
            var dv = New(n, hkv * d);
            var dqRaw = cfg.QkNorm ? New(n, h * d) : null;
            var dkRaw = cfg.QkNorm ? New(n, hkv * d) : null;
            for (int l = acts.Length - 1; l >= 0; l--)
            {
                var lw = w.Layers[l];
                var scratch = GradientCheckpointing ? new List<Tensor>() : owned;
                var a = GradientCheckpointing ? ForwardLayer(l, acts[l].XIn, scratch, lean: false) : acts[l];
                // x_out = x_mid + down(silu(gate) * up), gate/up from norm2(x_mid); or x_mid + moe(norm2(x_mid))
                var rebuilt = new List<Tensor>(); // what the lean forward dropped, rebuilt for this layer's backward
                var hn2 = a.Hn2 ?? RebuildNorm(a.XMid, lw.PostAttentionNorm, rebuilt);
                if (lw.Moe is { } moe) MoeBackward(moe, a.Moe!, dx, hn2, dNorm, a, gradOf);
                else
                {
                    var act = a.Act;
                    if (act == null) be.SwiGlu(a.Gate, a.Up, act = dUp);
                    ProjectBackward(lw.Down, dx, act, dF, false, a, gradOf);
                    be.SwiGluBackward(dF, a.Gate, a.Up, dF, dUp); // elementwise: each d act is read before its d gate replaces it
                    ProjectBackward(lw.Gate, dF, hn2, dNorm, false, a, gradOf);
                    ProjectBackward(lw.Up, dUp, hn2, dNorm, true, a, gradOf);
                }
                Free(rebuilt);
                be.RmsNormBackward(dNorm, a.XMid, lw.PostAttentionNorm, a.Rstd2, dx, gradOf(lw.PostAttentionNorm), accumulateDx: true); // dx is now d x_mid
                // x_mid = x_in + o(attn(rope(q), rope(k), v)), q/k/v from norm1(x_in)
                ProjectBackward(lw.O, dx, a.Attn, dAttn, false, a, gradOf);
                be.AttentionBackward(Args(a, batch, t, h, hkv, d, scale, keyMask, segments), View4(dAttn, batch, t, h, d), View4(dq, batch, t, h, d), View4(dk, batch, t, hkv, d), View4(dv, batch, t, hkv, d));
                if (w.Prefix is { } prefix) VirtualTokens.KvBackward(be, virtualRows, batch, dk, dv, gradOf(prefix.Keys[l]), gradOf(prefix.Values[l]));
                be.RopeBackward(View(dq, n, h, d), pos, rope);
                be.RopeBackward(View(dk, n, hkv, d), pos, rope);
                if (cfg.QkNorm)
                {
                    HeadNorm.Backward(be, dq, a.QRaw!, lw.QNorm!, a.RstdQ!, dqRaw!, gradOf(lw.QNorm!));
                    HeadNorm.Backward(be, dk, a.KRaw!, lw.KNorm!, a.RstdK!, dkRaw!, gradOf(lw.KNorm!));
                }
                var hn1 = a.Hn1 ?? RebuildNorm(a.XIn, lw.InputNorm, rebuilt);
                ProjectBackward(lw.Q, dqRaw ?? dq, hn1, dNorm, false, a, gradOf);
                ProjectBackward(lw.K, dkRaw ?? dk, hn1, dNorm, true, a, gradOf);
                ProjectBackward(lw.V, dv, hn1, dNorm, true, a, gradOf);
                Free(rebuilt);
                be.RmsNormBackward(dNorm, a.XIn, lw.InputNorm, a.Rstd1, dx, gradOf(lw.InputNorm), accumulateDx: true); // dx is now d x_in
                if (GradientCheckpointing) Free(scratch);
            }
            if (gradOf(w.Embed) is { } dEmbed)
            {
                if (virtualRows > 0) throw new TemperException("prompt and prefix tuning train their virtual tokens over a frozen base; the embedding cannot be trained with them");
                be.EmbeddingBackward(dx, ids, dEmbed);
            }
            if (w.PromptEmbeddings is { } prompt && gradOf(prompt) is { } dPrompt) VirtualTokens.EmbedBackward(be, dx, ids, cfg.VocabSize, dPrompt);
            // (prefix tuning's gradients were taken at each layer's attention, KvBackward)
            return result;
        }
        finally
        {
            Free(owned);
        }

        // A norm's output again from its input (lean passes drop it): the same kernel on the same values, so the same bits.
        Tensor RebuildNorm(Tensor input, Tensor weight, List<Tensor> store)
        {
            var hn = NewIn(store, n, c);
            be.RmsNorm(input, weight, cfg.RmsNormEps, hn, NewIn(store, n));
            return hn;
        }

        // One layer's forward from its input xIn: every activation its backward reads, allocated in store. The projections'
        // outputs o and down are freed once added to the residual stream (backward reads neither); lean, so are the norms'
        // outputs and the MLP's act = silu(gate) * up, which backward rebuilds from x_in, x_mid, gate and up (cheap
        // elementwise passes, where keeping them costs 2C + F floats a token a layer, about 40% of a dense layer's activations).
        LayerActivations ForwardLayer(int l, Tensor xIn, List<Tensor> store, bool lean)
        {
            var lw = w.Layers[l];
            var transient = new List<Tensor>();
            Tensor Alloc(params int[] shape) => NewIn(store, shape);
            Tensor Droppable(params int[] shape) => NewIn(lean ? transient : store, shape);
            ulong Seed(int slot) => SplitMix64.Mix(DropoutSeed ^ SplitMix64.Mix((ulong)(l * 8 + slot + 1)));
            // q, k, v in f32 until attention reads them, then (bf16 attention inputs) only their rounded copies are kept
            bool bf16Attention = KeepsBf16Attention(be, lw);
            var attentionInputs = bf16Attention ? new List<Tensor>() : store;
            var a = new LayerActivations
            {
                XIn = xIn, Rstd1 = Alloc(n), Hn1 = Droppable(n, c), Q = NewIn(attentionInputs, n, h * d), K = NewIn(attentionInputs, n, hkv * d),
                V = NewIn(attentionInputs, n, hkv * d), Attn = Alloc(n, h * d), Lse = Alloc(batch, h, t), XMid = Alloc(n, c), Rstd2 = Alloc(n),
                Hn2 = Droppable(n, c), XOut = Alloc(n, c),
            };
            LayerActivations Done()
            {
                Free(transient);
                if (lean) (a.Hn1, a.Hn2, a.Act) = (null, null, null);
                return a;
            }
            be.RmsNorm(a.XIn, lw.InputNorm, cfg.RmsNormEps, a.Hn1!, a.Rstd1);
            if (cfg.QkNorm)
            {
                a.QRaw = Alloc(n, h * d);
                a.KRaw = Alloc(n, hkv * d);
                a.RstdQ = Alloc(n * h);
                a.RstdK = Alloc(n * hkv);
            }
            Project(lw.Q, a.Hn1!, a.QRaw ?? a.Q, a, store, Seed(0));
            Project(lw.K, a.Hn1!, a.KRaw ?? a.K, a, store, Seed(1));
            if (cfg.QkNorm)
            {
                HeadNorm.Forward(be, a.QRaw!, lw.QNorm!, cfg.RmsNormEps, a.Q, a.RstdQ);
                HeadNorm.Forward(be, a.KRaw!, lw.KNorm!, cfg.RmsNormEps, a.K, a.RstdK);
            }
            Project(lw.V, a.Hn1!, a.V, a, store, Seed(2));
            be.Rope(View(a.Q, n, h, d), pos, rope);
            be.Rope(View(a.K, n, hkv, d), pos, rope);
            if (w.Prefix is { } prefix) VirtualTokens.OverwriteKv(be, prefix, l, a.K, a.V, batch);
            if (bf16Attention)
            {
                var (q, k, v) = (a.Q, a.K, a.V);
                (a.Q, a.K, a.V) = (NewBf16In(store, n, h * d), NewBf16In(store, n, hkv * d), NewBf16In(store, n, hkv * d));
                be.RoundToBf16(q, a.Q);
                be.RoundToBf16(k, a.K);
                be.RoundToBf16(v, a.V);
                Free(attentionInputs);
            }
            be.Attention(Args(a, batch, t, h, hkv, d, scale, keyMask, segments));
            var o = NewIn(transient, n, c);
            Project(lw.O, a.Attn, o, a, store, Seed(3));
            be.AddRmsNorm(a.XIn, o, a.XMid, lw.PostAttentionNorm, cfg.RmsNormEps, a.Hn2!, a.Rstd2);
            if (lw.Moe is { } moe)
            {
                MoeForward(l, moe, a, store);
                return Done();
            }
            if (KeepsBf16Mlp(be, lw))
            {
                // gate and up in f32, kept rounded to bf16; act from the rounded values, written over gate's f32 (act's buffer)
                var (gate, up) = (Droppable(n, f), NewIn(transient, n, f));
                Project(lw.Gate, a.Hn2!, gate, a, store, Seed(4));
                Project(lw.Up, a.Hn2!, up, a, store, Seed(5));
                (a.Gate, a.Up, a.Act) = (NewBf16In(store, n, f), NewBf16In(store, n, f), gate);
                be.SwiGluRounded(gate, up, gate, a.Gate, a.Up);
            }
            else
            {
                a.Gate = Alloc(n, f);
                a.Up = Alloc(n, f);
                a.Act = Droppable(n, f);
                Project(lw.Gate, a.Hn2!, a.Gate, a, store, Seed(4));
                Project(lw.Up, a.Hn2!, a.Up, a, store, Seed(5));
                be.SwiGlu(a.Gate, a.Up, a.Act!);
            }
            var down = NewIn(transient, n, c);
            Project(lw.Down, a.Act!, down, a, store, Seed(6));
            be.Add(a.XMid, down, a.XOut);
            return Done();
        }

        void Project(Projection p, Tensor input, Tensor y, LayerActivations a, List<Tensor> store, ulong seed)
        {
            int rows = input.Shape.Rows;
            if (p.Ia3 is { } ia3)
            {
                var z = ia3.Feedforward ? null : NewIn(store, rows, p.Out);
                if (z != null) a.Ia3[p] = z;
                p.ForwardIa3(be, ia3, input, y, z);
                return;
            }
            if (p.Lora is not { } lora)
            {
                p.ForwardBase(be, input, y);
                return;
            }
            var xa = NewIn(store, rows, lora.Rank);
            a.Xa[p] = xa;
            if (lora.Magnitude != null)
            {
                var norm = NewIn(store, p.Out);
                var z = NewIn(store, rows, p.Out);
                a.Dora[p] = (norm, z);
                p.DoraNorm(be, norm);
                if (!dropping)
                {
                    p.ForwardDora(be, input, y, xa, norm, z);
                    return;
                }
                var droppedX = NewIn(store, rows, p.In);
                be.Dropout(input, seed, LoraDropout, droppedX);
                a.Dropped[p] = (droppedX, seed);
                var forwardTemp = new List<Tensor>();
                var rest = NewIn(forwardTemp, rows, p.In); // x - x_d: what the base sees beyond the DoRA term
                be.CopyRows(droppedX, 0, rest, 0, rows);
                be.Scale(rest, -1f);
                be.Add(rest, input, rest);
                var doraTerm = NewIn(forwardTemp, rows, p.Out);
                p.ForwardDora(be, droppedX, doraTerm, xa, norm, z, addBias: false); // g z_d
                p.ForwardBase(be, rest, y);                                        // (x - x_d) W^T + b
                be.Add(y, doraTerm, y);
                Free(forwardTemp);
                return;
            }
            if (!dropping)
            {
                p.Forward(be, input, y, xa);
                return;
            }
            // y = x W^T + b + s (dropout(x) A^T) B^T: the base sees x, the LoRA branch the dropped copy.
            var dropped = NewIn(store, rows, p.In);
            be.Dropout(input, seed, LoraDropout, dropped);
            a.Dropped[p] = (dropped, seed);
            p.ForwardBase(be, input, y);
            be.Linear(dropped, lora.A, null, xa);
            var scaled = NewIn(store, rows, lora.Rank);
            be.CopyRows(xa, 0, scaled, 0, rows);
            be.Scale(scaled, lora.Scale);
            be.Linear(scaled, lora.B, null, y, accumulate: true);
        }

        void ProjectBackward(Projection p, Tensor dy, Tensor input, Tensor dInput, bool accumulate, LayerActivations a, Func<Tensor, Tensor?> grad)
        {
            if (p.Ia3 is { } ia3)
            {
                Ia3Backward(p, ia3, dy, input, dInput, accumulate, a, grad);
                return;
            }
            if (a.Dora.ContainsKey(p))
            {
                DoraBackward(p, dy, input, dInput, accumulate, a, grad);
                return;
            }
            p.BackwardBase(be, dy, input, dInput, accumulate, grad);
            if (p.Lora is not { } lora) return;
            if (!a.Dropped.TryGetValue(p, out var dropped))
            {
                be.LoraLinearBackward(dy, input, a.Xa[p], lora.A, lora.B, lora.Scale, dInput, grad(lora.A), grad(lora.B));
                return;
            }
            // d dropout(x) from the LoRA branch, then through the same mask into dx.
            var temp = new List<Tensor>();
            var dDropped = ZerosIn(temp, dy.Shape.Rows, p.In);
            be.LoraLinearBackward(dy, dropped.X, a.Xa[p], lora.A, lora.B, lora.Scale, dDropped, grad(lora.A), grad(lora.B));
            be.Dropout(dDropped, dropped.Seed, LoraDropout, dDropped);
            be.Add(dInput, dDropped, dInput);
            Free(temp);
        }

        // x_out = x_mid + moe(hn2) (MoeBlock's forward through Project, so LoRA, dropout, DoRA and IA3 keep what their backward reads).
        // Dropout seeds: slot 7 of the layer for the router, then one per expert projection from bit 32 up.
        void MoeForward(int l, MoeWeights moe, LayerActivations a, List<Tensor> store)
        {
            ulong Seed(int slot) => SplitMix64.Mix(DropoutSeed ^ SplitMix64.Mix((ulong)(l * 8 + slot + 1)));
            ulong ExpertSeed(int slot) => SplitMix64.Mix(DropoutSeed ^ SplitMix64.Mix(((ulong)(l + 1) << 32) + (uint)slot));
            int e = moe.Experts.Length, k = moe.TopK;
            var temp = new List<Tensor>();
            var logits = NewIn(store, n, e);
            Project(moe.Router, a.Hn2!, logits, a, store, Seed(7));
            var hostLogits = MoeBlock.HostValues(be, logits);
            var (chosen, weights) = MoeBlock.Route(hostLogits, n, e, k, moe.NormTopKProb);
            var m = a.Moe = new MoeActivations { Logits = hostLogits, Chosen = chosen, Weights = weights };
            var sum = ZerosIn(temp, n, c);
            for (int ex = 0; ex < e; ex++)
            {
                var slots = Enumerable.Range(0, n * k).Where(s => chosen[s] == ex).ToArray(); // ascending rows, as MoeBlock gathers them
                if (slots.Length == 0) continue;
                var rows = slots.Select(s => s / k).ToArray();
                var expert = moe.Experts[ex];
                int rowsE = rows.Length, fe = expert.Gate.Out;
                var expertTemp = new List<Tensor>();
                var xe = NewIn(expertTemp, rowsE, c);
                be.Embedding(a.Hn2!, rows, xe);
                var ea = new ExpertActivations(expert, rows, slots, NewIn(store, rowsE, fe), NewIn(store, rowsE, fe), NewIn(store, rowsE, fe), NewIn(store, rowsE, c));
                ExpertForward(ea, xe, ExpertSeed(ex * 3));
                var scaled = NewIn(expertTemp, rowsE, c);
                be.CopyRows(ea.Y, 0, scaled, 0, rowsE);
                be.ScaleRows(scaled, slots.Select(s => weights[s]).ToArray());
                be.EmbeddingBackward(scaled, rows, sum);
                m.Experts.Add(ea);
                Free(expertTemp);
            }
            if (moe.SharedExpert is { } shared && moe.SharedExpertGate is { } sharedGate)
            {
                var gateLogit = NewIn(store, n, 1);
                Project(sharedGate, a.Hn2!, gateLogit, a, store, ExpertSeed(e * 3 + 3));
                m.SharedSigmoid = MoeBlock.HostValues(be, gateLogit).Select(z => 1f / (1f + MathF.Exp(-z))).ToArray();
                int fs = shared.Gate.Out;
                var all = Enumerable.Range(0, n).ToArray();
                var sa = m.Shared = new ExpertActivations(shared, all, all, NewIn(store, n, fs), NewIn(store, n, fs), NewIn(store, n, fs), NewIn(store, n, c));
                ExpertForward(sa, a.Hn2!, ExpertSeed(e * 3));
                var scaled = NewIn(temp, n, c);
                be.CopyRows(sa.Y, 0, scaled, 0, n);
                be.ScaleRows(scaled, m.SharedSigmoid);
                be.Add(sum, scaled, sum);
            }
            be.Add(a.XMid, sum, a.XOut);
            Free(temp);

            // y = down(silu(gate x) * up x) over the expert's rows x [m,C]
            void ExpertForward(ExpertActivations ea, Tensor x, ulong seed)
            {
                Project(ea.Expert.Gate, x, ea.Gate, a, store, SplitMix64.Mix(seed));
                Project(ea.Expert.Up, x, ea.Up, a, store, SplitMix64.Mix(seed + 1));
                be.SwiGlu(ea.Gate, ea.Up, ea.Act);
                Project(ea.Expert.Down, ea.Act, ea.Y, a, store, SplitMix64.Mix(seed + 2));
            }
        }

        // dHn[N,C] = d hn2 of x_out = x_mid + moe(hn2), dy = d x_out. Each routed expert: its rows' dy times the routing weight
        // through its SwiGLU back to its gathered input, scattered into dHn; the weights' gradient dw[n,j] = dy[n] . y_j[n]
        // goes back through the renormalisation (w = p / S over the chosen: dp_j = (dw_j - sum_i dw_i w_i) / S) and the
        // softmax (dz_e = p_e (dp_e - sum_f dp_f p_f), dp = 0 off the chosen: top-k's choice has no gradient) to the
        // router's logits, and through the router to dHn. The shared expert: dy * sigmoid(g) through its SwiGLU, and
        // dg = (dy . y_s) s (1 - s) through its gate.
        void MoeBackward(MoeWeights moe, MoeActivations m, Tensor dy, Tensor hn, Tensor dHn, LayerActivations a, Func<Tensor, Tensor?> grad)
        {
            int e = moe.Experts.Length, k = moe.TopK;
            var temp = new List<Tensor>();
            var dyHost = MoeBlock.HostValues(be, dy);
            var dw = new float[n * k];
            foreach (var ea in m.Experts)
            {
                var y = MoeBlock.HostValues(be, ea.Y);
                for (int i = 0; i < ea.Rows.Length; i++) dw[ea.Slots[i]] = RowDot(dyHost, ea.Rows[i], y, i, c);
            }
            var dLogits = new float[n * e];
            var p = new float[e];
            var dp = new float[e];
            for (int i = 0; i < n; i++)
            {
                MoeBlock.Softmax(m.Logits.AsSpan(i * e, e), p);
                Array.Clear(dp);
                float picked = 0, weighted = 0;
                for (int j = 0; j < k; j++)
                {
                    picked += p[m.Chosen[i * k + j]];
                    weighted += dw[i * k + j] * m.Weights[i * k + j];
                }
                for (int j = 0; j < k; j++)
                    dp[m.Chosen[i * k + j]] = moe.NormTopKProb ? (dw[i * k + j] - weighted) / picked : dw[i * k + j];
                float dot = 0;
                for (int x = 0; x < e; x++) dot += dp[x] * p[x];
                for (int x = 0; x < e; x++) dLogits[i * e + x] = p[x] * (dp[x] - dot);
                if (auxGrad == null || !aux!.Counted[i]) continue;
                // the load-balancing loss through this token's softmax: d logits += p (g - p . g)
                float pg = 0;
                for (int x = 0; x < e; x++) pg += p[x] * auxGrad[x];
                for (int x = 0; x < e; x++) dLogits[i * e + x] += p[x] * (auxGrad[x] - pg);
            }
            var dLogitsT = Track(temp, be.FromHost(Tensor.FromFloats(new Shape(n, e), dLogits, "d_router_logits")));
            ProjectBackward(moe.Router, dLogitsT, hn, dHn, false, a, grad);
            Free(temp);
            foreach (var ea in m.Experts)
            {
                int rowsE = ea.Rows.Length;
                var dyE = NewIn(temp, rowsE, c);
                be.Embedding(dy, ea.Rows, dyE);
                be.ScaleRows(dyE, ea.Slots.Select(s => m.Weights[s]).ToArray());
                var xe = NewIn(temp, rowsE, c);
                be.Embedding(hn, ea.Rows, xe);
                var dXe = NewIn(temp, rowsE, c);
                ExpertBackward(ea, dyE, xe, dXe, false);
                be.EmbeddingBackward(dXe, ea.Rows, dHn);
                Free(temp); // one expert's buffers at a time
            }
            if (m.Shared is { } sa)
            {
                var s = m.SharedSigmoid!;
                var y = MoeBlock.HostValues(be, sa.Y);
                var dg = new float[n];
                for (int i = 0; i < n; i++) dg[i] = RowDot(dyHost, i, y, i, c) * s[i] * (1 - s[i]);
                var dgT = Track(temp, be.FromHost(Tensor.FromFloats(new Shape(n, 1), dg, "d_shared_expert_gate")));
                ProjectBackward(moe.SharedExpertGate!, dgT, hn, dHn, true, a, grad);
                var dyS = NewIn(temp, n, c);
                be.CopyRows(dy, 0, dyS, 0, n);
                be.ScaleRows(dyS, s);
                ExpertBackward(sa, dyS, hn, dHn, true);
            }
            Free(temp);

            // dx[m,C] (+)= d of down(silu(gate x) * up x) given its output's gradient dyE [m,C]
            void ExpertBackward(ExpertActivations ea, Tensor dyE, Tensor x, Tensor dx, bool accumulate)
            {
                int rowsE = dyE.Shape.Rows, fe = ea.Expert.Gate.Out;
                var dAct = NewIn(temp, rowsE, fe);
                var dG = NewIn(temp, rowsE, fe);
                var dU = NewIn(temp, rowsE, fe);
                ProjectBackward(ea.Expert.Down, dyE, ea.Act, dAct, false, a, grad);
                be.SwiGluBackward(dAct, ea.Gate, ea.Up, dG, dU);
                ProjectBackward(ea.Expert.Gate, dG, x, dx, accumulate, a, grad);
                ProjectBackward(ea.Expert.Up, dU, x, dx, true, a, grad);
            }
        }
    }

    // y = m / norm * z + bias: dm += sum_t dy z / norm, then dz = m / norm * dy goes through the base (dx = dz W)
    // and the LoRA branch (dA, dB, dx += s (dz B) A). With dropout, y = (x - x_d) W^T + b + m / norm * z_d:
    // dx = dy W + dropout(d x_d) with d x_d = (dz - dy) W + s (dz B) A. The base weight and bias stay frozen.
    private void DoraBackward(Projection p, Tensor dy, Tensor input, Tensor dInput, bool accumulate, LayerActivations a, Func<Tensor, Tensor?> grad)
    {
        var be = Decoder.Backend;
        var lora = p.Lora!;
        var (norm, z) = a.Dora[p];
        if (grad(p.Weight) != null || (p.Bias != null && grad(p.Bias) != null))
            throw new TemperException($"{p.Name}: DoRA trains its magnitude and LoRA matrices over a frozen base; the base weight and bias cannot be trained with it");
        if (grad(lora.Magnitude!) is { } dm) be.DoraMagnitudeBackward(dy, z, norm, dm);
        using var dz = be.Uninitialized(dy.Shape);
        be.DoraScale(dy, lora.Magnitude!, norm, null, dz);
        if (!a.Dropped.TryGetValue(p, out var dropped))
        {
            p.BackwardBase(be, dz, input, dInput, accumulate, grad);
            be.LoraLinearBackward(dz, input, a.Xa[p], lora.A, lora.B, lora.Scale, dInput, grad(lora.A), grad(lora.B));
            return;
        }
        using var dzMinusDy = be.Uninitialized(dy.Shape);
        be.CopyRows(dy, 0, dzMinusDy, 0, dy.Shape.Rows);
        be.Scale(dzMinusDy, -1f);
        be.Add(dzMinusDy, dz, dzMinusDy);
        using var dDropped = be.Uninitialized(input.Shape);
        p.BackwardBase(be, dy, input, dInput, accumulate, grad);
        p.BackwardBase(be, dzMinusDy, dropped.X, dDropped, false, grad);
        be.LoraLinearBackward(dz, dropped.X, a.Xa[p], lora.A, lora.B, lora.Scale, dDropped, grad(lora.A), grad(lora.B));
        be.Dropout(dDropped, dropped.Seed, LoraDropout, dDropped);
        be.Add(dInput, dDropped, dInput);
    }

    // Output scaling, y = z * l: dl += sum_n dy z, dz = dy * l through the base. Input scaling, y = (x * l) W^T + b:
    // g = dy W, dl += sum_n x g, dx (+)= g * l. DoRA's column-scaling ops with a unit norm do both.
    private void Ia3Backward(Projection p, Ia3View ia3, Tensor dy, Tensor input, Tensor dInput, bool accumulate, LayerActivations a, Func<Tensor, Tensor?> grad)
    {
        var be = Decoder.Backend;
        if (grad(p.Weight) != null || (p.Bias != null && grad(p.Bias) != null))
            throw new TemperException($"{p.Name}: (IA)^3 trains its scaling vector over a frozen base; the base weight and bias cannot be trained with it");
        var dl = grad(ia3.Vector);
        if (!ia3.Feedforward)
        {
            if (dl != null) be.DoraMagnitudeBackward(dy, a.Ia3[p], ia3.Ones, dl);
            using var dz = be.Uninitialized(dy.Shape);
            be.DoraScale(dy, ia3.Vector, ia3.Ones, null, dz);
            p.BackwardBase(be, dz, input, dInput, accumulate, grad);
            return;
        }
        using var g = be.Uninitialized(input.Shape);
        p.BackwardBase(be, dy, input, g, false, grad);
        if (dl != null) be.DoraMagnitudeBackward(g, input, ia3.Ones, dl);
        be.DoraScale(g, ia3.Vector, ia3.Ones, null, g);
        if (accumulate) be.Add(dInput, g, dInput);
        else be.CopyRows(g, 0, dInput, 0, input.Shape.Rows);
    }

    // Which rows of [B,T] the load-balancing loss counts: mask 1 (all when no mask), not prefix tuning's P virtual rows per sequence.
    private static bool[] AuxCountedRows(ReadOnlySpan<int> mask, int n, int t, int prefixRows)
    {
        var counted = new bool[n];
        for (int i = 0; i < n; i++) counted[i] = (mask.IsEmpty || mask[i] != 0) && i % t >= prefixRows;
        return counted;
    }

    /// <summary>transformers' load_balancing_loss_func over the sparse layers' router logits [N,E] of one pass: per expert, how
    /// often it is among the counted tokens' top k and its summed routing probability, over Pairs (layer, token) pairs.</summary>
    private sealed class RouterAuxStats(int experts, bool[] counted)
    {
        public bool[] Counted { get; } = counted;
        public long Pairs { get; private set; }
        private readonly double[] _chosen = new double[experts], _prob = new double[experts];

        public void Add(float[] logits, int[] chosen, int k)
        {
            var p = new float[experts];
            for (int i = 0; i < Counted.Length; i++)
            {
                if (!Counted[i]) continue;
                MoeBlock.Softmax(logits.AsSpan(i * experts, experts), p);
                for (int e = 0; e < experts; e++) _prob[e] += p[e];
                for (int j = 0; j < k; j++) _chosen[chosen[i * k + j]]++;
                Pairs++;
            }
        }

        /// <summary>E sum_e f[e] P[e] (0 when no token is counted).</summary>
        public double Loss()
        {
            if (Pairs == 0) return 0;
            double sum = 0;
            for (int e = 0; e < experts; e++) sum += _chosen[e] / Pairs * (_prob[e] / Pairs);
            return experts * sum;
        }

        /// <summary>coef x d aux / d p[e] of one counted token's probabilities: coef E f[e] / M.</summary>
        public float[] Gradient(double coef) => _chosen.Select(c => (float)(coef * experts * (c / Pairs) / Pairs)).ToArray();
    }

    // a[row i] . b[row j] over rows of width c, accumulated in f64
    private static float RowDot(float[] a, int i, float[] b, int j, int c)
    {
        double sum = 0;
        for (int x = 0; x < c; x++) sum += (double)a[i * c + x] * b[j * c + x];
        return (float)sum;
    }

    private static AttentionArgs Args(LayerActivations a, int b, int t, int h, int hkv, int d, float scale, ReadOnlyMemory<int> mask, ReadOnlyMemory<int> segments) =>
        new(View4(a.Q, b, t, h, d), View4(a.K, b, t, hkv, d), View4(a.V, b, t, hkv, d), View4(a.Attn, b, t, h, d), t, 0, scale, mask, a.Lse, segments);

    private static Tensor View(Tensor x, int n, int heads, int d) => new(new Shape(n, heads, d), x.DType, x.Storage, x.Name);
    private static Tensor View4(Tensor x, int b, int len, int heads, int d) => new(new Shape(b, len, heads, d), x.DType, x.Storage, x.Name);
}
