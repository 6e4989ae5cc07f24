// RoPE settings from config.json: theta and the scaling type (default, linear, llama3, yarn). Reads
// transformers 5's rope_parameters or transformers 4's rope_theta + rope_scaling ({type|rope_type}).
// yarn follows transformers' _compute_yarn_parameters as late 4.x and 5 compute it (they agree): the
// explicit factor is used (4.x releases of the DeepSeek-V3 era replaced it by max_position_embeddings /
// original_max_position_embeddings whenever the latter was set, 40960 / 32768 = 1.25 instead of Qwen3's
// 4; the first releases with yarn had no mscale, truncate or original length and ramped over
// max_position_embeddings); original_max_position_embeddings defaults to max_position_embeddings;
// beta_fast/beta_slow default to 32/1 (also when 0, as Python's `or` does), truncate to true; and
// attention_factor (else mscale/mscale_all_dim when both are non-zero, else 0.1 ln(factor) + 1)
// multiplies cos and sin. The config's form decides the version: with rope_parameters (transformers 5)
// a top-level original_max_position_embeddings wins over the one inside and "factor": null means
// max_position_embeddings / original; with rope_scaling (4.x) only rope_scaling's fields count and factor
// is required. transformers only warns about factor < 1 and a negative attention_factor and fails on a
// negative beta; Temper refuses all three (and attention_factor 0) with a one-line error.
// dynamic is refused: below max_position_embeddings it is exactly the default RoPE, but past it (the only
// reason to set it) transformers recomputes the frequencies from the longest position of each forward, so
// keys already in a KV cache keep the frequencies of the call that wrote them and the result depends on
// how a sequence was split into calls; Temper rotates each key once into its caches (contiguous, paged,
// prefix-shared), so it cannot reproduce that. longrope and any other type are refused by name.
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models;

public sealed record RopeSpec(string Type, double Theta, double Factor = 1, double LowFreqFactor = 1, double HighFreqFactor = 4, double OriginalMaxPositions = 8192)
{
    /// <summary>yarn: the rotations bounding the ramp (transformers' defaults 32 and 1).</summary>
    public double BetaFast { get; init; } = 32;
    public double BetaSlow { get; init; } = 1;
    /// <summary>yarn: the factor on cos and sin when given; else derived from Mscale/MscaleAllDim or the factor.</summary>
    public double? AttentionFactor { get; init; }
    public double? Mscale { get; init; }
    public double? MscaleAllDim { get; init; }
    /// <summary>yarn: floor/ceil the ramp's bounds (transformers' default true).</summary>
    public bool Truncate { get; init; } = true;

    public RopeFrequencies Frequencies(int headDim) => Type switch
    {
        "default" => RopeFrequencies.Default(headDim, Theta),
        "linear" => RopeFrequencies.Linear(headDim, Theta, Factor),
        "llama3" => RopeFrequencies.Llama3(headDim, Theta, Factor, LowFreqFactor, HighFreqFactor, OriginalMaxPositions),
        "yarn" => RopeFrequencies.Yarn(headDim, Theta, Factor, OriginalMaxPositions, BetaFast, BetaSlow, AttentionFactor, Mscale, MscaleAllDim, Truncate),
        _ => throw new TemperException($"unsupported RoPE type '{Type}'"),
    };

    internal static RopeSpec Parse(JsonObject root, string path, int headDim)
    {
        JsonObject? p = root["rope_parameters"] as JsonObject;
        JsonObject? scaling = root["rope_scaling"] as JsonObject;
        double theta;
        JsonObject? spec;
        if (p != null)
        {
            theta = Num(p, "rope_theta", path, "rope_parameters") ?? Num(root, "rope_theta", path, null) ?? 10000;
            spec = p;
        }
        else
        {
            theta = Num(root, "rope_theta", path, null) ?? 10000;
            spec = scaling;
        }
        string type = "default";
        if (spec != null)
        {
            var t = spec["rope_type"] ?? spec["type"];
            if (t != null) type = t.GetValue<string>();
        }
        if (p != null && p["partial_rotary_factor"] is JsonValue prf && prf.GetValue<double>() != 1.0)
            throw new TemperException($"{path}: partial_rotary_factor is not supported");
        string where = p != null ? "rope_parameters" : "rope_scaling";
        double Need(string key) => Num(spec!, key, path, where) ?? throw new TemperException($"{path}: {where} of type '{type}' is missing '{key}'");
        return type switch
        {
            "default" => new RopeSpec("default", theta),
            "linear" => new RopeSpec("linear", theta, Need("factor")),
            "llama3" => new RopeSpec("llama3", theta, Need("factor"), Need("low_freq_factor"), Need("high_freq_factor"), Need("original_max_position_embeddings")),
            "yarn" => Yarn(root, spec!, path, where, theta, transformers5: p != null),
            "dynamic" => throw new TemperException($"{path}: unsupported RoPE type 'dynamic' in {where}: transformers recomputes its frequencies from the longest position of each call past max_position_embeddings, so keys already cached keep older ones and results depend on how the sequence was split; Temper rotates each key once into its KV cache"),
            _ => throw new TemperException($"{path}: unsupported RoPE type '{type}' in {where} (Temper supports default, linear, llama3 and yarn)"),
        };
    }

    private static RopeSpec Yarn(JsonObject root, JsonObject spec, string path, string where, double theta, bool transformers5)
    {
        double? maxPositions = Num(root, "max_position_embeddings", path, null);
        // transformers 5 moves a top-level original_max_position_embeddings (Phi-3 style) over the one in rope_parameters.
        double? original = (transformers5 ? Num(root, "original_max_position_embeddings", path, null) : null)
            ?? Num(spec, "original_max_position_embeddings", path, where)
            ?? maxPositions
            ?? throw new TemperException($"{path}: {where} of type 'yarn' needs 'original_max_position_embeddings' (or a top-level 'max_position_embeddings')");
        if (original <= 0) throw new TemperException($"{path}: field '{where}.original_max_position_embeddings' must be > 0, not {original}");
        double factor;
        if (spec.TryGetPropertyValue("factor", out var fn) && fn is null && transformers5)
            factor = (maxPositions ?? throw new TemperException($"{path}: {where}.factor is null and there is no 'max_position_embeddings' to derive it from")) / original.Value;
        else
            factor = Num(spec, "factor", path, where) ?? throw new TemperException($"{path}: {where} of type 'yarn' is missing 'factor'");
        if (!(factor >= 1)) throw new TemperException($"{path}: field '{where}.factor' must be >= 1 for yarn, not {factor}");
        double? attention = Num(spec, "attention_factor", path, where);
        if (attention is { } a && !(a > 0)) throw new TemperException($"{path}: field '{where}.attention_factor' must be > 0, not {a}");
        double? betaFast = Num(spec, "beta_fast", path, where), betaSlow = Num(spec, "beta_slow", path, where);
        // A negative beta is a log of a negative number in transformers (math domain error).
        foreach (var (key, value) in new[] { ("beta_fast", betaFast), ("beta_slow", betaSlow) })
            if (value < 0) throw new TemperException($"{path}: field '{where}.{key}' must be > 0, not {value}");
        bool truncate = true;
        if (spec.TryGetPropertyValue("truncate", out var tn) && tn is not null)
        {
            try { truncate = tn.GetValue<bool>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new TemperException($"{path}: field '{where}.truncate' must be true or false");
            }
        }
        return new RopeSpec("yarn", theta, factor, OriginalMaxPositions: original.Value)
        {
            // Python's `x or default`: a missing, null or zero beta takes the default.
            BetaFast = betaFast is { } bf && bf != 0 ? bf : 32,
            BetaSlow = betaSlow is { } bs && bs != 0 ? bs : 1,
            AttentionFactor = attention,
            Mscale = Num(spec, "mscale", path, where),
            MscaleAllDim = Num(spec, "mscale_all_dim", path, where),
            Truncate = truncate,
        };
    }

    private static double? Num(JsonObject o, string key, string path, string? parent)
    {
        if (!o.TryGetPropertyValue(key, out var n) || n is null) return null;
        // A parsed number reads as double; one set from C# (JsonValue<int>, <long>) only as itself.
        if (n is JsonValue v)
        {
            if (v.TryGetValue<double>(out var d)) return d;
            if (v.TryGetValue<long>(out var l)) return l;
            if (v.TryGetValue<int>(out var i)) return i;
        }
        throw new TemperException($"{path}: field '{(parent != null ? parent + "." : "")}{key}' must be a number");
    }
}
