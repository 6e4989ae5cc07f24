// Reads an HF tokenizer.json (and the bos/eos/pad names of tokenizer_config.json) into the parts the
// tokenizer runs: BPE model, normalizer, pre-tokenizer steps, decoder, added tokens. Whatever the file
// says that these parts cannot honour (a Unigram model, an unknown pre-tokenizer, a regex .NET cannot
// read) is a TemperException naming the file, never a silently different tokenization.
using System.Text.Json;
using Temper.Core;
using static Temper.Models.Text.JsonFields;

namespace Temper.Models.Text;

internal sealed record TokenizerParts(
    BpeModel Model,
    IReadOnlyDictionary<string, int> Vocab,
    TextNormalizer? Normalizer,
    IReadOnlyList<PreTokenizerStep> PreTokenizer,
    TokenDecoder? Decoder,
    IReadOnlyList<AddedToken> AddedTokens)
{
    /// <summary>The post_processor's special tokens around a single text.</summary>
    public SpecialTokenTemplate SingleTemplate { get; init; } = SpecialTokenTemplate.None;
}

internal readonly record struct SpecialTokenNames(string? Bos, string? Eos, string? Pad);

internal static class TokenizerJsonReader
{
    public static TokenizerParts Read(string path)
    {
        using var doc = ParseFile(path);
        try
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException("the top level is not a JSON object");
            if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException("no 'model' object");
            var (bpe, vocab) = ReadModel(model);
            return new TokenizerParts(
                bpe,
                vocab,
                PipelineJsonReader.ReadNormalizer(Optional(root, "normalizer")),
                PipelineJsonReader.ReadPreTokenizer(Optional(root, "pre_tokenizer")),
                PipelineJsonReader.ReadDecoder(Optional(root, "decoder")),
                ReadAddedTokens(Optional(root, "added_tokens")))
            { SingleTemplate = PostProcessorReader.Read(Optional(root, "post_processor")) };
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new TemperException($"{path}: {e.Message.ReplaceLineEndings(" ")}", e);
        }
    }

    /// <summary>The bos/eos/pad token names of tokenizer_config.json (a string or an object with "content").</summary>
    public static SpecialTokenNames ReadSpecialTokenNames(string path)
    {
        using var doc = ParseFile(path);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new TemperException($"{path}: the top level is not a JSON object");
        return new SpecialTokenNames(TokenName(root, "bos_token", path), TokenName(root, "eos_token", path), TokenName(root, "pad_token", path));
    }

    private static string? TokenName(JsonElement root, string key, string path)
    {
        if (!root.TryGetProperty(key, out var value)) return null;
        return value.ValueKind switch
        {
            JsonValueKind.Null => null,
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            _ => throw new TemperException($"{path}: '{key}' is neither a string nor an object with 'content'"),
        };
    }

    private static JsonDocument ParseFile(string path)
    {
        if (!File.Exists(path)) throw new TemperException($"{path}: file not found");
        try
        {
            using var stream = File.OpenRead(path);
            return JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = true, MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new TemperException($"{path}: malformed JSON at line {(e.LineNumber ?? 0) + 1}: {e.Message.ReplaceLineEndings(" ")}", e);
        }
    }

    // ---- model -------------------------------------------------------------------------------------

    private static (BpeModel, Dictionary<string, int>) ReadModel(JsonElement model)
    {
        string type = Str(model, "type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "(none)");
        if (type != "BPE") throw new NotSupportedException($"model type '{type}' is not supported (only BPE)");
        if (!model.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException("model.vocab is missing or not an object");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocabJson.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                throw new InvalidDataException($"model.vocab['{entry.Name}'] is not a non-negative integer id");
            vocab[entry.Name] = id;
        }
        var bpe = new BpeModel(vocab, ReadMerges(model),
            unknownToken: Str(model, "unk_token"),
            fuseUnknown: Bool(model, "fuse_unk", false),
            ignoreMerges: Bool(model, "ignore_merges", false),
            byteFallback: Bool(model, "byte_fallback", false),
            continuingSubwordPrefix: Str(model, "continuing_subword_prefix"),
            endOfWordSuffix: Str(model, "end_of_word_suffix"));
        return (bpe, vocab);
    }

    // Merges come as "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20).
    private static List<(string, string)> ReadMerges(JsonElement model)
    {
        var merges = new List<(string, string)>();
        if (!model.TryGetProperty("merges", out var json) || json.ValueKind == JsonValueKind.Null) return merges;
        if (json.ValueKind != JsonValueKind.Array) throw new InvalidDataException("model.merges is not an array");
        int index = 0;
        foreach (var m in json.EnumerateArray())
        {
            if (m.ValueKind == JsonValueKind.String)
            {
                var parts = m.GetString()!.Split(' ');
                if (parts.Length != 2) throw new InvalidDataException($"model.merges[{index}] '{m.GetString()}' is not two tokens separated by one space");
                merges.Add((parts[0], parts[1]));
            }
            else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2
                     && m[0].ValueKind == JsonValueKind.String && m[1].ValueKind == JsonValueKind.String)
            {
                merges.Add((m[0].GetString()!, m[1].GetString()!));
            }
            else
            {
                throw new InvalidDataException($"model.merges[{index}] is neither \"a b\" nor [\"a\", \"b\"]");
            }
            index++;
        }
        return merges;
    }

    private static List<AddedToken> ReadAddedTokens(JsonElement? json)
    {
        var tokens = new List<AddedToken>();
        if (json is not { } array) return tokens;
        if (array.ValueKind != JsonValueKind.Array) throw new InvalidDataException("added_tokens is not an array");
        foreach (var t in array.EnumerateArray())
        {
            if (!t.TryGetProperty("id", out var id) || !id.TryGetInt32(out int idValue) || Str(t, "content") is not { } content)
                throw new InvalidDataException("an added_tokens entry lacks 'id' or 'content'");
            bool special = Bool(t, "special", false);
            tokens.Add(new AddedToken(idValue, content, special, Bool(t, "single_word", false), Bool(t, "lstrip", false),
                Bool(t, "rstrip", false), Bool(t, "normalized", !special)));
        }
        return tokens;
    }
}
