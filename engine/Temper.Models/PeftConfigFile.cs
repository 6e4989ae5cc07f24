// An adapter folder's adapter_config.json read as JSON, and its peft_type (LORA when the field is absent, as in
// PEFT's oldest files): LoraConfig and PromptTuningAdapter read their fields from it, and callers that take either
// kind of adapter look at the type first.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models;

public static class PeftConfigFile
{
    public const string Lora = "LORA", PromptTuning = "PROMPT_TUNING", PrefixTuning = "PREFIX_TUNING";

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

    public static string TypeOf((string Path, JsonObject Json) file)
    {
        var node = file.Json["peft_type"];
        if (node == null) return Lora;
        if (node.GetValueKind() != JsonValueKind.String) throw new TemperException($"{file.Path}: peft_type must be a string");
        return node.GetValue<string>();
    }
}
