// Translates a tokenizer.json regex (HF compiles it with Oniguruma, Ruby syntax) into .NET Regex syntax.
// Most of the syntax is shared; what differs and is handled here: possessive quantifiers (`x*+`, `x++`,
// `x?+` become atomic groups `(?>x*)`), `x{n,m}+` (in Ruby syntax a repeat of the interval, not
// possessive), `\p{^L}`, `\x{HHHH}`, `\h`/`\H`, and `^`/`$` (always line anchors in Ruby syntax).
// Anything else .NET cannot read (scripts such as \p{Han}, nested classes) is reported, never guessed.
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Temper.Models.Text;

internal static class OnigurumaPattern
{
    /// <summary>Compiles an Oniguruma pattern; throws NotSupportedException naming what .NET lacks.</summary>
    public static Regex Compile(string pattern)
    {
        string translated = ToDotNet(pattern);
        try
        {
            return new Regex(translated, RegexOptions.Multiline | RegexOptions.CultureInvariant | RegexOptions.Compiled);
        }
        catch (ArgumentException e)
        {
            throw new NotSupportedException($"regex {Quote(pattern)} is not readable by .NET ({e.Message})", e);
        }
    }

    public static string ToDotNet(string pattern)
    {
        var sb = new StringBuilder(pattern.Length + 16);
        var groupStarts = new Stack<int>();
        int atomStart = -1; // where the last complete atom begins in sb; -1 when a quantifier cannot follow
        int i = 0;
        while (i < pattern.Length)
        {
            char c = pattern[i];
            switch (c)
            {
                case '\\':
                    atomStart = sb.Length;
                    i = CopyEscape(pattern, i, sb, inClass: false);
                    break;
                case '[':
                    atomStart = sb.Length;
                    i = CopyClass(pattern, i, sb);
                    break;
                case '(':
                    groupStarts.Push(sb.Length);
                    sb.Append(c);
                    i++;
                    atomStart = -1;
                    break;
                case ')':
                    sb.Append(c);
                    i++;
                    atomStart = groupStarts.Count > 0 ? groupStarts.Pop() : -1;
                    break;
                case '|' or '^' or '$':
                    sb.Append(c);
                    i++;
                    atomStart = -1;
                    break;
                case '*' or '+' or '?' or '{' when atomStart >= 0 && QuantifierEnd(pattern, i) is int end:
                    i = AppendQuantifier(pattern, i, end, sb, ref atomStart);
                    break;
                default:
                    atomStart = sb.Length;
                    sb.Append(c);
                    i++;
                    break;
            }
        }
        return sb.ToString();
    }

    // Appends the quantifier pattern[start..end) and what follows it: '?' (lazy, same in .NET),
    // '+' (possessive after * + ?, a repeat after an interval).
    private static int AppendQuantifier(string pattern, int start, int end, StringBuilder sb, ref int atomStart)
    {
        string quantifier = pattern[start..end];
        bool interval = quantifier[0] == '{';
        char next = end < pattern.Length ? pattern[end] : '\0';
        if (next == '+')
        {
            sb.Insert(atomStart, interval ? "(?:" : "(?>");
            sb.Append(quantifier).Append(')');
            if (interval) sb.Append('+');
            return end + 1;
        }
        sb.Append(quantifier);
        if (next == '?')
        {
            sb.Append('?');
            return end + 1;
        }
        return end;
    }

    // The end of the quantifier starting at i, or null when '{' does not open {n}, {n,} or {n,m}.
    private static int? QuantifierEnd(string pattern, int i)
    {
        if (pattern[i] != '{') return i + 1;
        int close = pattern.IndexOf('}', i);
        if (close < 0) return null;
        string body = pattern[(i + 1)..close];
        string[] parts = body.Split(',');
        bool valid = parts.Length is 1 or 2 && parts[0].Length > 0 && parts.All(p => p.All(char.IsAsciiDigit));
        return valid ? close + 1 : null;
    }

    // Copies one escape starting at pattern[i] == '\\'; returns the index after it.
    private static int CopyEscape(string pattern, int i, StringBuilder sb, bool inClass)
    {
        if (i + 1 >= pattern.Length) throw new NotSupportedException($"regex {Quote(pattern)} ends with a lone backslash");
        char e = pattern[i + 1];
        switch (e)
        {
            case 'p' or 'P' when i + 2 < pattern.Length && pattern[i + 2] == '{':
            {
                int close = pattern.IndexOf('}', i);
                if (close < 0) throw new NotSupportedException($"regex {Quote(pattern)} has an unclosed \\{e}{{");
                string name = pattern[(i + 3)..close];
                bool negated = name.StartsWith('^');
                if (negated) name = name[1..];
                sb.Append('\\').Append(negated ^ (e == 'P') ? 'P' : 'p').Append('{').Append(name).Append('}');
                return close + 1;
            }
            case 'x' when i + 2 < pattern.Length && pattern[i + 2] == '{':
            {
                int close = pattern.IndexOf('}', i);
                if (close < 0 || !int.TryParse(pattern.AsSpan(i + 3, close - i - 3), NumberStyles.HexNumber, null, out int cp))
                    throw new NotSupportedException($"regex {Quote(pattern)} has a bad \\x{{...}}");
                if (cp > 0xFFFF)
                    throw new NotSupportedException($"regex {Quote(pattern)} names code point U+{cp:X} beyond the BMP, which .NET Regex cannot match as one char");
                sb.Append("\\u").Append(cp.ToString("X4", CultureInfo.InvariantCulture));
                return close + 1;
            }
            case 'h':
                sb.Append(inClass ? "0-9a-fA-F" : "[0-9a-fA-F]");
                return i + 2;
            case 'H' when !inClass:
                sb.Append("[^0-9a-fA-F]");
                return i + 2;
            default:
                sb.Append('\\').Append(e);
                return i + 2;
        }
    }

    // Copies a character class starting at pattern[i] == '['; returns the index after its ']'.
    private static int CopyClass(string pattern, int i, StringBuilder sb)
    {
        sb.Append('[');
        i++;
        if (i < pattern.Length && pattern[i] == '^') { sb.Append('^'); i++; }
        if (i < pattern.Length && pattern[i] == ']') { sb.Append("\\]"); i++; } // a leading ']' is literal
        while (i < pattern.Length)
        {
            char c = pattern[i];
            if (c == ']') { sb.Append(']'); return i + 1; }
            if (c == '\\') { i = CopyEscape(pattern, i, sb, inClass: true); continue; }
            if (c == '[' || (c == '&' && i + 1 < pattern.Length && pattern[i + 1] == '&'))
                throw new NotSupportedException($"regex {Quote(pattern)} uses a nested or intersected character class");
            sb.Append(c);
            i++;
        }
        throw new NotSupportedException($"regex {Quote(pattern)} has an unclosed character class");
    }

    private static string Quote(string pattern)
    {
        string oneLine = pattern.Replace("\r", "\\r", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
        return oneLine.Length <= 80 ? $"'{oneLine}'" : $"'{oneLine[..77]}...'";
    }
}
