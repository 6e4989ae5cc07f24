// Writes a loaded model (adapters merged first by the caller) as one GGUF file that llama.cpp, Ollama and LM Studio
// run, as llama.cpp's convert_hf_to_gguf.py converts the same Hugging Face folder: the architecture's hyperparameters
// under its GGUF name, each tensor under llama.cpp's name (token_embd, blk.N.attn_q, ..., output), the tokenizer and
// chat template (GgufVocabulary), and the weights in the chosen type.
//   architectures: llama and mistral -> "llama" (q_proj and k_proj rows permuted from HF's rotate-half order to the
//   interleaved pairs llama.cpp's llama graph rotates: per head, rows (i, i + D/2) become (2i, 2i + 1), as the
//   converter's LlamaModel.permute); qwen2 -> "qwen2", qwen3 -> "qwen3" (NEOX RoPE: no permutation); mixtral -> "llama"
//   with experts; qwen3_moe -> "qwen3moe", qwen2_moe -> "qwen2moe" (and the shared expert). Experts are stacked into
//   one [E, Out, In] tensor per projection (ffn_gate_exps, ffn_up_exps, ffn_down_exps), the router is ffn_gate_inp.
//   RoPE: default; linear (rope.scaling.type linear and its factor); llama3 (llama arch: a rope_freqs tensor of the
//   converter's per-frequency factors, which llama.cpp divides each frequency by); yarn with transformers' default
//   betas and attention factor (rope.scaling.type yarn, factor, original_context_length).
//   types: f32, f16, bf16 or q8_0 for the matrices; vectors (norms, biases), routers and rope_freqs stay f32 as the
//   converter keeps them; a q8_0 matrix whose rows are not whole blocks of 32 falls back to f16, as the converter's does.
//   auto: the stored type of the embedding (f32, f16 or bf16).
// What llama.cpp's graph cannot express is refused in one line naming config.json: NF4 weights (load dequantised),
// unmerged adapters, Qwen-MoE dense layers between sparse ones, a norm_topk_prob the architecture's graph does not use,
// other RoPE scalings.
using Temper.Core;
using Temper.Core.Gguf;
using Temper.Core.SafeTensors;
using Temper.Models.Text;

namespace Temper.Models;

public static class GgufExport
{
    public static readonly IReadOnlyList<string> OutTypes = ["auto", "f32", "f16", "bf16", "q8_0"];

    public sealed record Summary(string Architecture, string OutType, int Tensors, long Bytes);

    public static Summary Save(string path, LanguageModel lm, IBackend be, string outType = "auto", string? name = null, Action<int, int>? progress = null) =>
        Save(path, lm.Config, lm.Weights, be, new Source(lm.Directory, lm.Directory, lm.RequireTokenizer(), lm.Template), outType, name ?? new DirectoryInfo(lm.Directory).Name, progress);

    /// <summary>Where a model's files come from: its weights' folder (null for weights made in memory, e.g. a bench's
    /// random model) and the folder whose tokenizer.json, tokenizer and chat template the file carries.</summary>
    public sealed record Source(string? WeightsDir, string TokenizerDir, HfTokenizer Tokenizer, ChatTemplate? Template);

    /// <summary>progress(done, total) is called after each tensor is written.</summary>
    public static Summary Save(string path, ModelConfig cfg, ModelWeights w, IBackend be, Source source, string outType, string name, Action<int, int>? progress = null)
    {
        string where = source.WeightsDir != null ? Path.Combine(source.WeightsDir, "config.json") : $"the {cfg.ModelType} config";
        if (w.Projections.Append(w.LmHead).FirstOrDefault(p => p.Lora != null || p.Ia3 != null) is { } adapted)
            throw new TemperException($"{adapted.Name}: merge the adapter before writing GGUF");
        if (w.Projections.FirstOrDefault(p => p.Nf4 != null) is { } q)
            throw new TemperException($"{q.Name}: NF4 weights have no GGUF form here; load the model dequantised (without --qlora)");
        string arch = ArchitectureOf(cfg, where);
        var type = MatrixType(outType, cfg, w, source.WeightsDir);

        var g = new GgufWriter();
        g.Add("general.architecture", arch);
        g.Add("general.type", "model");
        g.Add("general.name", name);
        g.Add("general.file_type", FileType(type));
        if (type == GgmlType.Q8) g.Add("general.quantization_version", 2u);
        g.Add($"{arch}.vocab_size", (uint)cfg.VocabSize);
        g.Add($"{arch}.context_length", (uint)cfg.MaxPositions);
        g.Add($"{arch}.embedding_length", (uint)cfg.HiddenSize);
        g.Add($"{arch}.block_count", (uint)cfg.NumLayers);
        g.Add($"{arch}.feed_forward_length", (uint)cfg.IntermediateSize);
        g.Add($"{arch}.attention.head_count", (uint)cfg.NumHeads);
        g.Add($"{arch}.attention.head_count_kv", (uint)cfg.NumKvHeads);
        g.Add($"{arch}.attention.key_length", (uint)cfg.HeadDim);
        g.Add($"{arch}.attention.value_length", (uint)cfg.HeadDim);
        g.Add($"{arch}.attention.layer_norm_rms_epsilon", cfg.RmsNormEps);
        g.Add($"{arch}.rope.dimension_count", (uint)cfg.HeadDim);
        g.Add($"{arch}.rope.freq_base", (float)cfg.Rope.Theta);
        AddRopeScaling(g, arch, cfg, where);
        if (cfg.Moe is { } moe)
        {
            g.Add($"{arch}.expert_count", (uint)moe.Experts);
            g.Add($"{arch}.expert_used_count", (uint)moe.TopK);
            if (arch != "llama") g.Add($"{arch}.expert_feed_forward_length", (uint)moe.ExpertIntermediateSize);
            if (moe.SharedExpertIntermediateSize > 0) g.Add($"{arch}.expert_shared_feed_forward_length", (uint)moe.SharedExpertIntermediateSize);
        }
        GgufVocabulary.Add(g, cfg, source);

        var tensors = new GgufTensors(g, be, type);
        tensors.Add("token_embd.weight", w.Embed);
        if (cfg.Rope is { Type: "llama3" } r)
            tensors.AddF32("rope_freqs.weight", RopeFrequencies.Llama3Factors(cfg.HeadDim, r.Theta, r.Factor, r.LowFreqFactor, r.HighFreqFactor, r.OriginalMaxPositions));
        bool permute = arch == "llama";
        for (int i = 0; i < w.Layers.Length; i++)
        {
            var l = w.Layers[i];
            string b = $"blk.{i}.";
            tensors.Add(b + "attn_norm.weight", l.InputNorm);
            tensors.Add(b + "attn_q", l.Q, permute ? cfg.NumHeads : 0);
            tensors.Add(b + "attn_k", l.K, permute ? cfg.NumKvHeads : 0);
            tensors.Add(b + "attn_v", l.V);
            tensors.Add(b + "attn_output", l.O);
            if (l.QNorm != null) tensors.Add(b + "attn_q_norm.weight", l.QNorm);
            if (l.KNorm != null) tensors.Add(b + "attn_k_norm.weight", l.KNorm);
            tensors.Add(b + "ffn_norm.weight", l.PostAttentionNorm);
            if (l.Moe is { } m)
            {
                tensors.Add(b + "ffn_gate_inp", m.Router, forceF32: true);
                tensors.AddStacked(b + "ffn_gate_exps.weight", m.Experts.Select(e => e.Gate).ToArray());
                tensors.AddStacked(b + "ffn_up_exps.weight", m.Experts.Select(e => e.Up).ToArray());
                tensors.AddStacked(b + "ffn_down_exps.weight", m.Experts.Select(e => e.Down).ToArray());
                if (m.SharedExpert is { } s)
                {
                    tensors.Add(b + "ffn_gate_shexp", s.Gate);
                    tensors.Add(b + "ffn_up_shexp", s.Up);
                    tensors.Add(b + "ffn_down_shexp", s.Down);
                }
                if (m.SharedExpertGate is { } sg) tensors.Add(b + "ffn_gate_inp_shexp", sg, forceF32: true);
            }
            else
            {
                tensors.Add(b + "ffn_gate", l.Gate);
                tensors.Add(b + "ffn_up", l.Up);
                tensors.Add(b + "ffn_down", l.Down);
            }
        }
        tensors.Add("output_norm.weight", w.FinalNorm);
        // A tied head is token_embd itself (llama.cpp falls back to it); a modules_to_save copy unties the pair.
        if (!cfg.TieWordEmbeddings || w.EmbedReplacement != null || w.LmHead.Replacement != null) tensors.Add("output", w.LmHead);
        long bytes = g.Write(path, progress);
        return new Summary(arch, GgmlDequant.Name(type), g.TensorCount, bytes);
    }

    internal static string ArchitectureOf(ModelConfig cfg, string where)
    {
        string arch = cfg.ModelType switch
        {
            "llama" or "mistral" or "mixtral" => "llama",
            "qwen2" => "qwen2",
            "qwen3" => "qwen3",
            "qwen3_moe" => "qwen3moe",
            "qwen2_moe" => "qwen2moe",
            var t => throw new TemperException($"{where}: model_type '{t}' has no GGUF architecture Temper writes"),
        };
        if (cfg.Moe is { } moe)
        {
            if (moe.SparseLayers.Any(s => !s)) throw new TemperException($"{where}: dense layers between the sparse ones (mlp_only_layers / decoder_sparse_step) have no form in llama.cpp's {arch} graph");
            // llama.cpp's graphs fix the renormalisation of the top-k weights per architecture.
            bool norm = arch != "qwen2moe";
            if (moe.NormTopKProb != norm)
                throw new TemperException($"{where}: norm_topk_prob {(moe.NormTopKProb ? "true" : "false")}: llama.cpp's {arch} graph {(norm ? "renormalises" : "does not renormalise")} the top-k weights");
        }
        if (cfg.MlpBias && arch != "llama") throw new TemperException($"{where}: mlp_bias has no tensor in llama.cpp's {arch} graph");
        if (cfg.OutputBias && arch != "llama") throw new TemperException($"{where}: an o_proj bias has no tensor in llama.cpp's {arch} graph");
        return arch;
    }

    private static void AddRopeScaling(GgufWriter g, string arch, ModelConfig cfg, string where)
    {
        var r = cfg.Rope;
        switch (r.Type)
        {
            case "default": break;
            case "linear":
                g.Add($"{arch}.rope.scaling.type", "linear");
                g.Add($"{arch}.rope.scaling.factor", (float)r.Factor);
                break;
            case "llama3" when arch == "llama": break; // rope_freqs.weight
            case "yarn" when r.BetaFast == 32 && r.BetaSlow == 1 && r.AttentionFactor == null && r.Mscale == null && r.MscaleAllDim == null && r.Truncate:
                g.Add($"{arch}.rope.scaling.type", "yarn");
                g.Add($"{arch}.rope.scaling.factor", (float)r.Factor);
                g.Add($"{arch}.rope.scaling.original_context_length", (uint)r.OriginalMaxPositions);
                break;
            default:
                throw new TemperException($"{where}: RoPE scaling '{r.Type}' with these parameters has no GGUF form Temper writes for {arch} (default, linear, llama3 on llama, yarn with transformers' defaults)");
        }
    }

    private static GgmlType MatrixType(string outType, ModelConfig cfg, ModelWeights w, string? weightsDir) => outType switch
    {
        "f32" => GgmlType.F32,
        "f16" => GgmlType.F16,
        "bf16" => GgmlType.BF16,
        "q8_0" => GgmlType.Q8,
        "auto" => StoredEmbeddingType(cfg, w, weightsDir),
        _ => throw new TemperException($"--outtype must be one of {string.Join(", ", OutTypes)}, not '{outType}'"),
    };

    // The embedding's dtype as its safetensors store it (the loader widens f16 to f32, so the loaded tensor cannot
    // tell f16 from f32); weights made in memory: bf16 if they are, else f32.
    private static GgmlType StoredEmbeddingType(ModelConfig cfg, ModelWeights w, string? weightsDir)
    {
        if (w.Embed.DType == DType.BF16) return GgmlType.BF16;
        if (weightsDir == null) return GgmlType.F32;
        if (cfg.Bnb4Bit != null) return GgmlType.F16;
        using var file = SafetensorsModel.Open(weightsDir);
        const string embed = "model.embed_tokens.weight";
        if (!file.Contains(embed)) return GgmlType.F32;
        return file.Get(embed).DType switch { DType.BF16 => GgmlType.BF16, DType.F16 => GgmlType.F16, _ => GgmlType.F32 };
    }

    // llama.cpp's llama_ftype for the matrices' type.
    private static uint FileType(GgmlType t) => t switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.Q8 => 7,
        GgmlType.BF16 => 32,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };
}
