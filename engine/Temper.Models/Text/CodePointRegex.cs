// Runs a .NET Regex so that it sees code points, as Oniguruma does, not UTF-16 units. .NET matches
// '\p{L}' against single chars, so a letter or emoji outside the BMP (two surrogates, category Cs)
// would split differently from HF: "😀abc" is one piece for Llama 3's `[^\r\n\p{L}\p{N}]?\p{L}+`
// in HF but two in plain .NET. Each surrogate pair is therefore replaced by one BMP stand-in char of
// the same Unicode category before matching, and match bounds are mapped back to the original text.
using System.Globalization;
using System.Text.RegularExpressions;

namespace Temper.Models.Text;

internal sealed class CodePointRegex(Regex regex)
{
    private static readonly char[] _standInByCategory = BuildStandIns();

    public Regex Regex { get; } = regex;

    /// <summary>Match bounds [Start, End) in <paramref name="text"/>'s own indices, in order.</summary>
    public List<(int Start, int End)> Matches(string text)
    {
        var found = new List<(int, int)>();
        if (!HasSurrogate(text))
        {
            for (Match m = Regex.Match(text); m.Success; m = m.NextMatch()) found.Add((m.Index, m.Index + m.Length));
            return found;
        }
        string folded = Fold(text, out int[] originalIndex);
        for (Match m = Regex.Match(folded); m.Success; m = m.NextMatch())
            found.Add((originalIndex[m.Index], originalIndex[m.Index + m.Length]));
        return found;
    }

    private static bool HasSurrogate(string text)
    {
        foreach (char c in text) if (char.IsSurrogate(c)) return true;
        return false;
    }

    // folded[k] stands for text[originalIndex[k] .. originalIndex[k + 1]); originalIndex has one extra
    // entry, text.Length, so that a match ending at the end maps back too.
    private static string Fold(string text, out int[] originalIndex)
    {
        var chars = new char[text.Length];
        originalIndex = new int[text.Length + 1];
        int n = 0;
        for (int i = 0; i < text.Length; n++)
        {
            originalIndex[n] = i;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var category = CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]));
                chars[n] = _standInByCategory[(int)category];
                i += 2;
            }
            else
            {
                chars[n] = text[i];
                i++;
            }
        }
        originalIndex[n] = text.Length;
        Array.Resize(ref originalIndex, n + 1);
        return new string(chars, 0, n);
    }

    // The first char from U+0100 upwards of each category (none is ASCII, so none can equal a pattern's
    // literal apostrophes, letters or newlines); U+FFFD for a category the BMP lacks.
    private static char[] BuildStandIns()
    {
        int count = Enum.GetValues<UnicodeCategory>().Length;
        var standIns = Enumerable.Repeat('\uFFFD', count).ToArray();
        var seen = new bool[count];
        for (int c = 0x100; c <= 0xFFFF; c++)
        {
            if (char.IsSurrogate((char)c)) continue;
            int category = (int)CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (seen[category]) continue;
            seen[category] = true;
            standIns[category] = (char)c;
        }
        return standIns;
    }
}
