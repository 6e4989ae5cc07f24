// Splits a string around pattern matches the way HF's NormalizedString::split does for each
// SplitDelimiterBehavior of tokenizer.json ("Removed", "Isolated", "MergedWithPrevious",
// "MergedWithNext", "Contiguous"), with "invert" swapping which spans count as matches.
// Empty pieces are dropped, as HF's pre-tokenized string drops them.
namespace Temper.Models.Text;

internal enum SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous }

internal static class DelimiterSplit
{
    public static SplitBehavior ParseBehavior(string name) => name switch
    {
        "Removed" => SplitBehavior.Removed,
        "Isolated" => SplitBehavior.Isolated,
        "MergedWithPrevious" => SplitBehavior.MergedWithPrevious,
        "MergedWithNext" => SplitBehavior.MergedWithNext,
        "Contiguous" => SplitBehavior.Contiguous,
        _ => throw new NotSupportedException($"split behavior '{name}' is unknown"),
    };

    /// <summary>Pieces of <paramref name="text"/>; <paramref name="matches"/> are ordered, non-overlapping.</summary>
    public static List<(int Start, int End)> Split(string text, List<(int Start, int End)> matches, SplitBehavior behavior, bool invert)
    {
        var spans = Cover(text.Length, matches, invert);
        var pieces = new List<(int Start, int End, bool Drop)>();
        bool previousMatch = false;
        switch (behavior)
        {
            case SplitBehavior.Isolated:
                foreach (var s in spans) pieces.Add((s.Start, s.End, false));
                break;
            case SplitBehavior.Removed:
                foreach (var s in spans) pieces.Add((s.Start, s.End, s.IsMatch));
                break;
            case SplitBehavior.Contiguous:
                foreach (var s in spans)
                {
                    if (s.IsMatch == previousMatch && pieces.Count > 0) pieces[^1] = (pieces[^1].Start, s.End, false);
                    else pieces.Add((s.Start, s.End, false));
                    previousMatch = s.IsMatch;
                }
                break;
            case SplitBehavior.MergedWithPrevious:
                foreach (var s in spans)
                {
                    if (s.IsMatch && !previousMatch && pieces.Count > 0) pieces[^1] = (pieces[^1].Start, s.End, false);
                    else pieces.Add((s.Start, s.End, false));
                    previousMatch = s.IsMatch;
                }
                break;
            case SplitBehavior.MergedWithNext:
                for (int k = spans.Count - 1; k >= 0; k--)
                {
                    var s = spans[k];
                    if (s.IsMatch && !previousMatch && pieces.Count > 0) pieces[^1] = (s.Start, pieces[^1].End, false);
                    else pieces.Add((s.Start, s.End, false));
                    previousMatch = s.IsMatch;
                }
                pieces.Reverse();
                break;
        }
        return pieces.Where(p => !p.Drop && p.End > p.Start).Select(p => (p.Start, p.End)).ToList();
    }

    /// <summary>One match per code point that satisfies <paramref name="isDelimiter"/>.</summary>
    public static List<(int Start, int End)> CodePointMatches(string text, Func<int, bool> isDelimiter)
    {
        var found = new List<(int, int)>();
        for (int i = 0; i < text.Length;)
        {
            int width = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            int codePoint = width == 2 ? char.ConvertToUtf32(text[i], text[i + 1]) : text[i];
            if (isDelimiter(codePoint)) found.Add((i, i + width));
            i += width;
        }
        return found;
    }

    // The whole text as consecutive spans, each a match or the gap between two.
    private static List<(int Start, int End, bool IsMatch)> Cover(int length, List<(int Start, int End)> matches, bool invert)
    {
        var spans = new List<(int, int, bool)>();
        if (length == 0) return spans;
        int previous = 0;
        foreach (var (start, end) in matches)
        {
            if (previous != start) spans.Add((previous, start, invert));
            spans.Add((start, end, !invert));
            previous = end;
        }
        if (previous != length) spans.Add((previous, length, invert));
        return spans;
    }
}
