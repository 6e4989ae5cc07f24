// The Python methods templates call on their data: str (strip, split, partition, startswith,
// replace, format, ...), dict (items, keys, values, get) and list (index, count). Mutating methods (append, pop,
// update) are refused, as transformers' immutable sandbox refuses them.
using System.Text;

namespace Temper.Models.Text;

internal static class TemplateMethods
{
    private static readonly HashSet<string> Mutators =
        ["append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse", "update", "setdefault", "popitem", "add", "discard"];

    public static bool IsMutator(TemplateValue obj, string name) =>
        obj.Kind is ValueKind.List or ValueKind.Dict && Mutators.Contains(name);

    /// <summary>The bound method <paramref name="name"/> of <paramref name="obj"/>, or null.</summary>
    public static TemplateValue? Bind(TemplateValue obj, string name)
    {
        TemplateFunction? f = obj.Kind switch
        {
            ValueKind.String => StringMethod(obj.AsString, name),
            ValueKind.Dict => DictMethod(obj.AsDict, name),
            ValueKind.List => ListMethod(obj, name),
            _ => null,
        };
        return f == null ? null : TemplateValue.Function(name, f);
    }

    private static TemplateFunction? DictMethod(TemplateDict d, string name) => name switch
    {
        "items" => _ => TemplateValue.List(d.Entries.Select(e => TemplateValue.Tuple([e.Key, e.Value])).ToList()),
        "keys" => _ => TemplateValue.List(d.Entries.Select(e => e.Key).ToList()),
        "values" => _ => TemplateValue.List(d.Entries.Select(e => e.Value).ToList()),
        "get" => a => d.TryGet(a.Require(0, "key", "get"), out var v) ? v : a.Get(1, "default", TemplateValue.None),
        "copy" => _ =>
        {
            var copy = new TemplateDict();
            foreach (var (k, v) in d.Entries) copy[k] = v;
            return TemplateValue.Dict(copy);
        },
        _ => null,
    };

    private static TemplateFunction? ListMethod(TemplateValue list, string name) => name switch
    {
        "count" => a => TemplateValue.Int(list.AsList.Count(x => TemplateOperators.AreEqual(x, a.Require(0, "value", "count")))),
        "index" => a =>
        {
            var i = list.AsList.FindIndex(x => TemplateOperators.AreEqual(x, a.Require(0, "value", "index")));
            return i >= 0 ? TemplateValue.Int(i) : throw new TemplateError($"{PythonRepr.Repr(a.Positional[0])} is not in list");
        },
        "copy" => _ => TemplateValue.List([.. list.AsList]),
        _ => null,
    };

    private static TemplateFunction? StringMethod(string s, string name) => name switch
    {
        "strip" => a => Str(Strip(s, Chars(a), true, true)),
        "lstrip" => a => Str(Strip(s, Chars(a), true, false)),
        "rstrip" => a => Str(Strip(s, Chars(a), false, true)),
        "split" => a => Split(s, a, fromRight: false),
        "rsplit" => a => Split(s, a, fromRight: true),
        "splitlines" => a => TemplateValue.List(SplitLines(s, a.Get(0, "keepends", TemplateValue.False).IsTruthy).Select(Str).ToList()),
        "startswith" => a => TemplateValue.Bool(Affix(s, a, "startswith", (x, p) => x.StartsWith(p, StringComparison.Ordinal))),
        "endswith" => a => TemplateValue.Bool(Affix(s, a, "endswith", (x, p) => x.EndsWith(p, StringComparison.Ordinal))),
        "upper" => _ => Str(s.ToUpperInvariant()),
        "lower" or "casefold" => _ => Str(s.ToLowerInvariant()),
        "title" => _ => Str(Title(s)),
        "capitalize" => _ => Str(Capitalize(s)),
        "swapcase" => _ => Str(string.Concat(s.Select(c => char.IsUpper(c) ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c)))),
        "replace" => a => Str(Replace(s, StrArg(a, 0, "old", "replace"), StrArg(a, 1, "new", "replace"), a.Get(2, "count", TemplateValue.Int(-1)).AsInt)),
        "find" => a => TemplateValue.Int(Find(s, a, "find", last: false)),
        "rfind" => a => TemplateValue.Int(Find(s, a, "rfind", last: true)),
        "index" => a => TemplateValue.Int(Find(s, a, "index", last: false) is var i and >= 0 ? i : throw new TemplateError("substring not found")),
        "rindex" => a => TemplateValue.Int(Find(s, a, "rindex", last: true) is var i and >= 0 ? i : throw new TemplateError("substring not found")),
        "count" => a => TemplateValue.Int(Count(s, a)),
        "join" => a => Str(Join(s, a.Require(0, "iterable", "join"))),
        "format" => a => Str(PythonFormat.Format(s, a, TemplateAccess.GetAttr, TemplateAccess.GetItem)),
        "isdecimal" => _ => TemplateValue.Bool(s.Length > 0 && s.All(char.IsDigit)),
        // isdigit adds superscripts and circled digits (other numbers worth 0..9); isnumeric any numeric value (½, 五).
        "isdigit" => _ => TemplateValue.Bool(s.Length > 0 && s.All(c => char.IsDigit(c) || char.GetNumericValue(c) is >= 0 and <= 9 and var v && v == Math.Floor(v) && char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.OtherNumber)),
        "isnumeric" => _ => TemplateValue.Bool(s.Length > 0 && s.All(c => char.GetNumericValue(c) >= 0)),
        "isalpha" => _ => TemplateValue.Bool(s.Length > 0 && s.All(char.IsLetter)),
        "isalnum" => _ => TemplateValue.Bool(s.Length > 0 && s.All(char.IsLetterOrDigit)),
        "isspace" => _ => TemplateValue.Bool(s.Length > 0 && s.All(PythonRepr.IsSpace)),
        "isupper" => _ => TemplateValue.Bool(s.Any(char.IsUpper) && !s.Any(char.IsLower)),
        "islower" => _ => TemplateValue.Bool(s.Any(char.IsLower) && !s.Any(char.IsUpper)),
        "removeprefix" => a => Str(StrArg(a, 0, "prefix", "removeprefix") is var p && s.StartsWith(p, StringComparison.Ordinal) ? s[p.Length..] : s),
        "removesuffix" => a => Str(StrArg(a, 0, "suffix", "removesuffix") is var p && p.Length > 0 && s.EndsWith(p, StringComparison.Ordinal) ? s[..^p.Length] : s),
        "zfill" => a => Str(ZFill(s, Width(s, a, "zfill"))),
        "ljust" => a => Str(s.PadRight(Width(s, a, "ljust"), FillChar(a))),
        "rjust" => a => Str(s.PadLeft(Width(s, a, "rjust"), FillChar(a))),
        "center" => a => Str(Center(s, Width(s, a, "center"), FillChar(a))),
        "partition" => a => Partition(s, StrArg(a, 0, "sep", "partition"), last: false),
        "rpartition" => a => Partition(s, StrArg(a, 0, "sep", "rpartition"), last: true),
        "isascii" => _ => TemplateValue.Bool(s.All(char.IsAscii)),
        "istitle" => _ => TemplateValue.Bool(IsTitle(s)),
        "expandtabs" => a => Str(ExpandTabs(s, (int)a.Get(0, "tabsize", TemplateValue.Int(8)).AsInt)),
        _ => null,
    };

    /// <summary>str.partition / rpartition: (head, sep, tail), or the whole string and two empty ones.</summary>
    private static TemplateValue Partition(string s, string sep, bool last)
    {
        if (sep.Length == 0) throw new TemplateError("empty separator");
        var i = last ? s.LastIndexOf(sep, StringComparison.Ordinal) : s.IndexOf(sep, StringComparison.Ordinal);
        if (i < 0) return TemplateValue.Tuple(last ? [Str(""), Str(""), Str(s)] : [Str(s), Str(""), Str("")]);
        return TemplateValue.Tuple([Str(s[..i]), Str(sep), Str(s[(i + sep.Length)..])]);
    }

    /// <summary>str.istitle: cased characters, upper (or title) case only at the start of each cased run.</summary>
    private static bool IsTitle(string s)
    {
        bool cased = false, previousCased = false;
        foreach (var c in s)
        {
            var upper = char.IsUpper(c) || char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.TitlecaseLetter;
            if (upper && previousCased) return false;
            if (char.IsLower(c) && !previousCased) return false;
            previousCased = upper || char.IsLower(c);
            cased |= previousCased;
        }
        return cased;
    }

    private static string ExpandTabs(string s, int tabSize)
    {
        var sb = new StringBuilder();
        var column = 0;
        foreach (var c in s)
        {
            if (c == '\t')
            {
                var spaces = tabSize > 0 ? tabSize - column % tabSize : 0;
                sb.Append(' ', spaces);
                column += spaces;
                continue;
            }
            sb.Append(c);
            column = c is '\n' or '\r' ? 0 : column + 1;
        }
        return sb.ToString();
    }

    private static TemplateValue Str(string s) => TemplateValue.String(s);

    private static string StrArg(TemplateArgs a, int index, string name, string method)
    {
        var v = a.Require(index, name, method);
        return v.IsString ? v.AsString : throw new TemplateError($"{method}() argument {index + 1} must be str, not {v.TypeName}");
    }

    private static string? Chars(TemplateArgs a)
    {
        var v = a.Get(0, "chars", TemplateValue.None);
        if (v.IsNone) return null;
        return v.IsString ? v.AsString : throw new TemplateError($"strip arg must be None or str");
    }

    private static char FillChar(TemplateArgs a) => a.Get(1, "fillchar", TemplateValue.String(" ")).AsString[0];

    /// <summary>str.strip(chars): whitespace when chars is null.</summary>
    public static string Strip(string s, string? chars, bool left, bool right)
    {
        bool Strippable(char c) => chars == null ? PythonRepr.IsSpace(c) : chars.Contains(c);
        var start = 0;
        var end = s.Length;
        if (left) while (start < end && Strippable(s[start])) start++;
        if (right) while (end > start && Strippable(s[end - 1])) end--;
        return s[start..end];
    }

    private static TemplateValue Split(string s, TemplateArgs a, bool fromRight)
    {
        var sepValue = a.Get(0, "sep", TemplateValue.None);
        var maxSplit = a.Get(1, "maxsplit", TemplateValue.Int(-1)).AsInt;
        var parts = new List<string>();
        if (sepValue.IsNone)
        {
            // Runs of whitespace separate; leading and trailing whitespace yields no empty parts.
            var words = new List<(int Start, int End)>();
            for (var i = 0; i < s.Length;)
            {
                while (i < s.Length && PythonRepr.IsSpace(s[i])) i++;
                if (i >= s.Length) break;
                var start = i;
                while (i < s.Length && !PythonRepr.IsSpace(s[i])) i++;
                words.Add((start, i));
            }
            if (maxSplit < 0 || words.Count <= maxSplit + 1) parts.AddRange(words.Select(w => s[w.Start..w.End]));
            else if (!fromRight)
            {
                for (var i = 0; i < maxSplit; i++) parts.Add(s[words[i].Start..words[i].End]);
                parts.Add(s[words[(int)maxSplit].Start..]);
            }
            else
            {
                var keep = words.Count - (int)maxSplit;
                parts.Add(s[..words[keep - 1].End]);
                for (var i = keep; i < words.Count; i++) parts.Add(s[words[i].Start..words[i].End]);
            }
        }
        else
        {
            if (!sepValue.IsString) throw new TemplateError($"must be str or None, not {sepValue.TypeName}");
            var sep = sepValue.AsString;
            if (sep.Length == 0) throw new TemplateError("empty separator");
            var all = s.Split(sep);
            if (maxSplit < 0 || all.Length <= maxSplit + 1) parts.AddRange(all);
            else if (!fromRight)
            {
                parts.AddRange(all.Take((int)maxSplit));
                parts.Add(string.Join(sep, all.Skip((int)maxSplit)));
            }
            else
            {
                var keep = all.Length - (int)maxSplit;
                parts.Add(string.Join(sep, all.Take(keep)));
                parts.AddRange(all.Skip(keep));
            }
        }
        return TemplateValue.List(parts.Select(Str).ToList());
    }

    /// <summary>str.splitlines(): every Python line boundary, \r\n counted once.</summary>
    public static List<string> SplitLines(string s, bool keepEnds)
    {
        var lines = new List<string>();
        var start = 0;
        for (var i = 0; i < s.Length; i++)
        {
            var c = s[i];
            if (c is not ('\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e' or '\x85' or '\u2028' or '\u2029')) continue;
            var end = i;
            if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
            lines.Add(keepEnds ? s[start..(i + 1)] : s[start..end]);
            start = i + 1;
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }

    private static bool Affix(string s, TemplateArgs a, string method, Func<string, string, bool> test)
    {
        var what = a.Require(0, "prefix", method);
        var start = a.Get(1, "start", TemplateValue.None);
        var end = a.Get(2, "end", TemplateValue.None);
        var sliced = start.IsNone && end.IsNone ? s
            : TemplateAccess.Slice(TemplateValue.String(s), start, end, TemplateValue.None).AsString;
        if (what.IsString) return test(sliced, what.AsString);
        if (what.Kind == ValueKind.List && what.IsTuple) return what.AsList.Any(p => p.IsString && test(sliced, p.AsString));
        throw new TemplateError($"{method} first arg must be str or a tuple of str, not {what.TypeName}");
    }

    private static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        var previousCased = false;
        foreach (var c in s)
        {
            sb.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsUpper(c) || char.IsLower(c);
        }
        return sb.ToString();
    }

    public static string Capitalize(string s) =>
        s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    public static string Replace(string s, string old, string replacement, long count)
    {
        if (count < 0) count = long.MaxValue;
        var sb = new StringBuilder();
        if (old.Length == 0)
        {
            var n = 0L;
            for (var i = 0; i <= s.Length; i++)
            {
                if (n++ < count) sb.Append(replacement);
                if (i < s.Length) sb.Append(s[i]);
            }
            return sb.ToString();
        }
        var pos = 0;
        for (var done = 0L; done < count; done++)
        {
            var hit = s.IndexOf(old, pos, StringComparison.Ordinal);
            if (hit < 0) break;
            sb.Append(s, pos, hit - pos).Append(replacement);
            pos = hit + old.Length;
        }
        return sb.Append(s, pos, s.Length - pos).ToString();
    }

    /// <summary>str.find / rfind / index: the position in code points (as Python counts), start and end too.</summary>
    private static int Find(string s, TemplateArgs a, string method, bool last)
    {
        var sub = StrArg(a, 0, "sub", method);
        if (Window(s, a) is not var (window, start)) return -1;
        var at = last ? window.LastIndexOf(sub, StringComparison.Ordinal) : window.IndexOf(sub, StringComparison.Ordinal);
        return at < 0 ? -1 : start + TemplateAccess.CodePoints(window[..at]).Count;
    }

    private static int Count(string s, TemplateArgs a)
    {
        var sub = StrArg(a, 0, "sub", "count");
        if (Window(s, a) is not var (window, _)) return 0;
        if (sub.Length == 0) return TemplateAccess.CodePoints(window).Count + 1;
        var n = 0;
        for (var i = window.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = window.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    /// <summary>s[start:end] for the optional start and end arguments (code points), and start; null when end &lt; start.</summary>
    private static (string Window, int Start)? Window(string s, TemplateArgs a)
    {
        var points = TemplateAccess.CodePoints(s);
        int Bound(TemplateValue v, int whenNone) =>
            (int)Math.Clamp(v.IsIntegral ? (v.AsInt < 0 ? v.AsInt + points.Count : v.AsInt) : whenNone, 0, points.Count);
        var start = Bound(a.Get(1, "start", TemplateValue.None), 0);
        var end = Bound(a.Get(2, "end", TemplateValue.None), points.Count);
        if (end < start) return null;
        return (string.Concat(points.Skip(start).Take(end - start)), start);
    }

    /// <summary>The width argument of ljust, center, ... as a UTF-16 length: Python counts code points.</summary>
    private static int Width(string s, TemplateArgs a, string method) =>
        (int)a.Require(0, "width", method).AsInt + s.Length - TemplateAccess.CodePoints(s).Count;

    private static string Join(string sep, TemplateValue items)
    {
        var parts = TemplateAccess.Iterate(items);
        for (var i = 0; i < parts.Count; i++)
            if (!parts[i].IsString) throw new TemplateError($"sequence item {i}: expected str instance, {parts[i].TypeName} found");
        return string.Join(sep, parts.Select(p => p.AsString));
    }

    private static string ZFill(string s, int width)
    {
        if (s.Length >= width) return s;
        var signed = s.Length > 0 && s[0] is '+' or '-';
        return signed ? s[0] + new string('0', width - s.Length) + s[1..] : new string('0', width - s.Length) + s;
    }

    private static string Center(string s, int width, char fill)
    {
        var marg = width - s.Length;
        if (marg <= 0) return s;
        var left = marg / 2 + (marg & width & 1);
        return new string(fill, left) + s + new string(fill, marg - left);
    }
}
