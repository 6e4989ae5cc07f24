// Finds added tokens (specials such as "<|im_start|>" and plain added tokens) in text before the rest
// is normalized and pre-tokenized, as HF's AddedVocabulary does: leftmost-longest matches; single_word
// drops a match glued to a word char; lstrip/rstrip widen a match over the whitespace beside it.
// One matcher holds the tokens matched on raw text (normalized: false), another those matched on
// normalized text (normalized: true, their content normalized the same way).
using System.Globalization;

namespace Temper.Models.Text;

internal sealed record AddedToken(int Id, string Content, bool Special, bool SingleWord, bool LStrip, bool RStrip, bool Normalized);

/// <summary>A stretch of text: an added token's id, or text for the model (Id null).</summary>
internal readonly record struct TextSegment(string Text, int Start, int? Id);

internal sealed class AddedTokenMatcher
{
    // Tokens by their first char, longest first, so the first hit at a position is the longest.
    private readonly Dictionary<char, List<(string Pattern, AddedToken Token)>> _byFirstChar = [];

    public AddedTokenMatcher(IEnumerable<(string Pattern, AddedToken Token)> tokens)
    {
        foreach (var (pattern, token) in tokens)
        {
            if (pattern.Length == 0) continue;
            if (!_byFirstChar.TryGetValue(pattern[0], out var list)) _byFirstChar[pattern[0]] = list = [];
            list.Add((pattern, token));
        }
        foreach (var list in _byFirstChar.Values) list.Sort((a, b) => b.Pattern.Length.CompareTo(a.Pattern.Length));
    }

    public bool IsEmpty => _byFirstChar.Count == 0;

    /// <summary>The text cut into added tokens and the stretches between them, covering all of it.</summary>
    public List<TextSegment> Split(string text)
    {
        var segments = new List<TextSegment>();
        int segmentStart = 0;
        int searchFrom = 0;
        while (FindLeftmostLongest(text, searchFrom) is var (start, length, token))
        {
            int stop = start + length;
            searchFrom = stop;
            if (token.SingleWord && (StartsInsideWord(text, start) || EndsInsideWord(text, stop))) continue;
            if (token.LStrip) start = Math.Max(LeftmostSpaceBefore(text, start), segmentStart);
            if (token.RStrip) stop = RightmostSpaceAfter(text, stop);
            if (segmentStart < start) segments.Add(new TextSegment(text[segmentStart..start], segmentStart, null));
            segments.Add(new TextSegment(text[start..stop], start, token.Id));
            segmentStart = stop;
            searchFrom = Math.Max(searchFrom, stop);
        }
        if (segmentStart < text.Length) segments.Add(new TextSegment(text[segmentStart..], segmentStart, null));
        return segments;
    }

    private (int Start, int Length, AddedToken Token)? FindLeftmostLongest(string text, int from)
    {
        if (IsEmpty) return null;
        for (int i = from; i < text.Length; i++)
        {
            if (!_byFirstChar.TryGetValue(text[i], out var candidates)) continue;
            foreach (var (pattern, token) in candidates)
                if (i + pattern.Length <= text.Length && string.CompareOrdinal(text, i, pattern, 0, pattern.Length) == 0)
                    return (i, pattern.Length, token);
        }
        return null;
    }

    private static bool StartsInsideWord(string text, int start)
    {
        if (start == 0) return false;
        bool pair = start >= 2 && char.IsSurrogatePair(text[start - 2], text[start - 1]);
        return IsWordChar(pair ? char.ConvertToUtf32(text[start - 2], text[start - 1]) : text[start - 1]);
    }

    private static bool EndsInsideWord(string text, int stop)
    {
        if (stop >= text.Length) return false;
        bool pair = stop + 1 < text.Length && char.IsSurrogatePair(text[stop], text[stop + 1]);
        return IsWordChar(pair ? char.ConvertToUtf32(text[stop], text[stop + 1]) : text[stop]);
    }

    // Regex's \w: letters, marks, decimal digits, connector punctuation.
    private static bool IsWordChar(int codePoint) => CharUnicodeInfo.GetUnicodeCategory(codePoint) is
        UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
        or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter or UnicodeCategory.NonSpacingMark
        or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark or UnicodeCategory.DecimalDigitNumber
        or UnicodeCategory.ConnectorPunctuation;

    private static int LeftmostSpaceBefore(string text, int start)
    {
        while (start > 0 && char.IsWhiteSpace(text[start - 1])) start--;
        return start;
    }

    private static int RightmostSpaceAfter(string text, int stop)
    {
        while (stop < text.Length && char.IsWhiteSpace(text[stop])) stop++;
        return stop;
    }
}
