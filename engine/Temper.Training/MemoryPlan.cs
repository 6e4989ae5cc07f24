// The memory a training run needs, predicted from config.json and the run's settings before it starts
// (`temper plan`, and the line a trainer prints beside its measured peak):
//   weights      embedding, norms, biases, lm_head (untied) in their held dtype; the layers'
//                projections in that dtype, or NF4 (codes + double-quantised scales) with QLoRA
//   adapters     the trained parameters and their gradients (LoRA A/B and DoRA's magnitudes, IA3's vectors, a prompt-tuning adapter's
//                virtual token embeddings [P,C] or a prefix's keys and values [L][2][P,Hkv*D], or every weight for --full), f32;
//                modules_to_save copies of the embedding / LM head ([V,C] each) are weights, parameters and gradients at once
//   optimizer    AdamW's two moments per trained parameter, f32
//   activations  what DecoderBackprop holds for one micro-batch of B x T tokens (n = B*T, or B*(P+T) with P virtual tokens), f32:
//                per layer its norms' 1/rms, q/k/v (and Qwen3's q, k before their head norms
//                with 1/rms per head), attention output and log-sum-exp,
//                residual stream (x_mid, x_out), gate/up (bf16 where the backend keeps a bf16 model's MLP so) and each LoRA's x A^T (DoRA: and its unscaled
//                product [n, Out]); the norms' outputs and act = silu(gate) * up are dropped and rebuilt in backward,
//                one layer's at a time (a norm's [n, C + 1] more there; act in the buffer d up then overwrites); then the final
//                norm, losses and every backward buffer. With gradient checkpointing a layer keeps only
//                its input and one layer's activations are rebuilt at a time (with its norms' outputs and act).
//                A mixture-of-experts layer keeps, in place of gate/up/act, its router logits [n,E] and each expert's
//                gate/up/act [m,F] and output [m,C] over its m tokens (n*k rows in all; Qwen2-MoE's shared expert over all n),
//                and rebuilds one expert's gradient buffers at a time in backward (taken at twice the mean load, n*k/E);
//                an expert projection's LoRA x A^T counts its share of the rows, k/E of n.
//   workspace    the largest transient: a LoRA branch's [n, Out] term, DoRA's scaled gradient [n, Out] (and
//                with QLoRA its dequantised weight [Out, In] for the norm), and the CPU NF4 linear's slab of
//                dequantised rows, at most 4 MiB; on the CUDA C++ kernels also their bf16 copy of the largest
//                activation or output gradient a product reads, [n, max(In, Out)] bf16; and the fused LM head + cross-entropy's
//                scratch where the backend keeps it for the run (a device arena: its vocabulary chunk's logits, and with a frozen
//                head the [n, C] accumulator)
using Temper.Core.Quantization;
using Temper.Models;

namespace Temper.Training;

public sealed record MemoryPlanOptions(
    int Batch, int Length, bool QLora = false, bool Full = false, LoraConfig? Lora = null,
    bool GradientCheckpointing = false, int MatrixBytes = 4, int EmbeddingBytes = 4, int VirtualTokens = 0, bool PrefixTuning = false)
{
    /// <summary>How many of embed_tokens and lm_head are trained as modules_to_save copies (0, 1 or 2), each an f32 [V,C].</summary>
    public int ModulesToSave { get; init; }
    /// <summary>An (IA)^3 adapter: one f32 vector per targeted projection, [Out] (keeping the base output [n, Out]) or [In] (feedforward).</summary>
    public Ia3Config? Ia3 { get; init; }
    /// <summary>The products run on the CUDA C++ kernels, which keep a bf16 copy of the largest activation (or output gradient) a
    /// product has read, [n, max(In, Out)] (CudaLinear's scratch; IMemoryMeter.HoldsBf16ProductCopies).</summary>
    public bool Bf16ProductCopies { get; init; }
    /// <summary>The dense MLPs keep gate and up [n,F] in bf16 (a device backend over bf16 weights: DecoderBackprop.KeepsBf16Mlp), not f32.</summary>
    public bool Bf16MlpActivations { get; init; }
    /// <summary>The attentions keep q, k and v in bf16 (a device backend over bf16 weights: DecoderBackprop.KeepsBf16Attention), not f32.</summary>
    public bool Bf16AttentionInputs { get; init; }
    /// <summary>The fused LM head + cross-entropy's scratch for (rows, hidden, vocab, onePass) that the backend keeps for the run
    /// (IMemoryMeter.LmHeadScratchBytes: the ILGPU arena's); null: none.</summary>
    public Func<int, int, int, bool, long>? LmHeadScratchBytes { get; init; }
}

public sealed record MemoryPlan(long Weights, long Adapters, long Optimizer, long Activations, long Workspace)
{
    public long Total => Weights + Adapters + Optimizer + Activations + Workspace;

    public static MemoryPlan For(ModelConfig cfg, MemoryPlanOptions o)
    {
        long c = cfg.HiddenSize, f = cfg.IntermediateSize, qd = (long)cfg.NumHeads * cfg.HeadDim, kvd = (long)cfg.NumKvHeads * cfg.HeadDim;
        long v = cfg.VocabSize, layers = cfg.NumLayers, n = (long)o.Batch * (o.Length + o.VirtualTokens);
        var shapes = ModelWeights.ProjectionShapes(cfg);
        double RowShare(string name) => cfg.Moe is { } m && name.Contains(".experts.", StringComparison.Ordinal) ? (double)m.TopK / m.Experts : 1;

        long vectors = (2 * layers + 1) * c;
        if (cfg.AttentionBias) vectors += layers * (qd + 2 * kvd);
        if (cfg.OutputBias) vectors += layers * c;
        if (cfg.MlpBias) vectors += layers * (2 * f + c);
        if (cfg.QkNorm) vectors += layers * 2 * cfg.HeadDim;
        long weights = v * c * o.EmbeddingBytes * (cfg.TieWordEmbeddings ? 1 : 2) + 4 * vectors;
        foreach (var s in shapes.Values) weights += o.QLora ? Nf4Weight.BytesFor(s.Elements) : s.Elements * o.MatrixBytes;

        long trained = (long)o.VirtualTokens * (o.PrefixTuning ? 2 * layers * kvd : c);
        double loraRows = 0;
        if (o.Full) trained = v * c * (cfg.TieWordEmbeddings ? 1 : 2) + vectors + shapes.Values.Sum(s => s.Elements);
        else if (o.Lora is { } lora)
            foreach (var (name, s) in shapes)
                if (lora.Targets(name[..^".weight".Length]))
                {
                    trained += (long)lora.Rank * (s[0] + s[1]) + (lora.UseDora ? s[0] : 0);
                    loraRows += (lora.Rank + (lora.UseDora ? s[0] : 0)) * RowShare(name); // x A^T [n, r] (and DoRA's z [n, Out]) kept per adapted projection
                }

        if (!o.Full && o.Lora == null && o.Ia3 is { } ia3)
            foreach (var (name, s) in shapes)
                if (ia3.Targets(name[..^".weight".Length]))
                {
                    bool ff = ia3.IsFeedforward(name[..^".weight".Length]);
                    trained += ff ? s[1] : s[0];
                    loraRows += (ff ? 0 : s[0]) * RowShare(name); // the base output z [n, Out] kept for dl
                }

        if (!o.Full) trained += o.ModulesToSave * v * c; // each copy: 4 bytes of value + 4 of gradient, 8 of moments

        long headNorms = cfg.QkNorm ? qd + kvd : 0; // q and k before their head norms (and, below, their gradients)
        long attentionInputs = o.Bf16AttentionInputs ? (qd + 2 * kvd) / 2 : qd + 2 * kvd; // q, k, v (4 bytes a unit; the head dim is even)
        long attention = n * (2 + 2 * c + qd + attentionInputs + cfg.NumHeads + (cfg.QkNorm ? headNorms + cfg.NumHeads + cfg.NumKvHeads : 0));
        var moeSpec = cfg.Moe;
        // the norms' outputs and act, rebuilt in backward (with bf16 gate and up, a recomputed layer also holds up's f32 product
        // while it rounds them, beside act, which is written over gate's f32 product)
        long Dropped(int l) => n * (2 * c + (moeSpec?.IsSparse(l) != true ? (o.Bf16MlpActivations ? 2 * f : f) : 0));
        long MlpKept(int l) => moeSpec?.IsSparse(l) != true ? (o.Bf16MlpActivations ? n * f : n * 2 * f) // gate and up: 4 bytes a unit here
            : n * (moeSpec.Experts + moeSpec.TopK * (3L * moeSpec.ExpertIntermediateSize + c))
              + (moeSpec.SharedExpertIntermediateSize > 0 ? n * (3L * moeSpec.SharedExpertIntermediateSize + c + 1) : 0);
        var perLayer = Enumerable.Range(0, (int)layers).Select(l => attention + MlpKept(l)).ToArray();
        long loraActs = (long)(n * loraRows);
        long kept = o.GradientCheckpointing
            ? layers * n * c + Enumerable.Range(0, (int)layers).Select(l => perLayer[l] + Dropped(l)).DefaultIfEmpty().Max() + loraActs / Math.Max(1, layers)
            : perLayer.Sum() + loraActs;
        long final = n * (2 + 2 * c);
        bool anyDense = moeSpec == null || Enumerable.Range(0, (int)layers).Any(l => !moeSpec.IsSparse(l));
        long moeBackward = moeSpec == null ? 0 : Math.Max(n * moeSpec.Experts,
            Math.Min(n, 2 * n * moeSpec.TopK / moeSpec.Experts) * 3 * (c + moeSpec.ExpertIntermediateSize)
            + (moeSpec.SharedExpertIntermediateSize > 0 ? n * (c + 1 + 3L * moeSpec.SharedExpertIntermediateSize) : 0));
        long rebuilt = o.GradientCheckpointing ? 0 : n * (c + 1); // one layer's norm output and 1/rms (act is rebuilt into d up's buffer)
        long backward = n * (2 * c + (anyDense ? 2 * f : 0) + 2 * qd + 2 * kvd + headNorms) + moeBackward + rebuilt;
        long activations = 4 * (n * c + kept + final + backward);

        long maxOut = shapes.Values.Max(s => (long)s[0]);
        long slab = o.QLora ? 4 * shapes.Values.Max(s => Math.Min(s.Elements, 1L << 20)) : 0; // the CPU NF4 linear's dequantised rows
        bool dora = o.Lora is { UseDora: true };
        long doraWork = dora ? 4 * n * maxOut + (o.QLora ? 4 * shapes.Values.Max(s => s.Elements) : 0) : 0;
        long ia3Work = o.Ia3 != null ? 4 * n * shapes.Values.Max(s => (long)s[1]) : 0; // the scaled input or gradient [n, In]
        long productCopy = o.Bf16ProductCopies ? 2 * n * Math.Max(maxOut, shapes.Values.Max(s => (long)s[1])) : 0;
        // Full fine-tuning asks the LM head for dLmHead too (two passes, no accumulator); a trained lm_head copy does as well,
        // which this counts as one pass (an accumulator more).
        long lmHead = o.LmHeadScratchBytes?.Invoke((int)Math.Min(n, int.MaxValue), (int)c, (int)v, !o.Full) ?? 0;
        long workspace = (o.Lora != null ? 4 * n * maxOut : 0) + doraWork + ia3Work + slab + productCopy + lmHead;
        return new MemoryPlan(weights, (o.Full ? 4 : 8) * trained, 8 * trained, activations, workspace); // --full: the weights are the parameters
    }

    /// <summary>
    /// Bytes of the host-memory tensors a loaded model holds (weights, NF4 codes and scales, LoRA A/B, modules_to_save copies):
    /// on the CPU backend these are shared, not allocated, so its meter does not count them; a device
    /// backend's meter counts its uploaded copies itself, and they are not host tensors.
    /// </summary>
    public static long HostHeldBytes(ModelWeights w)
    {
        static long Of(Core.Tensor? t) => t is { IsHost: true } ? t.ByteCount : 0;
        long b = Of(w.BaseEmbed) + Of(w.FinalNorm) + Of(w.PromptEmbeddings) + (ReferenceEquals(w.LmHead.BaseWeight, w.BaseEmbed) ? 0 : Of(w.LmHead.BaseWeight))
            + Of(w.EmbedReplacement) + Of(w.LmHead.Replacement);
        foreach (var l in w.Layers) b += l.Norms.Sum(n => Of(n.Weight));
        foreach (var p in w.Projections)
        {
            b += (p.Nf4 is { } q ? Of(q.Codes) + Of(q.AbsmaxCodes) + Of(q.AbsmaxScales) : Of(p.Weight)) + Of(p.Bias);
            if (p.Lora is { } lora) b += Of(lora.A) + Of(lora.B) + Of(lora.Magnitude);
            if (p.Ia3 is { } ia3) b += Of(ia3.Vector) + Of(ia3.Ones);
        }
        return b;
    }

    public static string Bytes(long b) => b switch
    {
        >= 1L << 30 => $"{b / (double)(1L << 30):F2} GiB",
        >= 1L << 20 => $"{b / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{b / 1024.0:F1} KiB",
        _ => $"{b} B",
    };

    public override string ToString() =>
        $"{Bytes(Total)} (weights {Bytes(Weights)}, adapters+grads {Bytes(Adapters)}, optimizer {Bytes(Optimizer)}, activations {Bytes(Activations)}, workspace {Bytes(Workspace)})";
}

/// <summary>
/// A run's predicted memory beside what it measured: MeasuredPeak is the peak of the backend's counted
/// allocations (IMemoryMeter: gradients, optimizer state, activations, LoRA terms, and on a device
/// backend the uploaded weights) plus the host tensors the model shares with the CPU backend; null on
/// a backend without a meter. ProcessPeak is the OS's peak working set of the whole process (runtime,
/// JIT and not-yet-collected garbage included).
/// </summary>
public sealed record MemoryReport(MemoryPlan Predicted, long? MeasuredPeak, long ProcessPeak)
{
    public override string ToString() =>
        $"memory: predicted {Predicted} for the largest micro-batch; measured peak {(MeasuredPeak is long m ? MemoryPlan.Bytes(m) + Against(m) : "n/a on this backend")}; process peak working set {MemoryPlan.Bytes(ProcessPeak)}";

    private string Against(long measured)
    {
        double pct = (measured - Predicted.Total) * 100.0 / Math.Max(1, Predicted.Total);
        return System.FormattableString.Invariant($", {Math.Abs(pct):F1}% {(pct < 0 ? "below" : "above")} the prediction");
    }
}
