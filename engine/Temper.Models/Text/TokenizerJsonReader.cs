// Reads an HF tokenizer.json (and the bos/eos/pad names of tokenizer_config.json) into the parts the
// tokenizer runs: BPE model, normalizer, pre-tokenizer steps, decoder, added tokens. Whatever the file
// says that these parts cannot honour (a Unigram model, an unknown pre-tokenizer, a regex .NET cannot
// read) is a TemperException naming the file, never a silently different tokenization.
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Temper.Core;

namespace Temper.Models.Text;

internal sealed record TokenizerParts(
    BpeModel Model,
    IReadOnlyDictionary<string, int> Vocab,
    TextNormalizer? Normalizer,
    IReadOnlyList<PreTokenizerStep> PreTokenizer,
    TokenDecoder? Decoder,
    IReadOnlyList<AddedToken> AddedTokens);

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
                ReadNormalizer(Optional(root, "normalizer")),
                ReadPreTokenizer(Optional(root, "pre_tokenizer")),
                ReadDecoder(Optional(root, "decoder")),
                ReadAddedTokens(Optional(root, "added_tokens")));
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new TemperException($"{path}: {OneLine(e.Message)}", e);
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
            throw new TemperException($"{path}: malformed JSON at line {(e.LineNumber ?? 0) + 1}: {OneLine(e.Message)}", e);
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

    // ---- normalizers, pre-tokenizers, decoders -----------------------------------------------------

    private static TextNormalizer? ReadNormalizer(JsonElement? json)
    {
        if (json is not { } n) return null;
        string type = TypeOf(n, "normalizer");
        return type switch
        {
            "NFC" => new CanonicalFormNormalizer(compose: true),
            "NFD" => new CanonicalFormNormalizer(compose: false),
            "NFKC" or "NFKD" when CompatibilityFormNormalizer.RuntimeCanNormalize =>
                new CompatibilityFormNormalizer(type == "NFKC" ? NormalizationForm.FormKC : NormalizationForm.FormKD),
            "NFKC" or "NFKD" => throw new NotSupportedException($"normalizer {type} needs ICU, which this process lacks (InvariantGlobalization)"),
            "Lowercase" => new LowercaseNormalizer(),
            "Replace" => ReadReplace(n, "normalizer Replace", (literal, regex, content) => new ReplaceNormalizer(literal, regex, content)),
            "Prepend" => new PrependNormalizer(Str(n, "prepend") ?? throw new InvalidDataException("normalizer Prepend has no 'prepend'")),
            "Strip" => new StripNormalizer(Bool(n, "strip_left", true), Bool(n, "strip_right", true)),
            "Sequence" => new NormalizerSequence(Items(n, "normalizers").Select(e => ReadNormalizer(e)).OfType<TextNormalizer>().ToList()),
            _ => throw new NotSupportedException($"normalizer '{type}' is not supported"),
        };
    }

    private static List<PreTokenizerStep> ReadPreTokenizer(JsonElement? json)
    {
        if (json is not { } p) return [];
        string type = TypeOf(p, "pre_tokenizer");
        return type switch
        {
            "Sequence" => Items(p, "pretokenizers").SelectMany(e => ReadPreTokenizer(e)).ToList(),
            "ByteLevel" => [new ByteLevelStep(Bool(p, "add_prefix_space", true), Bool(p, "use_regex", true))],
            "Split" => [ReadSplit(p)],
            "Metaspace" => [new MetaspaceStep(Replacement(p), ReadPrependScheme(p), Bool(p, "split", true))],
            "Digits" => [new DigitsStep(Bool(p, "individual_digits", false))],
            "Whitespace" => [new WhitespaceStep(splitOnlyOnWhitespace: false)],
            "WhitespaceSplit" => [new WhitespaceStep(splitOnlyOnWhitespace: true)],
            "Punctuation" => [new PunctuationStep(DelimiterSplit.ParseBehavior(Str(p, "behavior") ?? "Isolated"))],
            _ => throw new NotSupportedException($"pre_tokenizer '{type}' is not supported"),
        };
    }

    private static RegexSplitStep ReadSplit(JsonElement p)
    {
        var (literal, regex) = ReadPattern(p, "pre_tokenizer Split");
        var matcher = regex ?? new CodePointRegex(new Regex(Regex.Escape(literal!), RegexOptions.CultureInvariant));
        var behavior = DelimiterSplit.ParseBehavior(Str(p, "behavior") ?? throw new InvalidDataException("pre_tokenizer Split has no 'behavior'"));
        return new RegexSplitStep(matcher, behavior, Bool(p, "invert", false));
    }

    private static TokenDecoder? ReadDecoder(JsonElement? json)
    {
        if (json is not { } d) return null;
        string type = TypeOf(d, "decoder");
        return type switch
        {
            "Sequence" => new DecoderSequence(Items(d, "decoders").Select(e => ReadDecoder(e)).OfType<TokenDecoder>().ToList()),
            "ByteLevel" => new ByteLevelDecoder(),
            "Metaspace" => new MetaspaceDecoder(Replacement(d), ReadPrependScheme(d) != PrependScheme.Never),
            "ByteFallback" => new ByteFallbackDecoder(),
            "Fuse" => new FuseDecoder(),
            "Strip" => new StripDecoder(SingleChar(d, "content", "decoder Strip"), Int(d, "start"), Int(d, "stop")),
            "Replace" => ReadReplace(d, "decoder Replace", (literal, regex, content) => new ReplaceDecoder(literal, regex, content)),
            _ => throw new NotSupportedException($"decoder '{type}' is not supported"),
        };
    }

    // {"String": "..."} or {"Regex": "..."}: a literal or an Oniguruma regex.
    private static (string? Literal, CodePointRegex? Regex) ReadPattern(JsonElement owner, string what)
    {
        if (!owner.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{what} has no 'pattern' object");
        if (Str(pattern, "String") is { } literal) return (literal, null);
        if (Str(pattern, "Regex") is { } regex) return (null, new CodePointRegex(OnigurumaPattern.Compile(regex)));
        throw new InvalidDataException($"{what} pattern is neither String nor Regex");
    }

    private static T ReadReplace<T>(JsonElement e, string what, Func<string?, CodePointRegex?, string, T> create)
    {
        var (literal, regex) = ReadPattern(e, what);
        return create(literal, regex, Str(e, "content") ?? throw new InvalidDataException($"{what} has no 'content'"));
    }

    // Newer files say prepend_scheme; older ones say add_prefix_space (true means "always").
    private static PrependScheme ReadPrependScheme(JsonElement e) => Str(e, "prepend_scheme") switch
    {
        "always" => PrependScheme.Always,
        "first" => PrependScheme.First,
        "never" => PrependScheme.Never,
        null => Bool(e, "add_prefix_space", true) ? PrependScheme.Always : PrependScheme.Never,
        var other => throw new NotSupportedException($"Metaspace prepend_scheme '{other}' is unknown"),
    };

    private static char Replacement(JsonElement e) => e.TryGetProperty("replacement", out _) ? SingleChar(e, "replacement", "Metaspace") : '\u2581';

    // ---- JSON helpers ------------------------------------------------------------------------------

    private static JsonElement? Optional(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string TypeOf(JsonElement e, string what) =>
        e.ValueKind == JsonValueKind.Object && Str(e, "type") is { } t ? t : throw new InvalidDataException($"a {what} has no 'type'");

    private static string? Str(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static bool Bool(JsonElement obj, string name, bool fallback) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    private static int Int(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.TryGetInt32(out int i) ? i : 0;

    private static char SingleChar(JsonElement obj, string name, string what) =>
        Str(obj, name) is { Length: 1 } s ? s[0] : throw new NotSupportedException($"{what} '{name}' is not a single char");

    private static IEnumerable<JsonElement> Items(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array
            ? v.EnumerateArray().ToList()
            : throw new InvalidDataException($"'{name}' is missing or not an array");

    private static string OneLine(string message) => message.ReplaceLineEndings(" ");
}
