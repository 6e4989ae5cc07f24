// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors) read for inference:
// attached to a model's projections unmerged (y = x W^T + s (x A^T) B^T, s = alpha/r or alpha/sqrt(r)
// with rsLoRA; rank_pattern and alpha_pattern give modules their own r and alpha), or merged into the
// weights (W += s B A). A DoRA adapter (use_dora: a magnitude m [Out] per
// module, lora_magnitude_vector) is merged as PEFT merges it, W' = m / ||W + s B A||_row * (W + s B A), and
// only merged for inference: its callers opt in (LanguageModel merges it); training attaches it unmerged
// (Apply with dora: the magnitudes ride on the LoRA views), every other use refuses it in one line.
// modules_to_save copies of embed_tokens / lm_head (ModulesToSave) are read by callers that opt in and
// attached in place of those weights by Apply and Merge. PEFT options Temper does not implement are refused by name, never ignored.
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Models;

public sealed record LoraConfig(int Rank, double Alpha, bool UseRsLora, IReadOnlyList<string>? TargetList, string? TargetRegex, double Dropout)
{
    /// <summary>DoRA (PEFT use_dora): each module also has a magnitude vector; Temper runs it merged only.</summary>
    public bool UseDora { get; init; }

    /// <summary>PEFT's rank_pattern and alpha_pattern: (key, value) in the file's order; a module takes the first key
    /// that matches the end of its name (regex "(^|.*\.)KEY$"), else r and lora_alpha.</summary>
    public IReadOnlyList<(string Key, int Rank)> RankPattern { get; init; } = [];
    public IReadOnlyList<(string Key, double Alpha)> AlphaPattern { get; init; } = [];

    /// <summary>The rank of a module (rank_pattern, else r).</summary>
    public int RankFor(string module) => Match(RankPattern, module) is { } i ? RankPattern[i].Rank : Rank;

    /// <summary>The LoRA scale of a module: alpha / r (or / sqrt(r) with rsLoRA) with its patterned alpha and rank.</summary>
    public float ScaleFor(string module)
    {
        double alpha = Match(AlphaPattern, module) is { } i ? AlphaPattern[i].Alpha : Alpha;
        return ScaleOf(alpha, RankFor(module));
    }

    private float ScaleOf(double alpha, int rank) => (float)(UseRsLora ? alpha / Math.Sqrt(rank) : alpha / rank);

    private static int? Match<T>(IReadOnlyList<(string Key, T Value)> pattern, string module)
    {
        for (int i = 0; i < pattern.Count; i++)
            if (Regex.IsMatch(module, "^(?:(^|.*\\.)" + pattern[i].Key + "$)")) return i; // Python's re.match(rf"(^|.*\.){key}$", module)
        return null;
    }

    public float Scale => ScaleOf(Alpha, Rank);

    /// <summary>PEFT's modules_to_save entries as written (for a language model: embed_tokens and/or lm_head, see ModulesToSave).</summary>
    public IReadOnlyList<string> ModulesToSave { get; init; } = [];

    /// <summary>PEFT's matching: a list matches a module whose name is the entry or ends with "." + entry; a string is a full-match regex.</summary>
    public bool Targets(string module)
    {
        if (TargetRegex != null) return Regex.IsMatch(module, "^(?:" + TargetRegex + ")$");
        return TargetList!.Any(t => module == t || module.EndsWith("." + t, StringComparison.Ordinal));
    }

    /// <summary>Reads adapter_config.json; modules_to_save may name embed_tokens and lm_head (ModulesToSave), anything else
    /// only with <paramref name="allowModulesToSave"/> (a reward model's head).</summary>
    public static LoraConfig Load(string dir, bool allowModulesToSave = false)
    {
        var file = PeftConfigFile.Read(dir);
        var (path, o) = file;
        string type = PeftConfigFile.TypeOf(file);
        if (PeftConfigFile.IsVirtualTokens(type))
            throw new TemperException($"{path}: a {(type == PeftConfigFile.PromptTuning ? "prompt" : "prefix")}-tuning adapter (peft_type {type}) has no LoRA weights; it runs unmerged with generate, chat and logits (--adapter) and continues training with --init-adapter, and cannot be used here");
        if (type == PeftConfigFile.Ia3)
            throw new TemperException($"{path}: an (IA)^3 adapter (peft_type IA3) has no LoRA weights; it is applied by generate, chat and logits (--adapter) and merge, and continues training with --init-adapter, and cannot be used here");
        if (type != PeftConfigFile.Lora) throw new TemperException($"{path}: peft_type '{type}' is not supported (LORA, IA3, PROMPT_TUNING and PREFIX_TUNING are)");
        var saved = o["modules_to_save"] switch
        {
            null => [],
            JsonArray a => a.Select(x => x?.GetValueKind() == JsonValueKind.String ? x.GetValue<string>() : throw new TemperException($"{path}: modules_to_save must be a list of module names")).ToArray(),
            _ => throw new TemperException($"{path}: modules_to_save must be a list of module names"),
        };
        if (!allowModulesToSave)
        {
            foreach (var m in saved)
                if (Models.ModulesToSave.ModuleOf(m) == null)
                    throw new TemperException($"{path}: modules_to_save '{m}' is not supported by Temper (embed_tokens and lm_head are); refusing rather than ignoring it");
            if (saved.Length > 0) Refuse(o, path, "ensure_weight_tying", n => n.GetValueKind() == JsonValueKind.True, "copies of tied embeddings kept tied");
        }
        Refuse(o, path, "layers_to_transform", n => n.GetValueKind() != JsonValueKind.Null, "a layer subset");
        Refuse(o, path, "exclude_modules", n => n is JsonArray { Count: > 0 } || n.GetValueKind() == JsonValueKind.String, "excluded modules");
        Refuse(o, path, "fan_in_fan_out", n => n.GetValueKind() == JsonValueKind.True, "fan-in/fan-out (Conv1D) weights");
        Refuse(o, path, "lora_bias", n => n.GetValueKind() == JsonValueKind.True, "LoRA biases");
        Refuse(o, path, "use_qalora", n => n.GetValueKind() == JsonValueKind.True, "QA-LoRA");
        Refuse(o, path, "trainable_token_indices", n => n.GetValueKind() != JsonValueKind.Null, "trainable token indices");
        Refuse(o, path, "target_parameters", n => n is JsonArray { Count: > 0 }, "target_parameters");
        Refuse(o, path, "alora_invocation_tokens", n => n.GetValueKind() != JsonValueKind.Null, "aLoRA");
        Refuse(o, path, "bias", n => n.GetValueKind() == JsonValueKind.String && n.GetValue<string>() != "none", "bias training");

        int r = o["r"]?.GetValue<int>() ?? 8;
        if (r <= 0) throw new TemperException($"{path}: r must be positive, got {r}");
        double alpha = o["lora_alpha"]?.GetValue<double>() ?? 8;
        bool rs = o["use_rslora"]?.GetValue<bool>() ?? false;
        double dropout = o["lora_dropout"]?.GetValue<double>() ?? 0;
        bool dora = o["use_dora"] is JsonNode d && d.GetValueKind() == JsonValueKind.True;
        var ranks = Pattern(o, path, "rank_pattern", n => n.GetValue<int>() is int v && v > 0 ? v : throw new TemperException($"{path}: rank_pattern ranks must be positive integers"));
        var alphas = Pattern(o, path, "alpha_pattern", n => n.GetValue<double>());
        var tm = o["target_modules"] ?? throw new TemperException($"{path}: missing field 'target_modules'");
        var (list, regex) = tm switch
        {
            JsonArray a => (a.Select(x => x!.GetValue<string>()).ToArray(), (string?)null),
            JsonValue v when v.GetValueKind() == JsonValueKind.String => ((string[]?)null, v.GetValue<string>()),
            _ => throw new TemperException($"{path}: target_modules must be a list of names or a regex string"),
        };
        var cfg = new LoraConfig(r, alpha, rs, list, regex, dropout) { UseDora = dora, RankPattern = ranks, AlphaPattern = alphas, ModulesToSave = saved };
        if (!allowModulesToSave && saved.Any(m => Models.ModulesToSave.ModuleOf(m) == Models.ModulesToSave.HeadModule) && cfg.Targets(Models.ModulesToSave.HeadModule))
            throw new TemperException($"{path}: lm_head is both a LoRA target and in modules_to_save; one module cannot be both");
        return cfg;
    }

    // rank_pattern / alpha_pattern: an object of module-name keys to numbers, in its order.
    private static (string, T)[] Pattern<T>(JsonObject o, string path, string key, Func<JsonNode, T> value)
    {
        if (o[key] is null) return [];
        if (o[key] is not JsonObject d) throw new TemperException($"{path}: '{key}' must be an object of module names to numbers");
        try
        {
            return d.Select(kv => (kv.Key, value(kv.Value ?? throw new InvalidOperationException()))).ToArray();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new TemperException($"{path}: '{key}' must map module names to numbers");
        }
    }

    private static void Refuse(JsonObject o, string path, string key, Func<JsonNode, bool> set, string what)
    {
        if (o.TryGetPropertyValue(key, out var n) && n != null && set(n))
            throw new TemperException($"{path}: '{key}' ({what}) is not supported by Temper yet; refusing rather than ignoring it");
    }
}

public sealed class LoraAdapter : IDisposable
{
    private readonly SafetensorsFile _file;

    private LoraAdapter(string dir, LoraConfig cfg, SafetensorsFile file, Dictionary<string, (Tensor A, Tensor B)> modules, Dictionary<string, Tensor> magnitudes)
    {
        Directory = dir;
        Config = cfg;
        _file = file;
        Modules = modules;
        Magnitudes = magnitudes;
    }

    public string Directory { get; }
    public LoraConfig Config { get; }
    /// <summary>Module name (e.g. model.layers.0.self_attn.q_proj) -> A [r,In], B [Out,r], f32 host tensors.</summary>
    public IReadOnlyDictionary<string, (Tensor A, Tensor B)> Modules { get; }
    /// <summary>DoRA: module name -> magnitude m [Out] (f32 host tensors); empty for plain LoRA.</summary>
    public IReadOnlyDictionary<string, Tensor> Magnitudes { get; }
    /// <summary>Tensors of fully trained modules (modules_to_save), by name without the base_model.model. prefix (e.g. score.weight).</summary>
    public IReadOnlyDictionary<string, Tensor> SavedModules { get; private init; } = new Dictionary<string, Tensor>();

    /// <summary>
    /// Reads an adapter folder. <paramref name="savedModules"/> names the modules_to_save the caller
    /// handles (a reward model's "score"); their tensors land in <see cref="SavedModules"/>. A DoRA adapter
    /// is refused unless <paramref name="allowDora"/> (a caller that merges it). Copies of embed_tokens / lm_head
    /// (modules_to_save) are refused unless <paramref name="embeddingCopies"/> (a caller whose Apply or Merge uses them).
    /// </summary>
    public static LoraAdapter Load(string dir, IReadOnlyCollection<string>? savedModules = null, bool allowDora = false, bool embeddingCopies = false)
    {
        var cfg = LoraConfig.Load(dir, allowModulesToSave: savedModules != null);
        if (savedModules == null && cfg.ModulesToSave.Count > 0 && !embeddingCopies)
            throw new TemperException($"{Path.Combine(dir, "adapter_config.json")}: modules_to_save ({string.Join(", ", cfg.ModulesToSave)}: full copies of the embedding / LM head) " +
                                      "is applied by generate, chat, logits, merge and training's --init-adapter, not here");
        savedModules ??= cfg.ModulesToSave.Select(m => Models.ModulesToSave.ModuleOf(m)!).Distinct().ToArray();
        if (cfg.UseDora && !allowDora)
            throw new TemperException($"{Path.Combine(dir, "adapter_config.json")}: a DoRA adapter (use_dora) runs merged in Temper, not as a separate adapter here: " +
                                      "merge it (temper merge), or pass it to generate, chat or logits with --adapter, which merge it");
        string path = Path.Combine(dir, "adapter_model.safetensors");
        if (!File.Exists(path)) throw new TemperException($"{path}: adapter_model.safetensors not found");
        var file = SafetensorsFile.Open(path);
        var a = new Dictionary<string, Tensor>();
        var b = new Dictionary<string, Tensor>();
        var saved = new Dictionary<string, Tensor>();
        var magnitudes = new Dictionary<string, Tensor>();
        foreach (var e in file.Entries)
        {
            string bare = e.Name.StartsWith("base_model.model.", StringComparison.Ordinal) ? e.Name["base_model.model.".Length..] : e.Name;
            if (savedModules.Any(s => bare.StartsWith(s + ".", StringComparison.Ordinal) && !bare.Contains(".lora_", StringComparison.Ordinal)))
            {
                saved[bare] = file.Get(e.Name).ToF32();
                continue;
            }
            var mag = Regex.Match(e.Name, @"^(?:base_model\.model\.)?(.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$");
            if (mag.Success && cfg.UseDora)
            {
                var v = file.Get(e.Name);
                if (v.Shape.Rank != 1) throw new TemperException($"{path}: tensor '{e.Name}' has shape {v.Shape}, expected a vector [Out]");
                magnitudes[mag.Groups[1].Value] = v.ToF32();
                continue;
            }
            var m = Regex.Match(e.Name, @"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$");
            if (!m.Success) throw new TemperException($"{path}: tensor '{e.Name}' is not a LoRA A/B weight");
            var t = file.Get(e.Name);
            if (t.Shape.Rank != 2) throw new TemperException($"{path}: tensor '{e.Name}' has shape {t.Shape}, expected a matrix");
            (m.Groups[2].Value == "A" ? a : b)[m.Groups[1].Value] = t.ToF32();
        }
        var modules = new Dictionary<string, (Tensor, Tensor)>();
        foreach (var (name, ta) in a)
        {
            if (!b.TryGetValue(name, out var tb)) throw new TemperException($"{path}: '{name}' has lora_A but no lora_B");
            int rank = cfg.RankFor(name);
            if (ta.Shape[0] != rank || tb.Shape[1] != rank)
                throw new TemperException($"{path}: '{name}' has A {ta.Shape} and B {tb.Shape}, which do not match its r={rank}");
            modules[name] = (ta, tb);
        }
        foreach (var name in b.Keys)
            if (!a.ContainsKey(name)) throw new TemperException($"{path}: '{name}' has lora_B but no lora_A");
        if (cfg.UseDora)
        {
            foreach (var name in modules.Keys)
                if (!magnitudes.ContainsKey(name)) throw new TemperException($"{path}: DoRA module '{name}' has no lora_magnitude_vector");
            foreach (var name in magnitudes.Keys)
                if (!modules.ContainsKey(name)) throw new TemperException($"{path}: '{name}' has a lora_magnitude_vector but no lora_A/lora_B");
        }
        if (cfg.ModulesToSave.Count > 0 && savedModules.All(m => Models.ModulesToSave.ModuleOf(m) != null))
            foreach (var module in savedModules)
            {
                if (!saved.ContainsKey(module + ".weight")) throw new TemperException($"{path}: modules_to_save names {module}, but tensor 'base_model.model.{module}.weight' is missing");
                if (saved.Keys.FirstOrDefault(k => k.StartsWith(module + ".", StringComparison.Ordinal) && k != module + ".weight") is { } other)
                    throw new TemperException($"{path}: tensor 'base_model.model.{other}' of modules_to_save {module} is not supported (only its weight is)");
            }
        return new LoraAdapter(dir, cfg, file, modules, magnitudes) { SavedModules = saved };
    }

    /// <summary>Checks every adapter module against the model's projections: name and shapes.</summary>
    private List<(Projection P, Tensor A, Tensor B)> Resolve(ModelWeights w)
    {
        var byName = w.Projections.Append(w.LmHead).ToDictionary(p => p.Name);
        var list = new List<(Projection, Tensor, Tensor)>();
        foreach (var (name, (a, b)) in Modules)
        {
            if (!byName.TryGetValue(name, out var p))
                throw new TemperException($"{Directory}: adapter module '{name}' does not exist in the model");
            if (a.Shape[1] != p.In || b.Shape[0] != p.Out)
                throw new TemperException($"{Directory}: adapter module '{name}' has A {a.Shape} and B {b.Shape}, the model's weight is [{p.Out},{p.In}]");
            if (Magnitudes.TryGetValue(name, out var mag) && mag.Shape[0] != p.Out)
                throw new TemperException($"{Directory}: adapter module '{name}' has a magnitude of {mag.Shape[0]} values, the model's weight has {p.Out} rows");
            list.Add((p, a, b));
        }
        return list;
    }

    /// <summary>Attaches the adapter unmerged: each targeted projection computes its LoRA term. A DoRA adapter
    /// only when <paramref name="dora"/> (training continues it), its magnitude copied into each view as f32.
    /// modules_to_save copies of the embedding / LM head stand in for them: f32 when <paramref name="trainable"/>
    /// (training continues them), else in the weights' dtype.</summary>
    public void Apply(ModelWeights w, IBackend be, bool dora = false, bool trainable = false)
    {
        if (Config.UseDora && !dora) throw new TemperException($"{Directory}: a DoRA adapter (use_dora) runs merged in Temper; merge it (temper merge)");
        var resolved = Resolve(w);
        AttachCopies(w, be, trainable);
        foreach (var (p, a, b) in resolved)
            p.Lora = new LoraView(be.FromHost(a), be.FromHost(b), Config.ScaleFor(p.Name),
                Magnitudes.TryGetValue(p.Name, out var m) ? be.FromHost(Tensor.FromFloats(m.Shape, m.ToFloatArray(), p.Name + ".lora_magnitude_vector")) : null);
    }

    /// <summary>The modules_to_save copies of the embedding [V,C] and LM head [V,C] (f32 host tensors; null where the adapter has none).</summary>
    public (Tensor? Embed, Tensor? Head) LanguageModelCopies =>
        (SavedModules.GetValueOrDefault(ModulesToSave.EmbedModule + ".weight"), SavedModules.GetValueOrDefault(ModulesToSave.HeadModule + ".weight"));

    // PEFT replaces a modules_to_save module by its copy, in unmerged use and in merge_and_unload alike.
    private void AttachCopies(ModelWeights w, IBackend be, bool f32)
    {
        var (embed, head) = LanguageModelCopies;
        if (embed != null || head != null) ModulesToSave.Attach(w, be, embed, head, f32, Path.Combine(Directory, "adapter_model.safetensors"));
    }

    /// <summary>Merges the adapter into the weights (W += weight s B A, in f32, stored back in W's dtype; DoRA then scales each
    /// row of W to its magnitude m / ||W + s B A||, and takes weight 1 only); weights become new host tensors. modules_to_save
    /// copies replace the embedding / LM head (weight 1 only).</summary>
    public void Merge(ModelWeights w, IBackend be, double weight = 1)
    {
        if (Config.UseDora && weight != 1) throw new TemperException($"{Directory}: a DoRA adapter (use_dora) merges with weight 1 only (got {weight})");
        var resolved = Resolve(w);
        if (LanguageModelCopies is not (null, null))
        {
            if (weight != 1) throw new TemperException($"{Directory}: an adapter with modules_to_save copies (embed_tokens / lm_head) replaces those weights, so it merges with weight 1 only (got {weight})");
            AttachCopies(w, be, f32: false);
        }
        foreach (var (p, a, b) in resolved)
        {
            if (p.Nf4 != null) throw new TemperException($"{Directory}: cannot merge into {p.Name}, an NF4 (QLoRA) base weight; load the model without --qlora to merge");
            var merged = p.WeightValues(be);
            AddScaledProduct(merged, b.Floats, a.Floats, p.Out, p.In, a.Shape[0], (float)(weight * Config.ScaleFor(p.Name)));
            if (Magnitudes.TryGetValue(p.Name, out var magnitude)) ScaleRowsToMagnitude(merged, magnitude.Floats, p.Out, p.In);
            p.ReplaceWeight(be, merged);
            p.Lora = null;
        }
    }

    /// <summary>w[M,K] += s * (b[M,r] a[r,K]), the product in f32 as PEFT computes B @ A * scaling.</summary>
    internal static void AddScaledProduct(Span<float> w, ReadOnlySpan<float> b, ReadOnlySpan<float> a, int m, int k, int r, float s)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < k; j++)
            {
                float acc = 0;
                for (int x = 0; x < r; x++) acc += b[i * r + x] * a[x * k + j];
                w[i * k + j] += s * acc;
            }
    }

    /// <summary>DoRA: w[M,K] row i times m[i] / ||w row i|| (the norm of W + s B A, as PEFT's merge computes it).</summary>
    internal static void ScaleRowsToMagnitude(Span<float> w, ReadOnlySpan<float> m, int rows, int k)
    {
        for (int i = 0; i < rows; i++)
        {
            var row = w.Slice(i * k, k);
            double sum = 0;
            foreach (float x in row) sum += (double)x * x;
            float factor = (float)(m[i] / Math.Sqrt(sum));
            foreach (ref float x in row) x *= factor;
        }
    }

    public void Dispose() => _file.Dispose();
}
