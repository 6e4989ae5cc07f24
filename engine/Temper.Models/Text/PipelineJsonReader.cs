// Reads the text pipeline of tokenizer.json (its "normalizer", "pre_tokenizer" and "decoder" objects)
// into runnable steps; a Sequence becomes a flat list. A type these steps do not know is reported as
// NotSupportedException (the tokenizer.json reader turns it into a TemperException naming the file).
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using static Temper.Models.Text.JsonFields;

namespace Temper.Models.Text;

internal static class PipelineJsonReader
{
    public static TextNormalizer? ReadNormalizer(JsonElement? json)
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

    public static List<PreTokenizerStep> ReadPreTokenizer(JsonElement? json)
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

    public static TokenDecoder? ReadDecoder(JsonElement? json)
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
}
