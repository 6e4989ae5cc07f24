// transformers 5 separates a tokenizer's architecture from its trained vocabulary: AutoTokenizer picks
// the tokenizer class by the model type, and a class such as Qwen2Tokenizer builds its own normalizer
// and pre-tokenizer, keeping only the vocabulary, merges and added tokens of tokenizer.json. For a
// generic tokenizer_class (TokenizersBackend) in a qwen2 or qwen3 model folder it therefore splits digits one
// by one (Qwen's regex) whatever tokenizer.json's pre_tokenizer says. Temper follows that, so ids
// match what a transformers 5 user gets. Real Qwen2 folders already ship this very pipeline.
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Temper.Models.Text;

internal static class TokenizerArchitecture
{

    /// <summary>The parts with the model class's own pipeline where transformers 5 imposes one.</summary>
    public static TokenizerParts Apply(TokenizerParts parts, string dir)
    {
        if (!ImposesQwenPipeline(dir)) return parts;
        var pre = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = PreTokenizerPatterns.Qwen }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false }),
        };
        using var preDoc = JsonDocument.Parse(pre.ToJsonString());
        using var nfcDoc = JsonDocument.Parse("""{"type":"NFC"}""");
        return parts with
        {
            Normalizer = PipelineJsonReader.ReadNormalizer(nfcDoc.RootElement),
            PreTokenizer = PipelineJsonReader.ReadPreTokenizer(preDoc.RootElement),
        };
    }

    /// <summary>Whether transformers 5 (and so Temper) splits this folder's text with Qwen's own pipeline.</summary>
    public static bool ImposesQwenPipeline(string dir) =>
        ModelType(dir) is "qwen2" or "qwen3" && TokenizerClass(dir) is null or "TokenizersBackend" or "Qwen2Tokenizer" or "Qwen2TokenizerFast";

    private static string? ModelType(string dir) => Field(Path.Combine(dir, "config.json"), "model_type");
    private static string? TokenizerClass(string dir) => Field(Path.Combine(dir, "tokenizer_config.json"), "tokenizer_class");

    private static string? Field(string path, string key)
    {
        if (!File.Exists(path)) return null;
        try { return JsonNode.Parse(File.ReadAllText(path))?[key]?.GetValue<string>(); }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { return null; } // the owning loader reports malformed files
    }
}
