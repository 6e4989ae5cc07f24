// The pre-tokenizers of tokenizer.json: each step turns one piece of text into smaller pieces (and the
// byte-level step rewrites them in GPT-2's byte alphabet); BPE then runs on each final piece alone.
// Supported: Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, and a
// Sequence of these (flattened by the reader).
using System.Globalization;
using System.Text.RegularExpressions;

namespace Temper.Models.Text;

/// <summary>A piece of text on its way to BPE; <c>AtTextStart</c> when it begins the whole input
/// (Metaspace's prepend_scheme "first" prepends only there).</summary>
internal readonly record struct PreToken(string Text, bool AtTextStart);

internal abstract class PreTokenizerStep
{
    public abstract void Apply(PreToken piece, List<PreToken> output);

    protected static void AddPieces(PreToken piece, List<(int Start, int End)> spans, List<PreToken> output)
    {
        foreach (var (start, end) in spans)
            output.Add(new PreToken(piece.Text[start..end], piece.AtTextStart && start == 0));
    }
}

/// <summary>"Split": the model's own regex (or literal string) with a delimiter behavior.</summary>
internal sealed class RegexSplitStep(CodePointRegex pattern, SplitBehavior behavior, bool invert) : PreTokenizerStep
{
    public override void Apply(PreToken piece, List<PreToken> output) =>
        AddPieces(piece, DelimiterSplit.Split(piece.Text, pattern.Matches(piece.Text), behavior, invert), output);
}

/// <summary>"ByteLevel": optional prefix space, optional GPT-2 regex split, then the byte alphabet.</summary>
internal sealed class ByteLevelStep(bool addPrefixSpace, bool useRegex) : PreTokenizerStep
{
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly CodePointRegex _gpt2 = new(OnigurumaPattern.Compile(Gpt2Pattern));

    public override void Apply(PreToken piece, List<PreToken> output)
    {
        string text = addPrefixSpace && !piece.Text.StartsWith(' ') ? " " + piece.Text : piece.Text;
        var split = new List<PreToken>();
        if (useRegex) AddPieces(piece with { Text = text }, DelimiterSplit.Split(text, _gpt2.Matches(text), SplitBehavior.Isolated, false), split);
        else if (text.Length > 0) split.Add(piece with { Text = text });
        foreach (var p in split) output.Add(p with { Text = ByteLevelAlphabet.Encode(p.Text) });
    }
}

internal enum PrependScheme { Always, First, Never }

/// <summary>"Metaspace": spaces become the replacement char ('▁'), which is prepended per the scheme;
/// with split, each '▁' starts a new piece.</summary>
internal sealed class MetaspaceStep(char replacement, PrependScheme prependScheme, bool split) : PreTokenizerStep
{
    public override void Apply(PreToken piece, List<PreToken> output)
    {
        string text = piece.Text.Replace(' ', replacement);
        bool prepend = prependScheme == PrependScheme.Always || (prependScheme == PrependScheme.First && piece.AtTextStart);
        if (prepend && !text.StartsWith(replacement)) text = replacement + text;
        var replaced = piece with { Text = text };
        if (!split)
        {
            if (text.Length > 0) output.Add(replaced);
            return;
        }
        var matches = DelimiterSplit.CodePointMatches(text, c => c == replacement);
        AddPieces(replaced, DelimiterSplit.Split(text, matches, SplitBehavior.MergedWithNext, false), output);
    }
}

/// <summary>"Digits": numbers apart from the rest, each digit alone when individual_digits.</summary>
internal sealed class DigitsStep(bool individualDigits) : PreTokenizerStep
{
    public override void Apply(PreToken piece, List<PreToken> output)
    {
        var matches = DelimiterSplit.CodePointMatches(piece.Text, IsNumeric);
        var behavior = individualDigits ? SplitBehavior.Isolated : SplitBehavior.Contiguous;
        AddPieces(piece, DelimiterSplit.Split(piece.Text, matches, behavior, false), output);
    }

    // Rust's char::is_numeric: categories Nd, Nl, No.
    private static bool IsNumeric(int codePoint) => CharUnicodeInfo.GetUnicodeCategory(codePoint)
        is UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;
}

/// <summary>"Whitespace" (words and punctuation runs, spaces dropped) and "WhitespaceSplit" (spaces dropped).</summary>
internal sealed class WhitespaceStep(bool splitOnlyOnWhitespace) : PreTokenizerStep
{
    private static readonly CodePointRegex _words = new(new Regex(@"\w+|[^\w\s]+", RegexOptions.CultureInvariant));

    public override void Apply(PreToken piece, List<PreToken> output)
    {
        var spans = splitOnlyOnWhitespace
            ? DelimiterSplit.Split(piece.Text, DelimiterSplit.CodePointMatches(piece.Text, IsWhiteSpace), SplitBehavior.Removed, false)
            : DelimiterSplit.Split(piece.Text, _words.Matches(piece.Text), SplitBehavior.Removed, invert: true);
        AddPieces(piece, spans, output);
    }

    private static bool IsWhiteSpace(int codePoint) => codePoint <= 0xFFFF && char.IsWhiteSpace((char)codePoint);
}

/// <summary>"Punctuation": each punctuation char split off with the given behavior.</summary>
internal sealed class PunctuationStep(SplitBehavior behavior) : PreTokenizerStep
{
    public override void Apply(PreToken piece, List<PreToken> output)
    {
        var matches = DelimiterSplit.CodePointMatches(piece.Text, IsPunctuation);
        AddPieces(piece, DelimiterSplit.Split(piece.Text, matches, behavior, false), output);
    }

    // Rust's is_ascii_punctuation (which includes symbols such as '$' and '+') or a Unicode P* category.
    private static bool IsPunctuation(int codePoint) =>
        (codePoint is > 32 and < 127 && !char.IsAsciiLetterOrDigit((char)codePoint))
        || CharUnicodeInfo.GetUnicodeCategory(codePoint) is UnicodeCategory.ConnectorPunctuation
            or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation
            or UnicodeCategory.InitialQuotePunctuation or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
}
