// A PEFT (IA)^3 adapter folder (peft_type IA3: adapter_config.json + adapter_model.safetensors), as PEFT's
// tuners/ia3 defines it: each targeted linear module has one learned vector ia3_l, saved as
// base_model.model.<module>.ia3_l. A module that is not feedforward scales its OUTPUT, y = (x W^T + b) * l, with
// l [Out,1] on disk; a feedforward module (feedforward_modules, a subset of target_modules) scales its INPUT,
// y = (x * l) W^T + b, with l [1,In] on disk. Applied unmerged (Ia3View on the projection) or merged as PEFT's
// merge does: W[o,:] *= l[o] and b[o] *= l[o] (not feedforward), W[:,i] *= l[i] (feedforward, bias untouched).
// Options Temper does not implement are refused by name.
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Models;

/// <summary>One projection's (IA)^3 vector: Vector f32 [Out] (output scaling) or [In] (Feedforward: input scaling), on the backend,
/// beside a vector of ones of the same length (the unit "norm" the backend's DoRA row-scaling ops take).</summary>
public sealed class Ia3View(Tensor vector, bool feedforward, Tensor ones)
{
    public Tensor Vector { get; } = vector;
    public bool Feedforward { get; } = feedforward;
    public Tensor Ones { get; } = ones;

    /// <summary>A view over vector (f32 on be), with its ones made there.</summary>
    public static Ia3View Create(IBackend be, Tensor vector, bool feedforward) =>
        new(vector, feedforward, be.FromHost(Tensor.FromFloats(vector.Shape, Enumerable.Repeat(1f, vector.Shape[0]).ToArray(), "ia3_ones")));
}

/// <summary>PEFT's IA3Config: target_modules and feedforward_modules, each a list of names or a full-match regex.</summary>
public sealed record Ia3Config(IReadOnlyList<string>? TargetList, string? TargetRegex, IReadOnlyList<string>? FeedforwardList, string? FeedforwardRegex)
{
    /// <summary>PEFT's defaults for llama, qwen2 and mistral (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING / ..._FEEDFORWARD_MODULES_MAPPING).</summary>
    public static readonly string[] DefaultTargets = ["k_proj", "v_proj", "down_proj"], DefaultFeedforward = ["down_proj"];

    /// <summary>PEFT's check_target_module_exists: a list entry matches the module named so or ending in "." + entry; a string full-matches.</summary>
    public bool Targets(string module) => TargetRegex != null
        ? FullMatch(TargetRegex, module, "target_modules")
        : TargetList!.Any(t => module == t || module.EndsWith("." + t, StringComparison.Ordinal));

    /// <summary>PEFT's _check_target_module_feedforward: a string full-matches, a list entry matches a module name ending in it.</summary>
    public bool IsFeedforward(string module) => FeedforwardRegex != null
        ? FullMatch(FeedforwardRegex, module, "feedforward_modules")
        : FeedforwardList!.Any(t => module.EndsWith(t, StringComparison.Ordinal));

    // A regex from a config file full-matched with a time limit: a pattern that backtracks without end is refused, not waited on.
    private static bool FullMatch(string pattern, string module, string key)
    {
        try
        {
            return Regex.IsMatch(module, "^(?:" + pattern + ")$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
        }
        catch (RegexMatchTimeoutException)
        {
            throw new TemperException($"'{key}' regex '{pattern}' took over 1 s to match '{module}'");
        }
        catch (ArgumentException e)
        {
            throw new TemperException($"'{key}' regex '{pattern}' is not a valid regular expression ({e.Message.Split('\n')[0]})");
        }
    }

    /// <summary>Checks a config built in code the way Load checks a file's (feedforward a subset of the targets, as PEFT's IA3Config does).</summary>
    public Ia3Config Validated(string where)
    {
        if (TargetList is { Count: 0 }) throw new TemperException($"{where}: no IA3 target modules");
        if (TargetList != null && FeedforwardList != null && FeedforwardList.FirstOrDefault(f => !TargetList.Contains(f)) is { } stray)
            throw new TemperException($"{where}: feedforward module '{stray}' is not among the target modules [{string.Join(", ", TargetList)}]; feedforward_modules must be a subset of target_modules");
        return this;
    }

    /// <summary>A fresh (IA)^3 adapter on w: every targeted layer projection gets l = ones ([Out], or [In] when feedforward), as
    /// PEFT's init_ia3_weights, so the model starts as the base.</summary>
    public void AttachFresh(ModelWeights w, IBackend be)
    {
        foreach (var p in w.Projections.Where(p => Targets(p.Name)))
        {
            bool ff = IsFeedforward(p.Name);
            int n = ff ? p.In : p.Out;
            p.Ia3 = Ia3View.Create(be, be.FromHost(Tensor.FromFloats(new Shape(n), Enumerable.Repeat(1f, n).ToArray(), p.Name + Ia3Adapter.TensorSuffix)), ff);
        }
        if (!w.Projections.Any(p => p.Ia3 != null))
            throw new TemperException($"--ia3-targets {string.Join(",", TargetList ?? [TargetRegex!])}: no projection of the model matches");
    }

    public static Ia3Config Load(string dir)
    {
        var file = PeftConfigFile.Read(dir);
        var (path, o) = file;
        string type = PeftConfigFile.TypeOf(file);
        if (type != PeftConfigFile.Ia3) throw new TemperException($"{path}: not an IA3 adapter (peft_type {type})");
        Refuse(o, path, "fan_in_fan_out", n => n.GetValueKind() == JsonValueKind.True, "fan-in/fan-out (Conv1D) weights");
        Refuse(o, path, "modules_to_save", n => n is JsonArray { Count: > 0 }, "fully trained modules");
        Refuse(o, path, "layers_to_transform", n => n.GetValueKind() != JsonValueKind.Null, "a layer subset");
        Refuse(o, path, "exclude_modules", n => n is JsonArray { Count: > 0 } || n.GetValueKind() == JsonValueKind.String, "excluded modules");
        if (o["task_type"] is { } task && task.GetValueKind() == JsonValueKind.String && task.GetValue<string>() != "CAUSAL_LM")
            throw new TemperException($"{path}: task_type '{task}' is not supported for IA3 (CAUSAL_LM is)");
        var (targets, targetRegex) = Modules(o, path, "target_modules", required: true);
        var (ff, ffRegex) = Modules(o, path, "feedforward_modules", required: false);
        if (ff == null && ffRegex == null) ff = [];
        foreach (var (key, regex) in new[] { ("target_modules", targetRegex), ("feedforward_modules", ffRegex) })
            if (regex != null)
                try { _ = new Regex(regex); }
                catch (ArgumentException e) { throw new TemperException($"{path}: '{key}' regex '{regex}' is not a valid regular expression ({e.Message.Split('\n')[0]})"); }
        return new Ia3Config(targets, targetRegex, ff, ffRegex).Validated($"{path}: 'feedforward_modules'");
    }

    private static (string[]?, string?) Modules(JsonObject o, string path, string key, bool required) => o[key] switch
    {
        null when required => throw new TemperException($"{path}: missing field '{key}'"),
        null => (null, null),
        JsonArray a => (a.Select(x => x?.GetValueKind() == JsonValueKind.String ? x.GetValue<string>() : throw new TemperException($"{path}: '{key}' must be a list of module names or a regex string")).ToArray(), null),
        JsonValue v when v.GetValueKind() == JsonValueKind.String => (null, v.GetValue<string>()),
        _ => throw new TemperException($"{path}: '{key}' must be a list of module names or a regex string"),
    };

    private static void Refuse(JsonObject o, string path, string key, Func<JsonNode, bool> set, string what)
    {
        if (o.TryGetPropertyValue(key, out var n) && n != null && set(n))
            throw new TemperException($"{path}: '{key}' ({what}) is not supported by Temper for IA3 adapters; refusing rather than ignoring it");
    }

    public JsonNode TargetsJson => TargetRegex != null ? JsonValue.Create(TargetRegex) : new JsonArray(TargetList!.Select(t => (JsonNode)t).ToArray());
    public JsonNode FeedforwardJson => FeedforwardRegex != null ? JsonValue.Create(FeedforwardRegex) : new JsonArray(FeedforwardList!.Select(t => (JsonNode)t).ToArray());
}

/// <summary>An IA3 adapter folder read into host vectors, checked against a model when applied or merged.</summary>
public sealed class Ia3Adapter
{
    public const string TensorSuffix = ".ia3_l";

    private Ia3Adapter(string dir, Ia3Config cfg, Dictionary<string, Tensor> vectors)
    {
        Directory = dir;
        Config = cfg;
        Vectors = vectors;
    }

    public string Directory { get; }
    public Ia3Config Config { get; }
    /// <summary>Module name (e.g. model.layers.0.self_attn.k_proj) -> ia3_l as saved ([Out,1] or [1,In]), f32 host tensors.</summary>
    public IReadOnlyDictionary<string, Tensor> Vectors { get; }

    public static Ia3Adapter Load(string dir)
    {
        var cfg = Ia3Config.Load(dir);
        string path = Path.Combine(dir, "adapter_model.safetensors");
        if (!File.Exists(path)) throw new TemperException($"{path}: adapter_model.safetensors not found");
        using var file = SafetensorsFile.Open(path);
        var vectors = new Dictionary<string, Tensor>();
        foreach (var e in file.Entries)
        {
            var m = Regex.Match(e.Name, @"^(?:base_model\.model\.)?(.+)\.ia3_l(?:\.[^.]+)?$");
            if (!m.Success) throw new TemperException($"{path}: tensor '{e.Name}' is not an IA3 vector (<module>.ia3_l)");
            string module = m.Groups[1].Value;
            if (!cfg.Targets(module)) throw new TemperException($"{path}: tensor '{e.Name}' is for module '{module}', which target_modules does not name");
            var t = file.Get(e.Name);
            vectors[module] = Tensor.FromFloats(t.Shape, t.ToFloatArray(), e.Name); // a copy: the file closes here
        }
        if (vectors.Count == 0) throw new TemperException($"{path}: no ia3_l tensors");
        return new Ia3Adapter(dir, cfg, vectors);
    }

    /// <summary>Each vector against its projection: the module exists, is a layer projection, and the vector is [Out,1] (or [1,In] when feedforward). Returns (projection, values, feedforward).</summary>
    private List<(Projection P, float[] L, bool Feedforward)> Resolve(ModelWeights w)
    {
        string path = Path.Combine(Directory, "adapter_model.safetensors");
        var byName = w.Projections.ToDictionary(p => p.Name);
        var list = new List<(Projection, float[], bool)>();
        foreach (var (name, t) in Vectors)
        {
            if (!byName.TryGetValue(name, out var p))
                throw new TemperException(name == w.LmHead.Name ? $"{path}: an IA3 vector on lm_head is not supported by Temper (the decoder layers' projections are)"
                    : $"{path}: adapter module '{name}' does not exist in the model");
            bool ff = Config.IsFeedforward(name);
            var (rows, cols) = ff ? (1, p.In) : (p.Out, 1);
            if (t.Shape.Rank != 2 || t.Shape[0] != rows || t.Shape[1] != cols)
                throw new TemperException($"{path}: tensor '{name}.ia3_l' has shape {t.Shape}; {(ff ? "a feedforward" : "an")} IA3 vector of {name} (weight [{p.Out},{p.In}]) is [{rows},{cols}]");
            list.Add((p, t.ToFloatArray(), ff));
        }
        foreach (var p in w.Projections)
            if (Config.Targets(p.Name) && !Vectors.ContainsKey(p.Name))
                throw new TemperException($"{path}: target module '{p.Name}' has no tensor 'base_model.model.{p.Name}.ia3_l'");
        return list;
    }

    /// <summary>Attaches the vectors unmerged (f32 on the backend): each targeted projection scales its output or input.</summary>
    public void Apply(ModelWeights w, IBackend be)
    {
        foreach (var (p, l, ff) in Resolve(w))
        {
            if (p.Lora != null || p.Ia3 != null) throw new TemperException($"{Directory}: {p.Name} already carries an adapter; attach one at a time");
            p.Ia3 = Ia3View.Create(be, be.FromHost(Tensor.FromFloats(new Shape(l.Length), l, p.Name + TensorSuffix)), ff);
        }
    }

    /// <summary>Merges as PEFT's IA3 Linear.merge: rows of W and the bias scaled (output scaling) or columns of W (feedforward),
    /// in f32 and stored back in W's dtype; NF4 bases are refused.</summary>
    public void Merge(ModelWeights w, IBackend be)
    {
        foreach (var (p, l, ff) in Resolve(w))
        {
            if (p.Nf4 != null) throw new TemperException($"{Directory}: cannot merge into {p.Name}, an NF4 (QLoRA) base weight; load the model without --qlora to merge");
            var merged = p.WeightValues(be);
            int k = p.In;
            for (int o = 0; o < p.Out; o++)
                for (int i = 0; i < k; i++) merged[o * k + i] *= ff ? l[i] : l[o];
            p.ReplaceWeight(be, merged);
            if (!ff && p.Bias != null)
            {
                var bias = p.BiasValues(be);
                for (int o = 0; o < bias.Length; o++) bias[o] *= l[o];
                p.ReplaceBias(be, bias);
            }
        }
    }
}
