// Reading into values the way Jinja's sandbox does: x.name tries the attribute (a method) and then
// the item, x[key] tries the item and then the attribute; a missing one is undefined, but anything
// read from an undefined value raises. Also slicing, iteration and len() with Python semantics.
using System.Globalization;
using System.Text;

namespace Temper.Models.Text;

internal static class TemplateAccess
{
    public static TemplateValue GetAttr(TemplateValue obj, string name)
    {
        switch (obj.Kind)
        {
            case ValueKind.Undefined:
                throw new TemplateError(obj.UndefinedReason);
            case ValueKind.Dict:
                if (TemplateMethods.Bind(obj, name) is { } dictMethod) return dictMethod;
                if (TemplateMethods.IsMutator(obj, name)) return Unsafe(obj, name);
                if (obj.AsDict.TryGet(name, out var v)) return v;
                break;
            case ValueKind.Object:
                if (obj.AsObject.GetAttribute(name) is { } attr) return attr;
                break;
            default:
                if (TemplateMethods.Bind(obj, name) is { } method) return method;
                if (TemplateMethods.IsMutator(obj, name)) return Unsafe(obj, name);
                break;
        }
        return TemplateValue.Undefined($"{Describe(obj)} has no attribute '{name}'");
    }

    /// <summary>|attr(name): Python's getattr only (a method, a namespace or loop attribute), never a dict item.</summary>
    public static TemplateValue GetPythonAttribute(TemplateValue obj, string name)
    {
        TemplateOperators.Defined(obj);
        if (obj.Kind == ValueKind.Object && obj.AsObject.GetAttribute(name) is { } attr) return attr;
        if (TemplateMethods.Bind(obj, name) is { } method) return method;
        if (TemplateMethods.IsMutator(obj, name)) return Unsafe(obj, name);
        return TemplateValue.Undefined($"{Describe(obj)} has no attribute '{name}'");
    }

    /// <summary>The sandbox's answer to x.append or d.pop: an undefined value whose use raises SecurityError's message.</summary>
    private static TemplateValue Unsafe(TemplateValue obj, string name) =>
        TemplateValue.Undefined($"access to attribute '{name}' of '{obj.TypeName}' object is unsafe.");

    public static TemplateValue GetItem(TemplateValue obj, TemplateValue key)
    {
        switch (obj.Kind)
        {
            case ValueKind.Undefined:
                throw new TemplateError(obj.UndefinedReason);
            case ValueKind.Dict:
                if (TemplateDict.IsHashable(key) && obj.AsDict.TryGet(key, out var v)) return v;
                break;
            case ValueKind.List when key.IsIntegral:
                var list = obj.AsList;
                var i = key.AsInt < 0 ? key.AsInt + list.Count : key.AsInt;
                if (i >= 0 && i < list.Count) return list[(int)i];
                break;
            case ValueKind.String when key.IsIntegral:
                var points = CodePoints(obj.AsString);
                var j = key.AsInt < 0 ? key.AsInt + points.Count : key.AsInt;
                if (j >= 0 && j < points.Count) return TemplateValue.String(points[(int)j]);
                break;
        }
        if (key.IsString) return GetAttr(obj, key.AsString);
        var owner = Describe(obj)[1..^1];
        return TemplateValue.Undefined($"{owner} has no element {PythonRepr.Repr(key)}");
    }

    /// <summary>Jinja's object_type_repr, quoted: 'None', 'dict object', 'markupsafe.Markup object'.</summary>
    private static string Describe(TemplateValue obj) =>
        obj.IsNone ? "'None'" : obj.IsMarkup ? "'markupsafe.Markup object'" : $"'{obj.TypeName} object'";

    /// <summary>
    /// obj[start:stop:step] for lists, tuples and strings. Anything else raises, as Python's slicing does,
    /// except on a literal (<paramref name="constant"/>), which Jinja folds through its lenient getitem into undefined.
    /// </summary>
    public static TemplateValue Slice(TemplateValue obj, TemplateValue start, TemplateValue stop, TemplateValue step, bool constant = false)
    {
        TemplateOperators.Defined(obj);
        long? Bound(TemplateValue b, string what) => b.IsNone || b.IsUndefined ? null
            : b.IsIntegral ? b.AsInt : throw new TemplateError($"slice {what} must be an integer or None, not {b.TypeName}");
        var stepValue = Bound(step, "step") ?? 1;
        if (stepValue == 0) throw new TemplateError("slice step cannot be zero");
        if (obj.Kind == ValueKind.List)
        {
            var picked = SliceIndices(obj.AsList.Count, Bound(start, "start"), Bound(stop, "stop"), stepValue)
                .Select(i => obj.AsList[i]).ToList();
            return obj.IsTuple ? TemplateValue.Tuple(picked) : TemplateValue.List(picked);
        }
        if (obj.IsString)
        {
            var points = CodePoints(obj.AsString);
            var sb = new StringBuilder();
            foreach (var i in SliceIndices(points.Count, Bound(start, "start"), Bound(stop, "stop"), stepValue)) sb.Append(points[i]);
            return TemplateValue.String(sb.ToString());
        }
        if (constant)
            return TemplateValue.Undefined($"{Describe(obj)[1..^1]} has no element slice({PythonRepr.Repr(start)}, {PythonRepr.Repr(stop)}, {PythonRepr.Repr(step)})");
        // Jinja compiles a slice to Python's own x[a:b], so it raises rather than giving an undefined value.
        throw new TemplateError(obj.Kind == ValueKind.Dict ? "unhashable type: 'slice'" : $"'{obj.TypeName}' object is not subscriptable");
    }

    /// <summary>The indices slice(start, stop, step).indices(length) walks.</summary>
    private static IEnumerable<int> SliceIndices(int length, long? start, long? stop, long step)
    {
        long Clamp(long? v, long whenNone, long lo, long hi)
        {
            if (v == null) return whenNone;
            var x = v.Value < 0 ? v.Value + length : v.Value;
            return Math.Clamp(x, lo, hi);
        }
        if (step > 0)
        {
            var s = Clamp(start, 0, 0, length);
            var e = Clamp(stop, length, 0, length);
            for (var i = s; i < e; i += step) yield return (int)i;
        }
        else
        {
            var s = Clamp(start, length - 1, -1, length - 1);
            var e = Clamp(stop, -1, -1, length - 1);
            for (var i = s; i > e; i += step) yield return (int)i;
        }
    }

    /// <summary>The items a for loop or list() sees: list items, string characters, dict keys.</summary>
    public static List<TemplateValue> Iterate(TemplateValue v) => v.Kind switch
    {
        ValueKind.Undefined => [],
        ValueKind.List => v.AsList,
        ValueKind.Dict => v.AsDict.Entries.Select(e => e.Key).ToList(),
        ValueKind.String => CodePoints(v.AsString).Select(TemplateValue.String).ToList(),
        ValueKind.Iterator => v.AsIterator.Drain(),
        _ => throw new TemplateError($"'{v.TypeName}' object is not iterable"),
    };

    public static int Length(TemplateValue v) => v.Kind switch
    {
        ValueKind.Undefined => 0,
        ValueKind.List => v.AsList.Count,
        ValueKind.Dict => v.AsDict.Count,
        ValueKind.String => CodePoints(v.AsString).Count,
        _ => throw new TemplateError($"object of type '{v.TypeName}' has no len()"),
    };

    /// <summary>The string as Python sees it: one entry per code point.</summary>
    public static IReadOnlyList<string> CodePoints(string s)
    {
        var hasSurrogates = false;
        foreach (var c in s)
            if (char.IsSurrogate(c)) { hasSurrogates = true; break; }
        if (!hasSurrogates) return new CharList(s);
        var points = new List<string>(s.Length);
        for (var i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { points.Add(s.Substring(i, 2)); i++; }
            else points.Add(s[i].ToString());
        }
        return points;
    }

    private sealed class CharList(string s) : IReadOnlyList<string>
    {
        public string this[int index] => s[index].ToString(CultureInfo.InvariantCulture);
        public int Count => s.Length;
        public IEnumerator<string> GetEnumerator() { for (var i = 0; i < s.Length; i++) yield return this[i]; }
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
