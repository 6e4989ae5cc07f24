// Unicode NFD and NFC (UAX #15) from the generated CanonicalNormalizationData tables: decompose fully,
// put combining marks in canonical order, then (NFC) recompose each starter with the marks that are not
// blocked from it. Needed because string.Normalize is a no-op under InvariantGlobalization.
using System.Globalization;
using System.Text;

namespace Temper.Models.Text;

internal static class CanonicalNormalization
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private static readonly Lazy<Tables> _tables = new(Tables.Load);

    public static string ToNfd(string text) =>
        IsBelow(text, CanonicalNormalizationData.NfdStableBelow) ? text : FromCodePoints(Decompose(text));

    public static string ToNfc(string text) =>
        IsBelow(text, CanonicalNormalizationData.NfcStableBelow) ? text : FromCodePoints(Compose(Decompose(text)));

    private static bool IsBelow(string text, int limit)
    {
        foreach (char c in text) if (c >= limit) return false;
        return true;
    }

    private static List<int> Decompose(string text)
    {
        var tables = _tables.Value;
        var result = new List<int>(text.Length + 8);
        for (int i = 0; i < text.Length; i++)
        {
            int cp = text[i];
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
                cp = char.ConvertToUtf32(text[i], text[++i]);
            if (cp - SBase is >= 0 and < SCount)
            {
                int s = cp - SBase;
                result.Add(LBase + s / NCount);
                result.Add(VBase + s % NCount / TCount);
                if (s % TCount != 0) result.Add(TBase + s % TCount);
            }
            else if (tables.Decomposition.TryGetValue(cp, out var parts)) result.AddRange(parts);
            else result.Add(cp);
        }
        // Canonical ordering: a stable sort of each run of non-starters by combining class.
        for (int start = 0; start < result.Count;)
        {
            if (tables.ClassOf(result[start]) == 0) { start++; continue; }
            int end = start;
            while (end < result.Count && tables.ClassOf(result[end]) != 0) end++;
            if (end - start > 1)
            {
                var run = result.GetRange(start, end - start).OrderBy(tables.ClassOf).ToList(); // OrderBy is stable
                for (int k = 0; k < run.Count; k++) result[start + k] = run[k];
            }
            start = end;
        }
        return result;
    }

    private static List<int> Compose(List<int> decomposed)
    {
        if (decomposed.Count == 0) return decomposed;
        var tables = _tables.Value;
        var result = new List<int>(decomposed.Count) { decomposed[0] };
        int starterPos = 0;
        int lastClass = tables.ClassOf(decomposed[0]) == 0 ? 0 : 256; // 256: no starter to compose with yet
        for (int i = 1; i < decomposed.Count; i++)
        {
            int ch = decomposed[i];
            int chClass = tables.ClassOf(ch);
            if ((lastClass < chClass || lastClass == 0) && ComposePair(tables, result[starterPos], ch) is int composite)
            {
                result[starterPos] = composite;
                continue;
            }
            if (chClass == 0) starterPos = result.Count;
            lastClass = chClass;
            result.Add(ch);
        }
        return result;
    }

    private static int? ComposePair(Tables tables, int first, int second)
    {
        if (first - LBase is >= 0 and < LCount && second - VBase is >= 0 and < VCount)
            return SBase + ((first - LBase) * VCount + (second - VBase)) * TCount;
        if (first - SBase is >= 0 and < SCount && (first - SBase) % TCount == 0 && second - TBase is > 0 and < TCount)
            return first + (second - TBase);
        return tables.Composition.TryGetValue(((long)first << 21) | (uint)second, out int composite) ? composite : null;
    }

    private static string FromCodePoints(List<int> codePoints)
    {
        var sb = new StringBuilder(codePoints.Count);
        foreach (int cp in codePoints)
        {
            if (cp <= 0xFFFF) sb.Append((char)cp); // lone surrogates pass through unchanged
            else sb.Append(char.ConvertFromUtf32(cp));
        }
        return sb.ToString();
    }

    private sealed class Tables
    {
        public Dictionary<int, int[]> Decomposition { get; } = [];
        public Dictionary<long, int> Composition { get; } = [];
        private readonly Dictionary<int, int> _classes = [];

        public int ClassOf(int cp) => _classes.TryGetValue(cp, out int c) ? c : 0;

        public static Tables Load()
        {
            var t = new Tables();
            var singleLevel = new Dictionary<int, int[]>();
            foreach (var entry in CanonicalNormalizationData.Decompositions.Split(';', StringSplitOptions.RemoveEmptyEntries))
            {
                int mark = entry.IndexOfAny(['=', '*']);
                int cp = Hex(entry[..mark]);
                int[] parts = entry[(mark + 1)..].Split(' ').Select(Hex).ToArray();
                singleLevel[cp] = parts;
                if (entry[mark] == '*') t.Composition[((long)parts[0] << 21) | (uint)parts[1]] = cp;
            }
            foreach (var cp in singleLevel.Keys) t.Decomposition[cp] = Expand(cp, singleLevel).ToArray();
            foreach (var range in CanonicalNormalizationData.CombiningClasses.Split(';', StringSplitOptions.RemoveEmptyEntries))
            {
                int dash = range.IndexOf('-', StringComparison.Ordinal), colon = range.IndexOf(':', StringComparison.Ordinal);
                int cls = int.Parse(range[(colon + 1)..], CultureInfo.InvariantCulture);
                for (int cp = Hex(range[..dash]); cp <= Hex(range[(dash + 1)..colon]); cp++) t._classes[cp] = cls;
            }
            return t;
        }

        private static IEnumerable<int> Expand(int cp, Dictionary<int, int[]> singleLevel) =>
            singleLevel.TryGetValue(cp, out var parts) ? parts.SelectMany(p => Expand(p, singleLevel)) : [cp];

        private static int Hex(string s) => int.Parse(s, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }
}
