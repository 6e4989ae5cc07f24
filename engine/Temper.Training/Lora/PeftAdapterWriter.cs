// Saves the LoRA views of a model as a PEFT adapter folder that PEFT, transformers and vLLM load:
// adapter_config.json (the fields PEFT 0.x reads) and adapter_model.safetensors with PEFT's key names
// (base_model.model.<module>.lora_A.weight / lora_B.weight; a DoRA adapter, use_dora, adds
// base_model.model.<module>.lora_magnitude_vector [Out], the name PEFT saves it under). Files are written to a temp name and renamed.
// A sequence-classification adapter (a reward model) adds its fully trained head as PEFT's
// PeftModelForSequenceClassification saves it: task_type SEQ_CLS, modules_to_save ["classifier", "score"],
// and the head's tensor under base_model.model.score.weight. A prompt-tuning adapter (SavePrompt) is its own form:
// peft_type PROMPT_TUNING and one tensor, prompt_embeddings [P,C]. A language model's modules_to_save copies of the
// embedding / LM head (ModulesToSave) go under base_model.model.model.embed_tokens.weight and base_model.model.lm_head.weight,
// with modules_to_save ["embed_tokens", "lm_head"] (those attached), as get_peft_model_state_dict names them.
// An (IA)^3 adapter (SaveIa3) is peft_type IA3 with base_model.model.<module>.ia3_l in PEFT's shapes: [Out,1], or [1,In] for a
// feedforward module.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Models;

namespace Temper.Training.Lora;

public static class PeftAdapterWriter
{
    /// <summary>A fully trained extra module saved beside the LoRA (PEFT's modules_to_save).</summary>
    public sealed record SavedModules(string TaskType, IReadOnlyList<string> ModuleNames, IReadOnlyList<KeyValuePair<string, Tensor>> Tensors);

    /// <summary>The reward-model form: score.weight [1,C] as PEFT writes a SEQ_CLS adapter.</summary>
    public static SavedModules SequenceClassification(Tensor scoreWeight) => new("SEQ_CLS", ["classifier", "score"], [new("score.weight", scoreWeight)]);

    /// <summary>The modules_to_save copies of the embedding and LM head the weights carry (ModulesToSave), or null when none.</summary>
    public static SavedModules? LanguageModelCopies(ModelWeights w)
    {
        var names = new List<string>();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        if (w.EmbedReplacement is { } embed) { names.Add("embed_tokens"); tensors.Add(new(ModulesToSave.EmbedModule + ".weight", embed)); }
        if (w.LmHead.Replacement is { } head) { names.Add("lm_head"); tensors.Add(new(ModulesToSave.HeadModule + ".weight", head)); }
        return names.Count == 0 ? null : new SavedModules("CAUSAL_LM", names, tensors);
    }

    /// <summary>The model's LoRA views (and its modules_to_save copies, unless <paramref name="modules"/> says what is saved beside them).</summary>
    public static void Save(string dir, ModelWeights w, LoraConfig cfg, IBackend be, string baseModel, SavedModules? modules = null)
    {
        modules ??= LanguageModelCopies(w);
        var lora = new List<(string, Tensor, Tensor, Tensor?)>();
        foreach (var p in w.Projections.Append(w.LmHead))
            if (p.Lora is { } l)
            {
                if (cfg.UseDora != (l.Magnitude != null))
                    throw new TemperException($"{p.Name}: the adapter config says use_dora {cfg.UseDora.ToString().ToLowerInvariant()} but the module {(l.Magnitude != null ? "has" : "has no")} DoRA magnitude");
                lora.Add((p.Name, be.ToHost(l.A), be.ToHost(l.B), l.Magnitude != null ? be.ToHost(l.Magnitude) : null));
            }
        Write(dir, lora, cfg, baseModel, modules, be);
    }

    /// <summary>Writes the adapter folder from host tensors: per module (name, A [r,In], B [Out,r], DoRA magnitude or null).</summary>
    public static void Write(string dir, IReadOnlyList<(string Module, Tensor A, Tensor B, Tensor? Magnitude)> lora, LoraConfig cfg, string baseModel,
        SavedModules? modules = null, IBackend? be = null)
    {
        Directory.CreateDirectory(dir);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (name, a, b, magnitude) in lora)
        {
            tensors.Add(new($"base_model.model.{name}.lora_A.weight", a));
            tensors.Add(new($"base_model.model.{name}.lora_B.weight", b));
            if (magnitude != null) tensors.Add(new($"base_model.model.{name}.lora_magnitude_vector", magnitude));
        }
        if (tensors.Count == 0) throw new TemperException("the model carries no LoRA to save");
        foreach (var (name, t) in modules?.Tensors ?? [])
            tensors.Add(new($"base_model.model.{name}", be != null ? be.ToHost(t) : t));
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var json = ConfigJson(cfg, baseModel);
        if (modules != null)
        {
            json["task_type"] = modules.TaskType;
            json["modules_to_save"] = new JsonArray(modules.ModuleNames.Select(m => (JsonNode)m).ToArray());
        }
        AtomicFile.WriteAllText(Path.Combine(dir, "adapter_config.json"), json.ToJsonString(new() { WriteIndented = true }));
    }

    /// <summary>The model's (IA)^3 vectors as PEFT's IA3 folder: ia3_l [Out,1] (output scaling) or [1,In] (feedforward), f32, and the IA3Config fields.</summary>
    public static void SaveIa3(string dir, ModelWeights w, Ia3Config cfg, IBackend be, string baseModel)
    {
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var p in w.Projections)
            if (p.Ia3 is { } ia3)
            {
                using var copy = ia3.Vector.IsHost ? null : be.ToHost(ia3.Vector);
                int n = ia3.Vector.Shape[0];
                tensors.Add(new($"base_model.model.{p.Name}{Ia3Adapter.TensorSuffix}", Tensor.FromFloats(ia3.Feedforward ? new Shape(1, n) : new Shape(n, 1), (copy ?? ia3.Vector).ToFloatArray())));
            }
        if (tensors.Count == 0) throw new TemperException("the model carries no IA3 vectors to save");
        Directory.CreateDirectory(dir);
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(dir, "adapter_config.json"), new JsonObject
        {
            ["peft_type"] = "IA3",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = baseModel,
            ["revision"] = null,
            ["target_modules"] = cfg.TargetsJson,
            ["exclude_modules"] = null,
            ["feedforward_modules"] = cfg.FeedforwardJson,
            ["fan_in_fan_out"] = false,
            ["modules_to_save"] = null,
            ["init_ia3_weights"] = true,
            ["inference_mode"] = true,
        }.ToJsonString(new() { WriteIndented = true }));
    }

    /// <summary>
    /// A prompt-tuning adapter as PEFT saves one (peft_type PROMPT_TUNING): prompt_embeddings [P,C] f32 and the
    /// PromptTuningConfig fields PEFT reads. The tokenizer path is the base model's (PEFT asks for one with TEXT init).
    /// </summary>
    public static void SavePrompt(string dir, Tensor embeddings, PromptTuningConfig cfg, ModelConfig model, string baseModel, IBackend be)
    {
        using var copy = embeddings.IsHost ? null : be.ToHost(embeddings);
        WriteVirtualTokens(dir, copy ?? embeddings, new JsonObject
        {
            ["peft_type"] = "PROMPT_TUNING",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = baseModel,
            ["revision"] = null,
            ["inference_mode"] = true,
            ["num_virtual_tokens"] = cfg.VirtualTokens,
            ["token_dim"] = model.HiddenSize,
            ["num_transformer_submodules"] = 1,
            ["num_attention_heads"] = model.NumHeads,
            ["num_layers"] = model.NumLayers,
            ["prompt_tuning_init"] = cfg.Init,
            ["prompt_tuning_init_text"] = cfg.InitText,
            ["tokenizer_name_or_path"] = cfg.Init == PromptTuningConfig.Text ? baseModel : null,
            ["tokenizer_kwargs"] = null,
        });
    }

    /// <summary>
    /// A prefix-tuning adapter as PEFT saves one (peft_type PREFIX_TUNING, prefix_projection false): prompt_embeddings
    /// [P, L*2*Hkv*D] f32 and the PrefixTuningConfig fields PEFT reads (token_dim Hkv*D and num_attention_heads Hkv,
    /// as PEFT sets them for grouped-query attention).
    /// </summary>
    public static void SavePrefix(string dir, PrefixKv prefix, ModelConfig model, string baseModel, IBackend be)
    {
        int width = model.NumKvHeads * model.HeadDim;
        WriteVirtualTokens(dir, prefix.ToPeft(be), new JsonObject
        {
            ["peft_type"] = "PREFIX_TUNING",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = baseModel,
            ["revision"] = null,
            ["inference_mode"] = true,
            ["num_virtual_tokens"] = prefix.Tokens,
            ["token_dim"] = width,
            ["num_transformer_submodules"] = 1,
            ["num_attention_heads"] = model.NumKvHeads,
            ["num_layers"] = model.NumLayers,
            ["encoder_hidden_size"] = width,
            ["prefix_projection"] = false,
        });
    }

    // A prompt- or prefix-tuning folder: its one tensor, prompt_embeddings (a host tensor), and its config.
    private static void WriteVirtualTokens(string dir, Tensor embeddings, JsonObject config)
    {
        Directory.CreateDirectory(dir);
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), [new(PromptTuningAdapter.TensorName, embeddings)], new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(dir, "adapter_config.json"), config.ToJsonString(new() { WriteIndented = true }));
    }

    public static JsonObject ConfigJson(LoraConfig cfg, string baseModel) => new()
    {
        ["peft_type"] = "LORA",
        ["task_type"] = "CAUSAL_LM",
        ["base_model_name_or_path"] = baseModel,
        ["r"] = cfg.Rank,
        ["lora_alpha"] = cfg.Alpha,
        ["lora_dropout"] = cfg.Dropout,
        ["use_rslora"] = cfg.UseRsLora,
        ["target_modules"] = cfg.TargetRegex != null ? JsonValue.Create(cfg.TargetRegex) : new JsonArray(cfg.TargetList!.Select(t => (JsonNode)t).ToArray()),
        ["bias"] = "none",
        ["fan_in_fan_out"] = false,
        ["use_dora"] = cfg.UseDora,
        ["init_lora_weights"] = true,
        ["inference_mode"] = true,
        ["modules_to_save"] = null,
        ["layers_to_transform"] = null,
        ["layers_pattern"] = null,
        ["rank_pattern"] = new JsonObject(cfg.RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Rank))),
        ["alpha_pattern"] = new JsonObject(cfg.AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Alpha))),
        ["revision"] = null,
    };
}
