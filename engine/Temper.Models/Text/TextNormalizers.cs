// The normalizers of tokenizer.json, applied to each stretch of text between added tokens before
// pre-tokenization: NFC/NFD (our own tables, since this engine runs with InvariantGlobalization, where
// string.Normalize does nothing), NFKC/NFKD (string.Normalize, only where the runtime has ICU),
// Lowercase, Replace, Prepend, Strip, and a Sequence of these (flattened by the reader).
using System.Text;

namespace Temper.Models.Text;

internal abstract class TextNormalizer
{
    public abstract string Normalize(string text);
}

internal sealed class CanonicalFormNormalizer(bool compose) : TextNormalizer
{
    public override string Normalize(string text) => compose ? CanonicalNormalization.ToNfc(text) : CanonicalNormalization.ToNfd(text);
}

internal sealed class CompatibilityFormNormalizer(NormalizationForm form) : TextNormalizer
{
    /// <summary>False in invariant-globalization mode, where string.Normalize returns its input unchanged.</summary>
    public static bool RuntimeCanNormalize => "\uFB01".Normalize(NormalizationForm.FormKC) == "fi";

    public override string Normalize(string text) => text.Normalize(form);
}

internal sealed class LowercaseNormalizer : TextNormalizer
{
    public override string Normalize(string text) => text.ToLowerInvariant();
}

/// <summary>"Replace": every match of a literal string or an Oniguruma regex becomes the content.</summary>
internal sealed class ReplaceNormalizer(string? literal, CodePointRegex? regex, string content) : TextNormalizer
{
    public override string Normalize(string text) => ReplaceAll(text, literal, regex, content);

    public static string ReplaceAll(string text, string? literal, CodePointRegex? regex, string content)
    {
        if (literal != null) return literal.Length == 0 ? text : text.Replace(literal, content, StringComparison.Ordinal);
        var sb = new StringBuilder(text.Length);
        int previous = 0;
        foreach (var (start, end) in regex!.Matches(text))
        {
            sb.Append(text, previous, start - previous).Append(content);
            previous = end;
        }
        return sb.Append(text, previous, text.Length - previous).ToString();
    }
}

/// <summary>"Prepend": the prefix goes before any non-empty text.</summary>
internal sealed class PrependNormalizer(string prefix) : TextNormalizer
{
    public override string Normalize(string text) => text.Length == 0 ? text : prefix + text;
}

/// <summary>"Strip": whitespace off the left and/or right end.</summary>
internal sealed class StripNormalizer(bool left, bool right) : TextNormalizer
{
    public override string Normalize(string text) => (left, right) switch
    {
        (true, true) => text.Trim(),
        (true, false) => text.TrimStart(),
        (false, true) => text.TrimEnd(),
        _ => text,
    };
}

internal sealed class NormalizerSequence(IReadOnlyList<TextNormalizer> steps) : TextNormalizer
{
    public override string Normalize(string text)
    {
        foreach (var step in steps) text = step.Normalize(text);
        return text;
    }
}
