// The llama.cpp pre-tokenizers (tokenizer.ggml.pre) Temper maps to and from a byte-level BPE tokenizer.json, one table
// for both directions: each name's tokenizer.json pre_tokenizer (Build; GGUF import writes it, GGUF export names a
// tokenizer.json whose pre_tokenizer has the same form), the aliases llama.cpp's llama-vocab.cpp gives the same regexes
// (Canonical), and the two settings that go with a name (llama-bpe: ignore_merges, as llama.cpp sets it; qwen2: NFC).
//   gpt-2: ByteLevel's own regex; llama-bpe: Llama 3's Split; qwen2: Qwen's Split; smollm: single Digits, then
//   ByteLevel's regex; tekken: Mistral NeMo's Split; gpt-4o: GPT-4o's Split (Phi-4, Llama 4). Each Split isolates its
//   matches and is followed by a regex-free ByteLevel, as those tokenizer.json files have it.
using System.Text.Json.Nodes;
using Temper.Models.Text;

namespace Temper.Models;

internal static class GgufPreTokenizers
{
    public static readonly IReadOnlyList<string> Names = ["gpt-2", "llama-bpe", "qwen2", "smollm", "tekken", "gpt-4o"];

    /// <summary>The name of the table for one of llama.cpp's names or aliases, or null.</summary>
    public static string? Canonical(string pre) => pre switch
    {
        "gpt-2" or "phi-2" or "jina-es" or "jina-de" or "gigachat" or "jina-v2-es" or "jina-v2-de" or "a.x-4.0" or "mellum" => "gpt-2",
        "llama-bpe" or "llama3" or "llama-v3" or "falcon3" or "falcon-h1" or "pixtral" or "midm-2.0" or "lfm2" => "llama-bpe",
        "qwen2" or "deepseek-r1-qwen" or "kormo" or "megrez" => "qwen2",
        "smollm" or "codeshell" or "exaone" or "minerva-7b" => "smollm",
        "tekken" => "tekken",
        "gpt-4o" or "llama4" => "gpt-4o",
        _ => null,
    };

    public static bool IgnoresMerges(string name) => name == "llama-bpe";

    public static bool Nfc(string name) => name == "qwen2";

    /// <summary>The tokenizer.json pre_tokenizer of a name in Names.</summary>
    public static JsonNode Build(string name) => name switch
    {
        "gpt-2" => ByteLevel(true),
        "llama-bpe" => Sequence(Split(PreTokenizerPatterns.Llama3), ByteLevel(false)),
        "qwen2" => Sequence(Split(PreTokenizerPatterns.Qwen), ByteLevel(false)),
        "smollm" => Sequence(new JsonObject { ["type"] = "Digits", ["individual_digits"] = true }, ByteLevel(true)),
        "tekken" => Sequence(Split(PreTokenizerPatterns.Tekken), ByteLevel(false)),
        "gpt-4o" => Sequence(Split(PreTokenizerPatterns.Gpt4o), ByteLevel(false)),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private static JsonNode Split(string pattern) => new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = pattern }, ["behavior"] = "Isolated", ["invert"] = false };
    private static JsonNode ByteLevel(bool regex) => new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = regex };
    private static JsonNode Sequence(params JsonNode[] steps) => new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(steps) };
}
