// Turns a GGUF file (llama.cpp's, Ollama's, LM Studio's downloads, or `temper gguf`'s) into a Hugging Face model
// folder every Temper verb reads: config.json, model.safetensors (the tensors decoded to f32, or stored as f16/bf16),
// and the tokenizer (GgufTokenizerImport). The inverse of GgufExport, from llama.cpp's side:
//   architectures: llama -> llama (mixtral when it has experts), qwen2, qwen3, qwen3moe -> qwen3_moe, qwen2moe -> qwen2_moe;
//   llama's attn_q/attn_k rows go back from llama.cpp's interleaved pairs to HF's rotate-half order (per head, row
//   2i + j to row j*D/2 + i); stacked experts [E, Out, In] are split into each expert's [Out, In] under its HF name;
//   RoPE: rope.scaling.type linear / yarn, and a rope_freqs tensor read back as llama3 scaling when the factors are
//   those of Llama 3.1's parameters (low 1, high 4, original context 8192, the largest factor) within 1e-5.
// Anything else (other architectures, other rope_freqs, missing tensors, shapes that disagree with the hyperparameters)
// is one TemperException naming the file, before anything is written. Tensors are decoded one at a time as the
// safetensors file is streamed (a layer's stacked experts at once), so a model larger than the memory imports.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.Gguf;
using Temper.Core.SafeTensors;

namespace Temper.Models;

public static class GgufImport
{
    public static readonly IReadOnlyList<string> DTypes = ["auto", "f32", "f16", "bf16"];

    public sealed record Summary(string ModelType, int Tensors, string DType, long Bytes);

    /// <summary>progress(done, total) is called after each GGUF tensor is decoded.</summary>
    public static Summary Save(string ggufPath, string outDir, string dtype = "auto", Action<int, int>? progress = null)
    {
        using var g = GgufReader.Open(ggufPath);
        string arch = g.String("general.architecture") ?? throw g.Fault("general.architecture missing");
        if (arch is not ("llama" or "qwen2" or "qwen3" or "qwen3moe" or "qwen2moe"))
            throw g.Fault($"architecture '{arch}' has no Hugging Face form Temper reads (llama, qwen2, qwen3, qwen3moe, qwen2moe)");
        long Req(string key) => g.Integer($"{arch}.{key}") ?? throw g.Fault($"{arch}.{key} missing");
        int layers = (int)Req("block_count"), hidden = (int)Req("embedding_length"), heads = (int)Req("attention.head_count");
        int kvHeads = (int)(g.Integer($"{arch}.attention.head_count_kv") ?? heads);
        int headDim = (int)(g.Integer($"{arch}.attention.key_length") ?? hidden / heads);
        long? experts = g.Integer($"{arch}.expert_count");
        string modelType = (arch, experts > 0) switch
        {
            ("llama", false) => "llama",
            ("llama", true) => "mixtral",
            ("qwen2", false) => "qwen2",
            ("qwen3", false) => "qwen3",
            ("qwen3moe", true) => "qwen3_moe",
            ("qwen2moe", true) => "qwen2_moe",
            _ => throw g.Fault($"architecture '{arch}' {(experts > 0 ? "with" : "without")} experts has no Hugging Face form Temper reads"),
        };
        var embed = g.Tensor("token_embd.weight");
        if (embed.Shape.Length != 2 || embed.Shape[1] != hidden) throw g.Fault($"token_embd.weight is [{string.Join(", ", embed.Shape)}], not [vocab, {hidden}]");
        int vocab = (int)embed.Shape[0];
        var outType = OutType(dtype, g);

        var cfg = new JsonObject
        {
            ["architectures"] = new JsonArray(modelType switch
            {
                "llama" => "LlamaForCausalLM", "mixtral" => "MixtralForCausalLM", "qwen2" => "Qwen2ForCausalLM",
                "qwen3" => "Qwen3ForCausalLM", "qwen3_moe" => "Qwen3MoeForCausalLM", _ => "Qwen2MoeForCausalLM",
            }),
            ["model_type"] = modelType,
            ["hidden_size"] = hidden,
            ["intermediate_size"] = Req("feed_forward_length"),
            ["num_hidden_layers"] = layers,
            ["num_attention_heads"] = heads,
            ["num_key_value_heads"] = kvHeads,
            ["head_dim"] = headDim,
            ["vocab_size"] = vocab,
            ["rms_norm_eps"] = g.Number($"{arch}.attention.layer_norm_rms_epsilon") ?? throw g.Fault($"{arch}.attention.layer_norm_rms_epsilon missing"),
            ["rope_theta"] = g.Number($"{arch}.rope.freq_base") ?? 10000.0,
            ["max_position_embeddings"] = Req("context_length"),
            ["tie_word_embeddings"] = !g.Has("output.weight"),
            ["attention_bias"] = g.Has("blk.0.attn_q.bias"),
            ["mlp_bias"] = g.Has("blk.0.ffn_gate.bias"),
            ["hidden_act"] = "silu",
            ["torch_dtype"] = outType switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" },
        };
        if (RopeScaling(g, arch, headDim) is { } rope) cfg["rope_scaling"] = rope;
        if (experts > 0)
        {
            cfg[modelType == "mixtral" ? "num_local_experts" : "num_experts"] = experts;
            cfg["num_experts_per_tok"] = Req("expert_used_count");
            if (modelType != "mixtral")
            {
                cfg["moe_intermediate_size"] = Req("expert_feed_forward_length");
                cfg["norm_topk_prob"] = modelType == "qwen3_moe"; // llama.cpp's graphs: qwen3moe renormalises, qwen2moe does not
                cfg["decoder_sparse_step"] = 1;
                cfg["mlp_only_layers"] = new JsonArray();
                if (modelType == "qwen2_moe") cfg["shared_expert_intermediate_size"] = Req("expert_shared_feed_forward_length");
            }
        }
        var tokens = GgufTokenizerImport.Read(g, vocab);
        if (tokens.BosId is int bos) cfg["bos_token_id"] = bos;
        if (tokens.EosId is int eos) cfg["eos_token_id"] = eos;
        if (tokens.PadId is int pad) cfg["pad_token_id"] = pad;

        // Each HF tensor is announced (name, shape, dtype) and made from the GGUF only when the safetensors writer
        // reaches it, so one tensor (or one layer's stacked experts) is decoded at a time.
        var entries = new List<(string Name, Shape Shape, DType DType)>();
        var makers = new List<Func<Tensor>>();
        var used = new HashSet<string>();
        int decoded = 0;
        (string Name, float[] Values)? stacked = null; // the last stacked-expert tensor decoded, for its other experts
        void Announce(string hf, long[] shape, Func<float[]> values)
        {
            var sh = new Shape(shape.Select(x => (int)x).ToArray());
            var dt = shape.Length == 1 ? DType.F32 : outType;
            entries.Add((hf, sh, dt));
            makers.Add(() => Tensor.FromFloatsAs(sh, values(), dt, hf));
        }
        float[] Read(GgufReader.TensorInfo t)
        {
            var v = g.ReadFloats(t);
            progress?.Invoke(Math.Min(++decoded, g.Tensors.Count), g.Tensors.Count);
            return v;
        }
        void Add(string hf, string gguf, int permuteHeads = 0, long[]? shape = null)
        {
            var t = g.Tensor(gguf);
            used.Add(gguf);
            long[] s = shape ?? t.Shape;
            if (s.Aggregate(1L, (a, b) => a * b) != t.Elements) throw g.Fault($"{gguf} is [{string.Join(", ", t.Shape)}], not [{string.Join(", ", s)}]");
            Announce(hf, s, () =>
            {
                var v = Read(t);
                return permuteHeads > 0 ? GgufTensors.PermuteRows(v, (int)s[0], s.Length == 1 ? 1 : (int)s[1], permuteHeads, inverse: true) : v;
            });
        }
        void AddOptional(string hf, string gguf, int permuteHeads = 0) { if (g.Has(gguf)) Add(hf, gguf, permuteHeads); }
        void AddSplit(string hfFormat, string gguf)
        {
            var t = g.Tensor(gguf);
            used.Add(gguf);
            if (t.Shape.Length != 3 || t.Shape[0] != experts) throw g.Fault($"{gguf} is [{string.Join(", ", t.Shape)}], not [{experts}, out, in]");
            int per = (int)(t.Shape[1] * t.Shape[2]);
            for (int e = 0; e < experts; e++)
            {
                int expert = e;
                Announce(string.Format(System.Globalization.CultureInfo.InvariantCulture, hfFormat, e), [t.Shape[1], t.Shape[2]], () =>
                {
                    if (stacked?.Name != gguf) stacked = (gguf, Read(t));
                    return stacked.Value.Values.AsSpan(expert * per, per).ToArray();
                });
            }
        }
        bool permute = arch == "llama";
        Add("model.embed_tokens.weight", "token_embd.weight");
        if (g.Has("rope_freqs.weight")) used.Add("rope_freqs.weight");
        for (int i = 0; i < layers; i++)
        {
            string b = $"blk.{i}.", h = $"model.layers.{i}.";
            Add(h + "input_layernorm.weight", b + "attn_norm.weight");
            Add(h + "self_attn.q_proj.weight", b + "attn_q.weight", permute ? heads : 0);
            Add(h + "self_attn.k_proj.weight", b + "attn_k.weight", permute ? kvHeads : 0);
            Add(h + "self_attn.v_proj.weight", b + "attn_v.weight");
            Add(h + "self_attn.o_proj.weight", b + "attn_output.weight");
            AddOptional(h + "self_attn.q_proj.bias", b + "attn_q.bias", permute ? heads : 0);
            AddOptional(h + "self_attn.k_proj.bias", b + "attn_k.bias", permute ? kvHeads : 0);
            AddOptional(h + "self_attn.v_proj.bias", b + "attn_v.bias");
            AddOptional(h + "self_attn.o_proj.bias", b + "attn_output.bias");
            AddOptional(h + "self_attn.q_norm.weight", b + "attn_q_norm.weight");
            AddOptional(h + "self_attn.k_norm.weight", b + "attn_k_norm.weight");
            Add(h + "post_attention_layernorm.weight", b + "ffn_norm.weight");
            if (experts > 0)
            {
                string m = h + (modelType == "mixtral" ? "block_sparse_moe." : "mlp.");
                var (gate, up, down) = modelType == "mixtral" ? ("w1", "w3", "w2") : ("gate_proj", "up_proj", "down_proj");
                Add(m + "gate.weight", b + "ffn_gate_inp.weight");
                AddSplit(m + "experts.{0}." + gate + ".weight", b + "ffn_gate_exps.weight");
                AddSplit(m + "experts.{0}." + up + ".weight", b + "ffn_up_exps.weight");
                AddSplit(m + "experts.{0}." + down + ".weight", b + "ffn_down_exps.weight");
                if (modelType == "qwen2_moe")
                {
                    Add(m + "shared_expert.gate_proj.weight", b + "ffn_gate_shexp.weight");
                    Add(m + "shared_expert.up_proj.weight", b + "ffn_up_shexp.weight");
                    Add(m + "shared_expert.down_proj.weight", b + "ffn_down_shexp.weight");
                    Add(m + "shared_expert_gate.weight", b + "ffn_gate_inp_shexp.weight", shape: [1, hidden]);
                }
            }
            else
            {
                Add(h + "mlp.gate_proj.weight", b + "ffn_gate.weight");
                Add(h + "mlp.up_proj.weight", b + "ffn_up.weight");
                Add(h + "mlp.down_proj.weight", b + "ffn_down.weight");
                AddOptional(h + "mlp.gate_proj.bias", b + "ffn_gate.bias");
                AddOptional(h + "mlp.up_proj.bias", b + "ffn_up.bias");
                AddOptional(h + "mlp.down_proj.bias", b + "ffn_down.bias");
            }
        }
        Add("model.norm.weight", "output_norm.weight");
        AddOptional("lm_head.weight", "output.weight");
        if (g.Tensors.FirstOrDefault(t => !used.Contains(t.Name)) is { } extra)
            throw g.Fault($"tensor '{extra.Name}' has no place in a {modelType} model Temper knows");

        var config = ModelConfig.Parse(JsonNode.Parse(cfg.ToJsonString())!.AsObject(), Path.Combine(outDir, "config.json"));
        var expected = ModelWeights.ProjectionShapes(config);
        foreach (var (name, shape, _) in entries)
            if (expected.TryGetValue(name, out var want) && want != shape)
                throw g.Fault($"{name} would be {shape}, but the hyperparameters make it {want}");

        Directory.CreateDirectory(outDir);
        string st = Path.Combine(outDir, SafetensorsModel.SingleFileName);
        SafetensorsWriter.Write(st, entries, i => makers[i](), new Dictionary<string, string> { ["format"] = "pt" });
        tokens.Write(outDir);
        AtomicFile.WriteAllText(Path.Combine(outDir, "config.json"), cfg.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return new Summary(modelType, entries.Count, (string)cfg["torch_dtype"]!, new FileInfo(st).Length);
    }

    private static DType OutType(string dtype, GgufReader g) => dtype switch
    {
        "f32" => DType.F32,
        "f16" => DType.F16,
        "bf16" => DType.BF16,
        "auto" => g.Tensors.Where(t => t.Shape.Length > 1).Select(t => t.Type).Distinct().ToList() switch
        {
            [GgmlType.BF16] => DType.BF16,
            [GgmlType.F16] => DType.F16,
            _ => DType.F32, // f32, or quantised blocks decoded exactly
        },
        _ => throw new TemperException($"--dtype must be one of {string.Join(", ", DTypes)}, not '{dtype}'"),
    };

    private static JsonObject? RopeScaling(GgufReader g, string arch, int headDim)
    {
        string? type = g.String($"{arch}.rope.scaling.type");
        double factor = g.Number($"{arch}.rope.scaling.factor") ?? 1;
        if (g.Has("rope_freqs.weight"))
        {
            var t = g.Tensor("rope_freqs.weight");
            if (t.Elements != headDim / 2) throw g.Fault($"rope_freqs.weight has {t.Elements} factors for head size {headDim}");
            var f = g.ReadFloats(t);
            double theta = g.Number($"{arch}.rope.freq_base") ?? 10000.0, big = f.Max();
            var factors = RopeFrequencies.Llama3Factors(headDim, theta, big, 1, 4, 8192);
            for (int i = 0; i < f.Length; i++)
            {
                double expected = factors[i];
                if (Math.Abs(f[i] - expected) > 1e-5 * expected)
                    throw g.Fault($"rope_freqs.weight[{i}] = {f[i]} is not Llama 3 scaling's factor {expected} (factor {big}, low 1, high 4, original context 8192)");
            }
            return new JsonObject { ["rope_type"] = "llama3", ["factor"] = big, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 8192 };
        }
        return type switch
        {
            null or "none" => null,
            "linear" => new JsonObject { ["rope_type"] = "linear", ["factor"] = factor },
            "yarn" => new JsonObject
            {
                ["rope_type"] = "yarn", ["factor"] = factor,
                ["original_max_position_embeddings"] = g.Integer($"{arch}.rope.scaling.original_context_length") ?? throw g.Fault($"{arch}.rope.scaling.original_context_length missing for yarn"),
            },
            _ => throw g.Fault($"{arch}.rope.scaling.type '{type}' is not one Temper reads (linear, yarn, or llama3's rope_freqs)"),
        };
    }
}
