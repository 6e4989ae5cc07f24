// The decoder's parameters, read by HF name from a safetensors model folder and placed on a backend.
// Linear weights keep their stored dtype where the backend computes with it (f32, bf16); f16 and f64
// weights and every norm vector and bias are widened to f32 once at load. For QLoRA (nf4: true) the
// seven projections of every layer are NF4-quantised (Nf4Weight) once and kept in DIR/temper-nf4.safetensors
// (Nf4ModelFile) for the next load; the embedding, norms, biases and lm_head stay as stored. A bitsandbytes
// 4-bit checkpoint's quantised projections are read as they are saved (Bnb4BitWeights), its other modules dense.
// A mixture-of-experts layer (Mixtral, Qwen3-MoE, Qwen2-MoE; ModelConfig.Moe) holds a router and E experts (MoeWeights,
// and Qwen2-MoE's gated shared expert) in place of the dense gate/up/down; each expert tensor is read by its HF name and
// checked against config.json. Its router, experts and shared expert (and that expert's gate) are linear layers like the
// others: --qlora quantises them all, as transformers' bitsandbytes integration replaces every nn.Linear but lm_head
// (the router included), and a bitsandbytes checkpoint holds each in NF4 or dense as its own tensors say.
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Core.SafeTensors;

namespace Temper.Models;

public sealed class LayerWeights
{
    public required Tensor InputNorm { get; init; }      // [C]
    public required Projection Q { get; init; }          // [H*D, C]
    public required Projection K { get; init; }          // [Hkv*D, C]
    public required Projection V { get; init; }          // [Hkv*D, C]
    public required Projection O { get; init; }          // [C, H*D]
    public required Tensor PostAttentionNorm { get; init; } // [C]
    private readonly Projection? _gate, _up, _down;
    public Projection Gate { get => _gate ?? throw NoDenseMlp("gate_proj"); init => _gate = value; }  // [F, C]
    public Projection Up { get => _up ?? throw NoDenseMlp("up_proj"); init => _up = value; }          // [F, C]
    public Projection Down { get => _down ?? throw NoDenseMlp("down_proj"); init => _down = value; }  // [C, F]
    /// <summary>A mixture-of-experts MLP in place of gate/up/down (the sparse layers of Mixtral, Qwen3-MoE, Qwen2-MoE), or null.</summary>
    public MoeWeights? Moe { get; init; }
    public Tensor? QNorm { get; init; }                   // [D] (Qwen3: each query head's RMSNorm, before RoPE)
    public Tensor? KNorm { get; init; }                   // [D] (Qwen3: each key head's RMSNorm)

    public IEnumerable<Projection> Projections => Moe == null ? [Q, K, V, O, Gate, Up, Down] : new[] { Q, K, V, O }.Concat(Moe.Projections);

    private TemperException NoDenseMlp(string name) =>
        new($"{Q.Name[..^"self_attn.q_proj".Length]}mlp.{name}: this layer has a mixture-of-experts MLP (router and experts), not a dense one");

    /// <summary>The layer's norm weights by HF name within the layer (input_layernorm.weight, ...).</summary>
    public IEnumerable<(string Name, Tensor Weight)> Norms
    {
        get
        {
            yield return ("input_layernorm.weight", InputNorm);
            yield return ("post_attention_layernorm.weight", PostAttentionNorm);
            if (QNorm != null) yield return ("self_attn.q_norm.weight", QNorm);
            if (KNorm != null) yield return ("self_attn.k_norm.weight", KNorm);
        }
    }
}

public sealed class ModelWeights : IDisposable
{
    private readonly SafetensorsModel? _file;
    private IDisposable? _nf4File;

    private ModelWeights(SafetensorsModel? file, Tensor embed, LayerWeights[] layers, Tensor finalNorm, Projection lmHead)
    {
        _file = file;
        _embed = embed;
        Layers = layers;
        FinalNorm = finalNorm;
        LmHead = lmHead;
    }

    private readonly Tensor _embed;
    public Tensor Embed => EmbedReplacement ?? _embed; // [V, C]
    /// <summary>The model's own embedding, whatever stands in for it.</summary>
    public Tensor BaseEmbed => _embed;
    /// <summary>A full copy [V,C] that stands in for the embedding while set (PEFT modules_to_save on embed_tokens, see
    /// ModulesToSave); a tied head keeps reading the base embedding. Disposed with the weights when attached then.</summary>
    public Tensor? EmbedReplacement { get; set; }
    public LayerWeights[] Layers { get; }
    public Tensor FinalNorm { get; }          // [C]
    public Projection LmHead { get; }         // [V, C] (the embedding itself when tied)

    /// <summary>
    /// A prompt-tuning adapter's virtual token embeddings [P, C] (f32, on the backend; null = none), which the
    /// decoder's passes put before every sequence (see VirtualTokens). Like a LoRA view it is attached to the
    /// frozen weights, and its owner (the adapter's loader or the training run) disposes it.
    /// </summary>
    public Tensor? PromptEmbeddings { get; set; }

    /// <summary>
    /// A prefix-tuning adapter's key and value rows per layer (null = none): every query attends to them before the
    /// real tokens (see VirtualTokens). Attached and disposed like PromptEmbeddings.
    /// </summary>
    public PrefixKv? Prefix { get; set; }

    /// <summary>How many virtual tokens the attached prompt- or prefix-tuning adapter puts before each sequence (0 = none).</summary>
    public int VirtualTokenCount => PromptEmbeddings?.Shape[0] ?? Prefix?.Tokens ?? 0;

    public IEnumerable<Projection> Projections => Layers.SelectMany(l => l.Projections);

    /// <summary>
    /// Reads the weights; <paramref name="matrixDType"/> (f32 or bf16) converts every weight matrix, null
    /// keeps the stored type. nf4 quantises the layers' projections (QLoRA), reusing DIR/temper-nf4.safetensors.
    /// A bitsandbytes 4-bit checkpoint (config.json quantization_config) keeps its quantised projections in NF4
    /// whatever nf4 says (Bnb4BitWeights), unless <paramref name="dequantize"/> asks for dense copies of their exact
    /// values (in matrixDType, else bf16 for a bfloat16 compute dtype, else f32), as merging into the base needs.
    /// </summary>
    public static ModelWeights Load(string dir, ModelConfig cfg, IBackend be, DType? matrixDType = null, bool nf4 = false, bool dequantize = false)
    {
        if (matrixDType is not (null or DType.F32 or DType.BF16)) throw new TemperException($"weights can be held as f32 or bf16, not {matrixDType}");
        var file = SafetensorsModel.Open(dir);
        IDisposable? nf4File = null;
        try
        {
            var bnb = cfg.Bnb4Bit;
            var reader = new WeightReader(file, be, dir, matrixDType,
                bnb != null && dequantize ? (bnb.ComputeDType == "bfloat16" ? DType.BF16 : DType.F32) : null);
            bool hasHead = file.Contains("lm_head.weight");
            // A *ForSequenceClassification folder (a reward model) has a score head instead of lm_head;
            // the embedding stands in for the unused LM head.
            bool classifier = cfg.Architecture.EndsWith("ForSequenceClassification", StringComparison.Ordinal);
            if (!cfg.TieWordEmbeddings && !hasHead && !classifier) throw new TemperException($"{dir}: tensor 'lm_head.weight' missing and tie_word_embeddings is false");
            if (bnb != null && (Bnb4BitWeights.IsQuantized(file, "lm_head.weight") || Bnb4BitWeights.IsQuantized(file, "model.embed_tokens.weight")))
                throw new TemperException($"{dir}: a quantised embedding or lm_head is not supported; Temper reads bitsandbytes checkpoints whose layers' projections are quantised");
            Func<string, int, int, Nf4Weight?>? quantized = null;
            if (bnb != null)
            {
                if (!dequantize)
                    quantized = (name, rows, cols) => Bnb4BitWeights.IsQuantized(file, name) ? Bnb4BitWeights.Read(file, name, new Shape(rows, cols)).To(be) : null;
            }
            else if (nf4)
            {
                var (weights, owner) = QuantizedProjections(dir, cfg, file, reader);
                nf4File = owner;
                quantized = (name, _, _) => weights[name].To(be);
            }
            var w = Build(cfg, file, reader.Matrix, reader.Vector, untiedHead: !cfg.TieWordEmbeddings && hasHead, quantized);
            w._nf4File = nf4File;
            return w;
        }
        catch
        {
            nf4File?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <summary>The HF names and [Out,In] shapes of every layer projection's weight: attention and the dense MLP, or in a
    /// mixture-of-experts layer the router, each expert's three projections and Qwen2-MoE's shared expert and its gate.</summary>
    public static Dictionary<string, Shape> ProjectionShapes(ModelConfig cfg)
    {
        int c = cfg.HiddenSize, f = cfg.IntermediateSize, q = cfg.NumHeads * cfg.HeadDim, kv = cfg.NumKvHeads * cfg.HeadDim;
        var r = new Dictionary<string, Shape>(StringComparer.Ordinal);
        for (int i = 0; i < cfg.NumLayers; i++)
        {
            string p = $"model.layers.{i}.";
            r[p + "self_attn.q_proj.weight"] = new Shape(q, c);
            r[p + "self_attn.k_proj.weight"] = new Shape(kv, c);
            r[p + "self_attn.v_proj.weight"] = new Shape(kv, c);
            r[p + "self_attn.o_proj.weight"] = new Shape(c, q);
            if (cfg.Moe is { } moe && moe.IsSparse(i))
            {
                string m = p + moe.Module + ".";
                int fe = moe.ExpertIntermediateSize, fs = moe.SharedExpertIntermediateSize;
                r[m + "gate.weight"] = new Shape(moe.Experts, c);
                for (int e = 0; e < moe.Experts; e++)
                {
                    string x = $"{m}experts.{e}.";
                    r[x + moe.ExpertNames.Gate + ".weight"] = new Shape(fe, c);
                    r[x + moe.ExpertNames.Up + ".weight"] = new Shape(fe, c);
                    r[x + moe.ExpertNames.Down + ".weight"] = new Shape(c, fe);
                }
                if (fs == 0) continue;
                r[m + "shared_expert.gate_proj.weight"] = new Shape(fs, c);
                r[m + "shared_expert.up_proj.weight"] = new Shape(fs, c);
                r[m + "shared_expert.down_proj.weight"] = new Shape(c, fs);
                r[m + "shared_expert_gate.weight"] = new Shape(1, c);
                continue;
            }
            r[p + "mlp.gate_proj.weight"] = new Shape(f, c);
            r[p + "mlp.up_proj.weight"] = new Shape(f, c);
            r[p + "mlp.down_proj.weight"] = new Shape(c, f);
        }
        return r;
    }

    /// <summary>Refuses a file that holds a mixture-of-experts layer's experts fused (transformers 5) or more experts than config.json says.</summary>
    internal static void CheckExpertLayout(ModelConfig cfg, SafetensorsModel file)
    {
        if (cfg.Moe is not { } moe) return;
        for (int i = 0; i < cfg.NumLayers; i++)
        {
            if (!moe.IsSparse(i)) continue;
            string m = $"model.layers.{i}.{moe.Module}.";
            if (file.Contains(m + "experts.gate_up_proj") || file.Contains(m + "experts.down_proj"))
                throw new TemperException($"{file.Folder}: tensor '{m}experts.gate_up_proj' holds the experts fused (transformers 5's layout); Temper reads the per-expert tensors of the hub layout ('{m}experts.0.{moe.ExpertNames.Gate}.weight', ...)");
            string extra = $"{m}experts.{moe.Experts}.{moe.ExpertNames.Gate}.weight";
            if (file.Contains(extra)) throw new TemperException($"{file.Folder}: tensor '{extra}' is an expert past config.json's {moe.ExpertsField} {moe.Experts}");
        }
    }

    // The saved quantisation when it is for these weights, else a fresh one (saved when the folder is writable).
    private static (Dictionary<string, Nf4Weight>, IDisposable?) QuantizedProjections(string dir, ModelConfig cfg, SafetensorsModel file, WeightReader reader)
    {
        var shapes = ProjectionShapes(cfg);
        string source = Nf4ModelFile.Source(file);
        string path = Path.Combine(dir, Nf4ModelFile.FileName);
        if (File.Exists(path) && Nf4ModelFile.Open(path, shapes, source) is { } saved) return (saved.Weights, saved.File);
        var weights = new Dictionary<string, Nf4Weight>(StringComparer.Ordinal);
        foreach (var (name, shape) in shapes) weights[name] = Nf4Weight.Quantize(reader.Source(name, shape));
        try
        {
            Nf4ModelFile.Save(path, weights, source);
        }
        catch (TemperException)
        {
            // A read-only model folder: the quantisation is simply redone on the next load.
        }
        return (weights, null);
    }

    /// <summary>A model with seeded random weights: matrices uniform with standard deviation config.json's
    /// initializer_range (0.02 when absent), norms 1. For benchmarks, tests and training from scratch.
    /// nf4 quantises the layers' projections (QLoRA benchmarks). parallel draws other values of the same
    /// distribution on all cores (an 8B-class shape in seconds, not minutes); off, the values are the
    /// sequence of System.Random(seed) that training from scratch and the demo base rely on.</summary>
    public static ModelWeights Random(ModelConfig cfg, IBackend be, int seed, DType dtype = DType.F32, bool nf4 = false, bool parallel = false)
    {
        var rng = new System.Random(seed);
        float std = cfg.InitializerRange;
        int tensor = 0;
        // Draws a rows x cols matrix straight into a host tensor of the given dtype (f32 or bf16): no f32
        // copy of a bf16 matrix, so an 8B-class shape's 2 GiB embedding is written once.
        Tensor Draw(string name, int rows, int cols, DType type)
        {
            var t = Tensor.Zeros(new Shape(rows, cols), type, name);
            long n = (long)rows * cols;
            void Fill(long start, long end, Func<double> next)
            {
                if (type == DType.BF16)
                {
                    var dst = t.Span<ushort>();
                    for (long i = start; i < end; i++) dst[(int)i] = BFloat16.FromSingle(std * (float)(next() * 2 - 1) * 1.7320508f);
                }
                else
                {
                    var dst = t.Floats;
                    for (long i = start; i < end; i++) dst[(int)i] = std * (float)(next() * 2 - 1) * 1.7320508f;
                }
            }
            if (!parallel)
            {
                Fill(0, n, rng.NextDouble);
                return t;
            }
            // Other values, same distribution: chunks of 1M drawn on all cores, each from SplitMix64 seeded by
            // (seed, tensor, chunk), so a given seed still gives one model (benchmarks of large shapes).
            const int chunk = 1 << 20;
            ulong key = SplitMix64.Mix((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)tensor++);
            Parallel.For(0, (int)((n + chunk - 1) / chunk), c =>
            {
                var r = new SplitMix64(SplitMix64.Mix(key + (ulong)c));
                Fill((long)c * chunk, Math.Min(n, (long)(c + 1) * chunk), r.NextDouble);
            });
            return t;
        }
        Tensor Matrix(string name, int rows, int cols) => be.FromHost(Draw(name, rows, cols, dtype == DType.BF16 ? DType.BF16 : DType.F32));
        Tensor Vector(string name, int n)
        {
            var v = new float[n];
            if (name.EndsWith("norm.weight", StringComparison.Ordinal)) Array.Fill(v, 1f);
            return be.FromHost(Tensor.FromFloats(new Shape(n), v, name));
        }
        Func<string, int, int, Nf4Weight?>? quantized = nf4 ? (name, rows, cols) => Nf4Weight.Quantize(Draw(name, rows, cols, DType.F32)).To(be) : null;
        return Build(cfg, null, Matrix, Vector, untiedHead: !cfg.TieWordEmbeddings, quantized);
    }

    // quantized gives a projection's NF4 weight, or null for a dense one read by matrix.
    private static ModelWeights Build(ModelConfig cfg, SafetensorsModel? file, Func<string, int, int, Tensor> matrix, Func<string, int, Tensor> vector, bool untiedHead,
        Func<string, int, int, Nf4Weight?>? quantized = null)
    {
        int c = cfg.HiddenSize, f = cfg.IntermediateSize, q = cfg.NumHeads * cfg.HeadDim, kv = cfg.NumKvHeads * cfg.HeadDim;
        var embed = matrix("model.embed_tokens.weight", cfg.VocabSize, c);
        // A projection by its HF module name: NF4 when quantized gives one, else the dense matrix.
        Projection Proj(string name, int outF, int inF, bool bias)
        {
            var b = bias ? vector(name + ".bias", outF) : null;
            return quantized?.Invoke(name + ".weight", outF, inF) is { } q ? new(name, q, b) : new(name, matrix(name + ".weight", outF, inF), b);
        }
        if (file != null) CheckExpertLayout(cfg, file);
        var layers = new LayerWeights[cfg.NumLayers];
        for (int i = 0; i < layers.Length; i++)
        {
            string p = $"model.layers.{i}.";
            bool sparse = cfg.Moe?.IsSparse(i) ?? false;
            layers[i] = new LayerWeights
            {
                InputNorm = vector(p + "input_layernorm.weight", c),
                Q = Proj(p + "self_attn.q_proj", q, c, cfg.AttentionBias),
                K = Proj(p + "self_attn.k_proj", kv, c, cfg.AttentionBias),
                V = Proj(p + "self_attn.v_proj", kv, c, cfg.AttentionBias),
                O = Proj(p + "self_attn.o_proj", c, q, cfg.OutputBias),
                PostAttentionNorm = vector(p + "post_attention_layernorm.weight", c),
                Gate = sparse ? null! : Proj(p + "mlp.gate_proj", f, c, cfg.MlpBias),
                Up = sparse ? null! : Proj(p + "mlp.up_proj", f, c, cfg.MlpBias),
                Down = sparse ? null! : Proj(p + "mlp.down_proj", c, f, cfg.MlpBias),
                Moe = sparse ? BuildMoe(cfg.Moe!, p, c, (name, outF, inF) => Proj(name, outF, inF, bias: false)) : null,
                QNorm = cfg.QkNorm ? vector(p + "self_attn.q_norm.weight", cfg.HeadDim) : null,
                KNorm = cfg.QkNorm ? vector(p + "self_attn.k_norm.weight", cfg.HeadDim) : null,
            };
        }
        var norm = vector("model.norm.weight", c);
        var head = new Projection("lm_head", untiedHead ? matrix("lm_head.weight", cfg.VocabSize, c) : embed, null);
        return new ModelWeights(file, embed, layers, norm, head);
    }

    // Layer prefix p's router and experts by their HF module names (p + "block_sparse_moe.experts.3.w1", ...), each made by proj.
    private static MoeWeights BuildMoe(MoeSpec moe, string p, int c, Func<string, int, int, Projection> proj)
    {
        string m = p + moe.Module + ".";
        int f = moe.ExpertIntermediateSize;
        var experts = new MoeExpert[moe.Experts];
        for (int e = 0; e < experts.Length; e++)
        {
            string x = $"{m}experts.{e}.";
            experts[e] = new MoeExpert(proj(x + moe.ExpertNames.Gate, f, c), proj(x + moe.ExpertNames.Up, f, c), proj(x + moe.ExpertNames.Down, c, f));
        }
        var router = proj(m + "gate", moe.Experts, c);
        if (moe.SharedExpertIntermediateSize == 0) return new MoeWeights(router, experts, moe.TopK, moe.NormTopKProb);
        int fs = moe.SharedExpertIntermediateSize;
        var shared = new MoeExpert(proj(m + "shared_expert.gate_proj", fs, c), proj(m + "shared_expert.up_proj", fs, c), proj(m + "shared_expert.down_proj", c, fs));
        return new MoeWeights(router, experts, moe.TopK, moe.NormTopKProb, shared, proj(m + "shared_expert_gate", 1, c));
    }

    /// <summary>
    /// Frees the weights: device copies go back to their backend (a tied head is the embedding, freed
    /// once; attached modules_to_save copies too); host tensors are views of the memory-mapped files, which close last.
    /// </summary>
    public void Dispose()
    {
        var tensors = new List<Tensor> { _embed, FinalNorm };
        if (EmbedReplacement != null) tensors.Add(EmbedReplacement);
        if (LmHead.Replacement != null) tensors.Add(LmHead.Replacement);
        foreach (var l in Layers) tensors.AddRange(l.Norms.Select(n => n.Weight));
        foreach (var p in Projections.Append(LmHead))
        {
            if (p.Nf4 is { } q) tensors.AddRange([q.Codes, q.AbsmaxCodes, q.AbsmaxScales]);
            else tensors.Add(p.BaseWeight);
            if (p.Bias != null) tensors.Add(p.Bias);
        }
        foreach (var t in tensors.Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>())
            if (!t.IsHost) t.Dispose();
        _nf4File?.Dispose();
        _file?.Dispose();
    }

    // bnbDense: a bitsandbytes checkpoint's quantised matrices are read dequantised, held in this dtype unless matrixDType says otherwise.
    private sealed class WeightReader(SafetensorsModel file, IBackend be, string dir, DType? matrixDType, DType? bnbDense = null)
    {
        public Tensor Matrix(string name, int rows, int cols)
        {
            if (bnbDense is { } dense && Bnb4BitWeights.IsQuantized(file, name))
            {
                var values = Bnb4BitWeights.Dequantize(file, name, new Shape(rows, cols));
                return be.FromHost((matrixDType ?? dense) == DType.BF16 ? ToBf16(values) : values);
            }
            var t = Get(name, new Shape(rows, cols));
            var want = matrixDType ?? (t.DType == DType.BF16 ? DType.BF16 : DType.F32);
            if (t.DType != want) t = want == DType.F32 ? t.ToF32() : ToBf16(t.ToF32());
            return be.FromHost(t);
        }

        private static Tensor ToBf16(Tensor f32) => Tensor.FromFloatsAs(f32.Shape, f32.Floats, DType.BF16, f32.Name);

        public Tensor Vector(string name, int n) => be.FromHost(Get(name, new Shape(n)).ToF32());

        /// <summary>The stored tensor itself (host, mapped), checked against the shape config.json implies.</summary>
        public Tensor Source(string name, Shape shape) => Get(name, shape);

        private Tensor Get(string name, Shape expect)
        {
            if (!file.Contains(name)) throw new TemperException($"{dir}: tensor '{name}' missing");
            var t = file.Get(name);
            if (t.Shape != expect) throw new TemperException($"{dir}: tensor '{name}' has shape {t.Shape}, config.json implies {expect}");
            if (t.DType is not (DType.F32 or DType.BF16 or DType.F16 or DType.F64))
                throw new TemperException($"{dir}: tensor '{name}' has dtype {t.DType}; weights must be floating point");
            return t;
        }
    }
}
