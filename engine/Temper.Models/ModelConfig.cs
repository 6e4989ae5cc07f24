// The decoder hyper-parameters of a Llama-family model (Llama, Qwen2, Qwen3, Mistral, and the mixture-of-experts
// Mixtral, Qwen3-MoE and Qwen2-MoE, whose expert fields MoeSpec reads), read from a Hugging Face
// config.json in either the transformers-4 form (top-level rope_theta, rope_scaling with type or
// rope_type) or the transformers-5 form (rope_parameters). Anything Temper cannot run faithfully is
// refused here with a one-line error naming config.json and the field.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models;

public sealed record ModelConfig
{
    public required string ModelType { get; init; }          // llama | qwen2 | qwen3 | mistral | mixtral | qwen3_moe | qwen2_moe
    /// <summary>config.json's architectures[0] (e.g. LlamaForCausalLM, Qwen2ForSequenceClassification), "" when absent.</summary>
    public string Architecture { get; init; } = "";
    public required int HiddenSize { get; init; }            // C
    public required int IntermediateSize { get; init; }      // F (of the dense MLPs; Mixtral: of each expert)
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }              // H
    public required int NumKvHeads { get; init; }            // Hkv (GQA when < H)
    public required int HeadDim { get; init; }               // D (explicit head_dim, or C / H)
    public required int VocabSize { get; init; }             // V
    public required float RmsNormEps { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    public required bool AttentionBias { get; init; }        // q/k/v biases (always for Qwen2)
    public required bool OutputBias { get; init; }           // o_proj bias (Llama attention_bias)
    public required bool MlpBias { get; init; }
    /// <summary>Qwen3: q and k pass an RMSNorm over each head's D values (q_norm, k_norm [D]) before RoPE.</summary>
    public bool QkNorm { get; init; }
    public required int MaxPositions { get; init; }
    public required RopeSpec Rope { get; init; }
    public int? SlidingWindow { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public int? BosTokenId { get; init; }
    public int? PadTokenId { get; init; }
    /// <summary>Standard deviation of seeded random initial weights (config.json initializer_range, as transformers).</summary>
    public float InitializerRange { get; init; } = 0.02f;
    /// <summary>The config.json text as read (for manifests and for writing merged models).</summary>
    public string RawJson { get; init; } = "{}";
    /// <summary>config.json's quantization_config of a bitsandbytes 4-bit (NF4) checkpoint, null for a plain one.</summary>
    public Bnb4BitConfig? Bnb4Bit { get; init; }
    /// <summary>The mixture-of-experts MLP of Mixtral, Qwen3-MoE and Qwen2-MoE, null for a dense model.</summary>
    public MoeSpec? Moe { get; init; }
    /// <summary>The config.json this was read from (for messages).</summary>
    public string SourcePath { get; init; } = "config.json";

    /// <summary>
    /// Throws the one-line refusal of a mixture-of-experts model by a part of Temper that runs dense models only
    /// (<paramref name="what"/>: the CUDA graph decoder); does nothing for a dense model.
    /// </summary>
    public void RefuseMoe(string what)
    {
        if (MoeRefusal(what) is { } message) throw new TemperException(message);
    }

    /// <summary>The coefficient transformers adds the router load-balancing loss with: config.json's router_aux_loss_coef when a
    /// mixture-of-experts config sets output_router_logits, else null (no such loss).</summary>
    public double? RouterAuxLossCoef => Moe is { OutputRouterLogits: true } moe ? moe.RouterAuxLossCoef : null;

    /// <summary>RefuseMoe's message, or null for a dense model.</summary>
    public string? MoeRefusal(string what) => Moe == null ? null
        : $"{SourcePath}: model_type '{ModelType}' is a mixture-of-experts model, which Temper runs, serves and trains on the CPU and ILGPU backends only; {what} does not support it";

    public static ModelConfig Load(string dirOrFile)
    {
        string path = Directory.Exists(dirOrFile) ? Path.Combine(dirOrFile, "config.json") : dirOrFile;
        if (dirOrFile.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase)) ModelFolderFiles.RequireFolder(dirOrFile);
        if (!File.Exists(path)) throw new TemperException($"{path}: config.json not found");
        string text = File.ReadAllText(path);
        JsonObject root;
        try
        {
            root = JsonNode.Parse(text) as JsonObject ?? throw new TemperException($"{path}: not a JSON object");
        }
        catch (JsonException e)
        {
            throw new TemperException($"{path}: malformed JSON at line {e.LineNumber + 1}: {FirstLine(e.Message)}");
        }
        return Parse(root, path, text);
    }

    public static ModelConfig Parse(JsonObject root, string path, string? rawJson = null)
    {
        var r = new ConfigReader(root, path);
        string modelType = r.String("model_type");
        string arch = root["architectures"] is JsonArray a && a.Count > 0 ? a[0]?.GetValue<string>() ?? "" : "";
        string[] known = ["llama", "qwen2", "qwen3", "mistral", "mixtral", "qwen3_moe", "qwen2_moe"];
        if (!known.Contains(modelType))
            throw new TemperException($"{path}: unsupported architecture model_type '{modelType}'{(arch.Length > 0 ? $" ({arch})" : "")}; Temper runs llama, qwen2, qwen3, mistral, mixtral, qwen3_moe and qwen2_moe");
        string act = r.OptString("hidden_act") ?? "silu";
        if (act != "silu") throw new TemperException($"{path}: unsupported hidden_act '{act}' (only silu)");

        int hidden = r.Int("hidden_size");
        int heads = r.Int("num_attention_heads");
        int kvHeads = r.OptInt("num_key_value_heads") ?? heads;
        if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0)
            throw new TemperException($"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        int headDim = r.OptInt("head_dim") ?? (hidden % heads == 0 ? hidden / heads : throw new TemperException($"{path}: hidden_size {hidden} is not divisible by num_attention_heads {heads} and no head_dim is given"));
        if (headDim % 2 != 0) throw new TemperException($"{path}: head_dim {headDim} must be even for RoPE");
        bool qwen = modelType is "qwen2" or "qwen2_moe"; // q/k/v biases always, no o_proj bias
        bool attnBias = !qwen && (r.OptBool("attention_bias") ?? false);

        int? window = null;
        if (root["sliding_window"] is JsonValue sw && (modelType is "mistral" or "mixtral" || (r.OptBool("use_sliding_window") ?? false)))
            window = sw.GetValue<int>();

        int layers = r.Int("num_hidden_layers");
        return new ModelConfig
        {
            ModelType = modelType,
            Architecture = arch,
            HiddenSize = hidden,
            IntermediateSize = r.Int("intermediate_size"),
            NumLayers = layers,
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = r.Int("vocab_size"),
            RmsNormEps = (float)(r.OptDouble("rms_norm_eps") ?? 1e-6),
            TieWordEmbeddings = r.OptBool("tie_word_embeddings") ?? false,
            AttentionBias = qwen || attnBias,
            OutputBias = attnBias,
            MlpBias = r.OptBool("mlp_bias") ?? false,
            QkNorm = modelType is "qwen3" or "qwen3_moe",
            MaxPositions = r.OptInt("max_position_embeddings") ?? 2048,
            Rope = RopeSpec.Parse(root, path, headDim),
            SlidingWindow = window,
            EosTokenIds = r.IntOrList("eos_token_id"),
            BosTokenId = r.OptInt("bos_token_id"),
            PadTokenId = r.OptInt("pad_token_id"),
            InitializerRange = (float)(r.OptDouble("initializer_range") ?? 0.02),
            Bnb4Bit = Bnb4BitConfig.Parse(root["quantization_config"], path),
            RawJson = rawJson ?? root.ToJsonString(),
            Moe = MoeSpec.IsMoeType(modelType) ? MoeSpec.Parse(root, r, path, modelType, layers) : null,
            SourcePath = path,
        };
    }

    internal static string FirstLine(string s) => s.Split('\n')[0].Trim();
}

/// <summary>Typed access to config fields; every failure names the file and the field.</summary>
internal sealed class ConfigReader(JsonObject o, string path)
{
    public string String(string key) => OptString(key) ?? throw Missing(key);
    public int Int(string key) => OptInt(key) ?? throw Missing(key);

    public string? OptString(string key) => Get(key) is { } n ? Convert(key, () => n.GetValue<string>(), "a string") : null;
    public int? OptInt(string key) => Get(key) is { } n ? Convert(key, () => n.GetValue<int>(), "an integer") : null;
    public double? OptDouble(string key) => Get(key) is { } n ? Convert(key, () => n.GetValue<double>(), "a number") : null;
    public bool? OptBool(string key) => Get(key) is { } n ? Convert(key, () => n.GetValue<bool>(), "true or false") : null;

    public IReadOnlyList<int> IntOrList(string key) => Get(key) switch
    {
        null => [],
        JsonArray a => a.Select(x => Convert(key, () => x!.GetValue<int>(), "a list of integers")).ToArray(),
        JsonNode n => [Convert(key, () => n.GetValue<int>(), "an integer or a list of integers")],
    };

    private JsonNode? Get(string key) => o.TryGetPropertyValue(key, out var n) ? n : null;
    private TemperException Missing(string key) => new($"{path}: missing field '{key}'");

    private T Convert<T>(string key, Func<T> f, string what)
    {
        try { return f(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException or OverflowException)
        {
            throw new TemperException($"{path}: field '{key}' must be {what}");
        }
    }
}
