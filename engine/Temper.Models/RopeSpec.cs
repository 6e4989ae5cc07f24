// RoPE settings from config.json: theta and the scaling type (default, linear, llama3). Reads
// transformers 5's rope_parameters or transformers 4's rope_theta + rope_scaling ({type|rope_type}).
// yarn, dynamic, longrope and others are refused by name rather than run wrongly.
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models;

public sealed record RopeSpec(string Type, double Theta, double Factor = 1, double LowFreqFactor = 1, double HighFreqFactor = 4, double OriginalMaxPositions = 8192)
{
    public RopeFrequencies Frequencies(int headDim) => Type switch
    {
        "default" => RopeFrequencies.Default(headDim, Theta),
        "linear" => RopeFrequencies.Linear(headDim, Theta, Factor),
        "llama3" => RopeFrequencies.Llama3(headDim, Theta, Factor, LowFreqFactor, HighFreqFactor, OriginalMaxPositions),
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
            _ => throw new TemperException($"{path}: unsupported RoPE type '{type}' in {where} (Temper supports default, linear and llama3)"),
        };
    }

    private static double? Num(JsonObject o, string key, string path, string? parent)
    {
        if (!o.TryGetPropertyValue(key, out var n) || n is null) return null;
        try { return n.GetValue<double>(); }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new TemperException($"{path}: field '{(parent != null ? parent + "." : "")}{key}' must be a number");
        }
    }
}
