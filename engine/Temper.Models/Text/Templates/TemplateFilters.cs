// The filters (value | name(args)) chat templates use, with Jinja's built-in behaviour and
// transformers' tojson (json.dumps with ensure_ascii=False and an optional indent). Filters that
// return generators in Jinja (map, select, reject, selectattr, rejectattr, unique, items, reverse)
// return one-shot iterators here too, so |length and |tojson on them fail as they do in Python.
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Temper.Models.Text;

internal static partial class TemplateFilters
{
    private delegate TemplateValue Filter(TemplateValue value, TemplateArgs args);

    private static readonly Dictionary<string, Filter> All = new()
    {
        ["abs"] = (v, _) => Abs(v),
        ["attr"] = (v, a) => TemplateAccess.GetPythonAttribute(v, PythonRepr.Str(a.Require(0, "name", "attr"))),
        ["capitalize"] = (v, _) => TemplateValue.String(TemplateMethods.Capitalize(PythonRepr.Str(v))),
        ["center"] = (v, a) => TemplateValue.String(Center(PythonRepr.Str(v), (int)a.Get(0, "width", TemplateValue.Int(80)).AsInt)),
        ["count"] = (v, _) => TemplateValue.Int(TemplateAccess.Length(v)),
        ["d"] = Default,
        ["default"] = Default,
        ["dictsort"] = DictSort,
        ["e"] = (v, _) => v.IsMarkup ? v : TemplateValue.Markup(Escape(PythonRepr.Str(v))),
        ["escape"] = (v, _) => v.IsMarkup ? v : TemplateValue.Markup(Escape(PythonRepr.Str(v))),
        ["first"] = First,
        ["last"] = (v, _) => v.Kind is not (ValueKind.List or ValueKind.Dict or ValueKind.String or ValueKind.Undefined)
                ? throw new TemplateError($"'{v.TypeName}' object is not reversible")
            : TemplateAccess.Iterate(v) is { Count: > 0 } items ? items[^1] : TemplateValue.Undefined("No last item, sequence was empty."),
        ["float"] = (v, a) => ToFloat(TemplateOperators.Defined(v)) ?? a.Get(0, "default", TemplateValue.Float(0)),
        ["forceescape"] = (v, _) => TemplateValue.Markup(Escape(PythonRepr.Str(v))),
        ["format"] = Format,
        ["indent"] = Indent,
        ["int"] = ToInt,
        ["items"] = Items,
        ["join"] = Join,
        ["length"] = (v, _) => TemplateValue.Int(TemplateAccess.Length(v)),
        ["list"] = (v, _) => TemplateValue.List([.. TemplateAccess.Iterate(v)]),
        ["lower"] = (v, _) => TemplateValue.String(PythonRepr.Str(v).ToLowerInvariant()),
        ["map"] = Map,
        ["max"] = (v, a) => MinMax(v, a, max: true),
        ["min"] = (v, a) => MinMax(v, a, max: false),
        ["reject"] = (v, a) => Select(v, a, byAttribute: false, keep: false),
        ["rejectattr"] = (v, a) => Select(v, a, byAttribute: true, keep: false),
        ["replace"] = Replace,
        ["reverse"] = Reverse,
        ["round"] = Round,
        ["safe"] = (v, _) => TemplateValue.Markup(PythonRepr.Str(v)),
        ["select"] = (v, a) => Select(v, a, byAttribute: false, keep: true),
        ["selectattr"] = (v, a) => Select(v, a, byAttribute: true, keep: true),
        ["sort"] = Sort,
        ["string"] = (v, _) => v.IsMarkup ? v : TemplateValue.String(PythonRepr.Str(v)),
        ["sum"] = Sum,
        ["title"] = (v, _) => TemplateValue.String(Title(PythonRepr.Str(v))),
        ["tojson"] = ToJson,
        ["trim"] = Trim,
        ["unique"] = Unique,
        ["upper"] = (v, _) => TemplateValue.String(PythonRepr.Str(v).ToUpperInvariant()),
        ["wordcount"] = (v, _) => TemplateValue.Int(WordRegex().Count(PythonRepr.Str(v))),
    };

    public static bool Exists(string name) => All.ContainsKey(name);

    public static TemplateValue Apply(string name, TemplateValue value, TemplateArgs args) =>
        All.TryGetValue(name, out var filter) ? filter(value, args) : throw new TemplateError($"No filter named '{name}' found.");

    private static TemplateValue Abs(TemplateValue v)
    {
        if (v.IsIntegral) return TemplateValue.Int(Math.Abs(v.AsInt));
        if (v.Kind == ValueKind.Float) return TemplateValue.Float(Math.Abs(v.AsDouble));
        throw new TemplateError($"bad operand type for abs(): '{v.TypeName}'");
    }

    private static TemplateValue First(TemplateValue v, TemplateArgs _)
    {
        if (v.Kind == ValueKind.Iterator) return v.AsIterator.Next() ?? TemplateValue.Undefined("No first item, sequence was empty.");
        return TemplateAccess.Iterate(v) is { Count: > 0 } items ? items[0] : TemplateValue.Undefined("No first item, sequence was empty.");
    }

    private static TemplateValue Default(TemplateValue v, TemplateArgs a)
    {
        var boolean = a.Get(1, "boolean", TemplateValue.False).IsTruthy;
        return v.IsUndefined || (boolean && !v.IsTruthy) ? a.Get(0, "default_value", TemplateValue.EmptyString) : v;
    }

    private static TemplateValue Trim(TemplateValue v, TemplateArgs a)
    {
        var chars = a.Get(0, "chars", TemplateValue.None);
        return TemplateValue.String(TemplateMethods.Strip(PythonRepr.Str(v), chars.IsNone ? null : PythonRepr.Str(chars), true, true));
    }

    private static TemplateValue Replace(TemplateValue v, TemplateArgs a)
    {
        var count = a.Get(2, "count", TemplateValue.None);
        return TemplateValue.String(TemplateMethods.Replace(PythonRepr.Str(v), PythonRepr.Str(a.Require(0, "old", "replace")),
            PythonRepr.Str(a.Require(1, "new", "replace")), count.IsNone ? -1 : count.AsInt));
    }

    private static TemplateValue ToJson(TemplateValue v, TemplateArgs a)
    {
        var ensureAscii = a.Get(0, "ensure_ascii", TemplateValue.False).IsTruthy;
        var indent = a.Get(1, "indent", TemplateValue.None);
        var separators = a.Get(2, "separators", TemplateValue.None);
        var sortKeys = a.Get(3, "sort_keys", TemplateValue.False).IsTruthy;
        string? indentText = indent.Kind switch
        {
            ValueKind.None => null,
            ValueKind.String => indent.AsString,
            ValueKind.Int => new string(' ', (int)Math.Max(0, indent.AsInt)),
            _ => throw new TemplateError($"tojson indent must be an int or a string, not {indent.TypeName}"),
        };
        string? itemSep = null;
        var keySep = ": ";
        if (!separators.IsNone)
        {
            var pair = TemplateAccess.Iterate(separators);
            if (pair.Count != 2) throw new TemplateError("tojson separators must be an (item_separator, key_separator) pair");
            itemSep = pair[0].AsString;
            keySep = pair[1].AsString;
        }
        return TemplateValue.String(PythonJson.Dumps(v, indentText, itemSep, keySep, sortKeys, ensureAscii));
    }

    private static TemplateValue Indent(TemplateValue v, TemplateArgs a)
    {
        var width = a.Get(0, "width", TemplateValue.Int(4));
        var indention = width.IsString ? width.AsString : new string(' ', (int)width.AsInt);
        var first = a.Get(1, "first", TemplateValue.False).IsTruthy;
        var blank = a.Get(2, "blank", TemplateValue.False).IsTruthy;
        // Jinja appends the newline with +=, so anything but a string fails as Python's += does.
        if (!v.IsString)
            throw new TemplateError(v.Kind switch
            {
                ValueKind.Undefined => v.UndefinedReason,
                ValueKind.List when v.IsTuple => "can only concatenate tuple (not \"str\") to tuple",
                ValueKind.List => "'list' object has no attribute 'splitlines'",
                _ => $"unsupported operand type(s) for +=: '{v.TypeName}' and 'str'",
            });
        var s = v.AsString + "\n";
        string rv;
        var lines = TemplateMethods.SplitLines(s, false);
        if (blank) rv = string.Join("\n" + indention, lines);
        else
        {
            rv = lines.Count > 0 ? lines[0] : "";
            if (lines.Count > 1) rv += "\n" + string.Join("\n", lines.Skip(1).Select(l => l.Length > 0 ? indention + l : l));
        }
        return TemplateValue.String(first ? indention + rv : rv);
    }

    private static TemplateValue ToInt(TemplateValue v, TemplateArgs a)
    {
        TemplateOperators.Defined(v);
        var fallback = a.Get(0, "default", TemplateValue.Int(0));
        var numberBase = (int)a.Get(1, "base", TemplateValue.Int(10)).AsInt;
        switch (v.Kind)
        {
            case ValueKind.Int: return v;
            case ValueKind.Bool: return TemplateValue.Int(v.AsInt);
            case ValueKind.Float:
                return double.IsFinite(v.AsDouble) ? TemplateValue.Int((long)Math.Truncate(v.AsDouble)) : fallback;
            case ValueKind.String:
                var text = v.AsString.Trim().Replace("_", "", StringComparison.Ordinal);
                try
                {
                    if (text.Length > 0) return TemplateValue.Int(Convert.ToInt64(text, numberBase));
                }
                catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
                {
                }
                return ToFloat(v) is { } f && double.IsFinite(f.AsDouble) ? TemplateValue.Int((long)Math.Truncate(f.AsDouble)) : fallback;
            default: return fallback;
        }
    }

    private static TemplateValue? ToFloat(TemplateValue v)
    {
        if (v.IsNumber) return TemplateValue.Float(v.AsDouble);
        if (!v.IsString) return null;
        var text = v.AsString.Trim().Replace("_", "", StringComparison.Ordinal).ToLowerInvariant();
        text = text switch { "inf" or "+inf" or "infinity" => "Infinity", "-inf" or "-infinity" => "-Infinity", "nan" => "NaN", _ => text };
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? TemplateValue.Float(d) : null;
    }

    private static TemplateValue Items(TemplateValue v, TemplateArgs _)
    {
        if (v.IsUndefined) return TemplateValue.Iterator([]);
        if (v.Kind != ValueKind.Dict) throw new TemplateError("Can only get item pairs from a mapping.");
        return TemplateValue.Iterator(v.AsDict.Entries.Select(e => TemplateValue.Tuple([e.Key, e.Value])).ToList());
    }

    private static TemplateValue Join(TemplateValue v, TemplateArgs a)
    {
        var sep = PythonRepr.Str(a.Get(0, "d", TemplateValue.EmptyString));
        var attribute = a.Get(1, "attribute", TemplateValue.None);
        var items = TemplateAccess.Iterate(v);
        if (!attribute.IsNone) items = items.Select(AttributeGetter(attribute, null)).ToList();
        return TemplateValue.String(string.Join(sep, items.Select(PythonRepr.Str)));
    }

    private static TemplateValue Format(TemplateValue v, TemplateArgs a)
    {
        if (a.Keyword.Count > 0)
        {
            var dict = new TemplateDict();
            foreach (var (k, value) in a.Keyword) dict[TemplateValue.String(k)] = value;
            return TemplateValue.String(PythonFormat.Percent(PythonRepr.Str(v), TemplateValue.Dict(dict)));
        }
        return TemplateValue.String(PythonFormat.Percent(PythonRepr.Str(v), TemplateValue.Tuple(a.Positional)));
    }

    /// <summary>Jinja's make_attrgetter: "a.b.0" read with getitem, optionally defaulted.</summary>
    private static Func<TemplateValue, TemplateValue> AttributeGetter(TemplateValue attribute, TemplateValue? fallback,
        bool ignoreCase = false)
    {
        var parts = attribute.IsIntegral ? [attribute]
            : PythonRepr.Str(attribute).Split('.').Select(p =>
                long.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? TemplateValue.Int(n) : TemplateValue.String(p)).ToList();
        return item =>
        {
            foreach (var part in parts) item = TemplateAccess.GetItem(item, part);
            if (fallback != null && item.IsUndefined) item = fallback;
            if (ignoreCase && item.IsString) item = TemplateValue.String(item.AsString.ToLowerInvariant());
            return item;
        };
    }

    private static TemplateValue Map(TemplateValue v, TemplateArgs a)
    {
        if (!v.IsTruthy) return TemplateValue.Iterator([]);
        var items = TemplateAccess.Iterate(v);
        if (a.Positional.Count == 0)
        {
            var attribute = a.Find(-1, "attribute") ?? throw new TemplateError("map requires a filter name or attribute=");
            var fallback = a.Find(-1, "default");
            return TemplateValue.Iterator(items.Select(AttributeGetter(attribute, fallback)).ToList());
        }
        var name = PythonRepr.Str(a.Positional[0]);
        // Looked up by name when the first item is mapped, so the message is environment.call_filter's.
        if (items.Count > 0 && !Exists(name)) throw new TemplateError($"No filter named '{name}'.");
        var rest = new TemplateArgs(a.Positional.Skip(1).ToList(), a.Keyword);
        return TemplateValue.Iterator(items.Select(x => Apply(name, x, rest)).ToList());
    }

    private static TemplateValue Select(TemplateValue v, TemplateArgs a, bool byAttribute, bool keep)
    {
        if (!v.IsTruthy) return TemplateValue.Iterator([]);
        var offset = 0;
        Func<TemplateValue, TemplateValue> transform = x => x;
        if (byAttribute)
        {
            if (a.Positional.Count == 0) throw new TemplateError("Missing parameter for attribute name");
            transform = AttributeGetter(a.Positional[0], null);
            offset = 1;
        }
        Func<TemplateValue, bool> test = x => x.IsTruthy;
        if (a.Positional.Count > offset)
        {
            var testName = PythonRepr.Str(a.Positional[offset]);
            if (!TemplateTests.Exists(testName)) throw new TemplateError($"No test named '{testName}'.");
            var testArgs = new TemplateArgs(a.Positional.Skip(offset + 1).ToList(), a.Keyword);
            test = x => TemplateTests.Apply(testName, x, testArgs);
        }
        return TemplateValue.Iterator(TemplateAccess.Iterate(v).Where(x => test(transform(x)) == keep).ToList());
    }

    private static TemplateValue Unique(TemplateValue v, TemplateArgs a)
    {
        var caseSensitive = a.Get(0, "case_sensitive", TemplateValue.False).IsTruthy;
        var attribute = a.Get(1, "attribute", TemplateValue.None);
        var key = attribute.IsNone
            ? (x => !caseSensitive && x.IsString ? TemplateValue.String(x.AsString.ToLowerInvariant()) : x)
            : AttributeGetter(attribute, null, !caseSensitive);
        var seen = new List<TemplateValue>();
        var result = new List<TemplateValue>();
        foreach (var item in TemplateAccess.Iterate(v))
        {
            var k = key(item);
            if (!TemplateDict.IsHashable(k)) throw new TemplateError($"unhashable type: '{k.TypeName}'");
            if (seen.Exists(s => TemplateOperators.AreEqual(s, k))) continue;
            seen.Add(k);
            result.Add(item);
        }
        return TemplateValue.Iterator(result);
    }

    private static TemplateValue Sort(TemplateValue v, TemplateArgs a)
    {
        var reverse = a.Get(0, "reverse", TemplateValue.False).IsTruthy;
        var caseSensitive = a.Get(1, "case_sensitive", TemplateValue.False).IsTruthy;
        var attribute = a.Get(2, "attribute", TemplateValue.None);
        var keys = attribute.IsNone
            ? [x => !caseSensitive && x.IsString ? TemplateValue.String(x.AsString.ToLowerInvariant()) : x]
            : PythonRepr.Str(attribute).Split(',').Select(p => AttributeGetter(TemplateValue.String(p.Trim()), null, !caseSensitive)).ToList();
        // Python compares the key lists: the first keys that differ decide, with <.
        bool Less(TemplateValue x, TemplateValue y)
        {
            foreach (var key in keys)
            {
                var (kx, ky) = (key(x), key(y));
                if (!TemplateOperators.AreEqual(kx, ky)) return TemplateOperators.Compare("<", kx, ky);
            }
            return false;
        }
        var items = TemplateAccess.Iterate(v).ToList();
        // sorted(reverse=True) reverses, sorts stably and reverses back, so equal items keep their order.
        if (reverse) items.Reverse();
        var sorted = StableSort(items, Less);
        if (reverse) sorted.Reverse();
        return TemplateValue.List(sorted);
    }

    /// <summary>
    /// A stable binary insertion sort that asks less(later, earlier) as CPython's list.sort does, so a
    /// list that cannot be ordered fails with Python's message ('&lt;' not supported between 'str' and 'int').
    /// </summary>
    private static List<TemplateValue> StableSort(List<TemplateValue> items, Func<TemplateValue, TemplateValue, bool> less)
    {
        var sorted = new List<TemplateValue>(items.Count);
        foreach (var item in items)
        {
            int lo = 0, hi = sorted.Count;
            while (lo < hi)
            {
                var mid = (lo + hi) / 2;
                if (less(item, sorted[mid])) hi = mid;
                else lo = mid + 1;
            }
            sorted.Insert(lo, item);
        }
        return sorted;
    }

    private static TemplateValue DictSort(TemplateValue v, TemplateArgs a)
    {
        if (v.Kind != ValueKind.Dict) throw new TemplateError(v.IsUndefined ? v.UndefinedReason : $"'{v.TypeName}' object has no attribute 'items'");
        var caseSensitive = a.Get(0, "case_sensitive", TemplateValue.False).IsTruthy;
        var by = PythonRepr.Str(a.Get(1, "by", TemplateValue.String("key")));
        if (by is not ("key" or "value")) throw new TemplateError("You can only sort by either \"key\" or \"value\"");
        var byValue = by == "value";
        var reverse = a.Get(2, "reverse", TemplateValue.False).IsTruthy;
        var pairs = v.AsDict.Entries.Select(e => TemplateValue.Tuple([e.Key, e.Value])).ToList();
        var args = new TemplateArgs([], [new("reverse", TemplateValue.Bool(reverse)), new("case_sensitive", TemplateValue.Bool(caseSensitive)),
            new("attribute", TemplateValue.String(byValue ? "1" : "0"))]);
        return Sort(TemplateValue.List(pairs), args);
    }

    private static TemplateValue MinMax(TemplateValue v, TemplateArgs a, bool max)
    {
        var caseSensitive = a.Get(0, "case_sensitive", TemplateValue.False).IsTruthy;
        var attribute = a.Get(1, "attribute", TemplateValue.None);
        var key = attribute.IsNone
            ? (x => !caseSensitive && x.IsString ? TemplateValue.String(x.AsString.ToLowerInvariant()) : x)
            : AttributeGetter(attribute, null, !caseSensitive);
        var items = TemplateAccess.Iterate(v);
        if (items.Count == 0) return TemplateValue.Undefined($"No aggregated item, sequence was empty.");
        var best = items[0];
        foreach (var item in items.Skip(1))
            if (TemplateOperators.Compare(max ? ">" : "<", key(item), key(best))) best = item;
        return best;
    }

    private static TemplateValue Sum(TemplateValue v, TemplateArgs a)
    {
        var attribute = a.Get(0, "attribute", TemplateValue.None);
        var total = a.Get(1, "start", TemplateValue.Int(0));
        var items = TemplateAccess.Iterate(v);
        if (!attribute.IsNone) items = items.Select(AttributeGetter(attribute, null)).ToList();
        foreach (var item in items) total = TemplateOperators.Binary("+", total, item);
        return total;
    }

    private static TemplateValue Reverse(TemplateValue v, TemplateArgs _)
    {
        if (v.IsString) return TemplateValue.String(string.Concat(TemplateAccess.CodePoints(v.AsString).Reverse()));
        if (v.Kind is not (ValueKind.List or ValueKind.Dict or ValueKind.Iterator or ValueKind.Undefined))
            throw new TemplateError("argument must be iterable");
        var items = TemplateAccess.Iterate(v).ToList();
        items.Reverse();
        // reversed() of a list, tuple or dict is an iterator; a generator is listed and reversed.
        return v.Kind switch
        {
            ValueKind.List => TemplateValue.Iterator(items, "list_reverseiterator"),
            ValueKind.Dict => TemplateValue.Iterator(items, "dict_reversekeyiterator"),
            ValueKind.Undefined => TemplateValue.Iterator(items, "reversed"),
            _ => TemplateValue.List(items),
        };
    }

    private static TemplateValue Round(TemplateValue v, TemplateArgs a)
    {
        var precision = (int)a.Get(0, "precision", TemplateValue.Int(0)).AsInt;
        var method = PythonRepr.Str(a.Get(1, "method", TemplateValue.String("common")));
        if (!v.IsNumber) throw new TemplateError($"type {v.TypeName} doesn't define __round__ method");
        var scale = Math.Pow(10, precision);
        return method switch
        {
            "common" when v.IsIntegral => TemplateValue.Int(PythonRound.Int(v.AsInt, precision)),
            "common" => TemplateValue.Float(PythonRound.Float(v.AsDouble, precision)),
            "ceil" => TemplateValue.Float(Math.Ceiling(v.AsDouble * scale) / scale),
            "floor" => TemplateValue.Float(Math.Floor(v.AsDouble * scale) / scale),
            _ => throw new TemplateError("method must be 'common', 'ceil' or 'floor'"),
        };
    }

    /// <summary>Jinja's title filter: capitalise after spaces, dashes and opening brackets.</summary>
    private static string Title(string s)
    {
        var parts = TitleSplitRegex().Split(s);
        var sb = new StringBuilder(s.Length);
        foreach (var item in parts)
            if (item.Length > 0) sb.Append(char.ToUpperInvariant(item[0])).Append(item[1..].ToLowerInvariant());
        return sb.ToString();
    }

    private static string Center(string s, int width)
    {
        var marg = width - s.Length;
        if (marg <= 0) return s;
        var left = marg / 2 + (marg & width & 1);
        return new string(' ', left) + s + new string(' ', marg - left);
    }

    /// <summary>markupsafe.escape's text: &amp; &lt; &gt; and both quotes as entities.</summary>
    public static string Escape(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal)
        .Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal)
        .Replace("\"", "&#34;", StringComparison.Ordinal).Replace("'", "&#39;", StringComparison.Ordinal);

    [GeneratedRegex(@"([-\s({\[<]+)")]
    private static partial Regex TitleSplitRegex();

    [GeneratedRegex(@"\w+")]
    private static partial Regex WordRegex();
}
