// An adapter folder's adapter_config.json read as JSON, and its peft_type (LORA when the field is absent, as in
// PEFT's oldest files): LoraConfig and PromptTuningAdapter read their fields from it, and callers that take either
// kind of adapter look at the type first.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models;

public static class PeftConfigFile
{
    public const string Lora = "LORA", PromptTuning = "PROMPT_TUNING", PrefixTuning = "PREFIX_TUNING", Ia3 = "IA3";

    /// <summary>A prompt- or prefix-tuning adapter: virtual tokens before every sequence, nothing to merge.</summary>
    public static bool IsVirtualTokens(string type) => type is PromptTuning or PrefixTuning;

    /// <summary>DIR/adapter_config.json as a JSON object (its path beside it for messages).</summary>
    public static (string Path, JsonObject Json) Read(string dir)
    {
        string path = System.IO.Path.Combine(dir, "adapter_config.json");
        if (!File.Exists(path)) throw new TemperException($"{path}: adapter_config.json not found");
        try { return (path, JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new TemperException($"{path}: not a JSON object")); }
        catch (JsonException e) { throw new TemperException($"{path}: malformed JSON at line {e.LineNumber + 1}"); }
    }

    /// <summary>The adapter's peft_type.</summary>
    public static string TypeOf(string dir) => TypeOf(Read(dir));

    /// <summary>
    /// A prompt- or prefix-tuning folder's config, checked as both read it: peft_type <paramref name="type"/>, task_type
    /// CAUSAL_LM, one transformer submodule (a decoder-only model).
    /// </summary>
    public static (string Path, JsonObject Json) ReadVirtualTokens(string dir, string type)
    {
        var file = Read(dir);
        var (path, o) = file;
        string kind = type == PromptTuning ? "prompt" : "prefix";
        if (TypeOf(file) != type) throw new TemperException($"{path}: not a {kind}-tuning adapter (peft_type {TypeOf(file)})");
        if (o["num_transformer_submodules"] is { } sub && sub.GetValueKind() == JsonValueKind.Number && sub.GetValue<double>() != 1)
            throw new TemperException($"{path}: num_transformer_submodules {sub} (an encoder-decoder {kind}) is not supported; a decoder-only model has 1");
        if (o["task_type"]?.GetValue<string>() is string task && task != "CAUSAL_LM")
            throw new TemperException($"{path}: task_type '{task}' is not supported for {kind} tuning (CAUSAL_LM is)");
        return file;
    }

    /// <summary>A required positive integer field of the config.</summary>
    public static int PositiveInt((string Path, JsonObject Json) file, string key)
    {
        var n = file.Json[key] ?? throw new TemperException($"{file.Path}: missing field '{key}'");
        return n.GetValueKind() == JsonValueKind.Number && n.GetValue<double>() is double v && v == Math.Floor(v) && v is >= 1 and <= int.MaxValue
            ? (int)v : throw new TemperException($"{file.Path}: '{key}' must be a positive integer");
    }

    /// <summary>
    /// The folder's one tensor, prompt_embeddings, as f32 values [rows, cols] (a copy; the file closes here); any other
    /// tensor, or another shape (<paramref name="why"/> says where the expected one comes from), is refused.
    /// </summary>
    public static float[] ReadPromptEmbeddings(string dir, string kind, int rows, int cols, string why)
    {
        const string name = PromptTuningAdapter.TensorName;
        string weights = System.IO.Path.Combine(dir, "adapter_model.safetensors");
        if (!File.Exists(weights)) throw new TemperException($"{weights}: adapter_model.safetensors not found");
        using var st = Core.SafeTensors.SafetensorsFile.Open(weights);
        var entry = st.Entries.FirstOrDefault(e => e.Name is name or "base_model." + name) ?? throw new TemperException($"{weights}: tensor '{name}' missing");
        foreach (var e in st.Entries)
            if (!ReferenceEquals(e, entry)) throw new TemperException($"{weights}: tensor '{e.Name}' is not part of a {kind}-tuning adapter (only '{name}' is)");
        var t = st.Get(entry.Name);
        if (t.Shape.Rank != 2 || t.Shape[0] != rows || t.Shape[1] != cols)
            throw new TemperException($"{weights}: tensor '{entry.Name}' has shape {t.Shape}; {why} make it [{rows},{cols}]");
        return t.ToFloatArray();
    }

    public static string TypeOf((string Path, JsonObject Json) file)
    {
        var node = file.Json["peft_type"];
        if (node == null) return Lora;
        if (node.GetValueKind() != JsonValueKind.String) throw new TemperException($"{file.Path}: peft_type must be a string");
        return node.GetValue<string>();
    }
}
