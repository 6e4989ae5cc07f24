// The data a chat template computes with, modelled on the Python values Jinja sees: undefined, None,
// bool, int (long), float (double), str (or markupsafe's Markup, what |safe and |escape return),
// list/tuple, dict (insertion-ordered), plus objects (namespace,
// loop), callables and one-shot iterators (what map, select and friends return: Python generators). Built from System.Text.Json nodes the way json.loads would build them.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Temper.Models.Text;

internal enum ValueKind { Undefined, None, Bool, Int, Float, String, List, Dict, Object, Callable, Iterator }

/// <summary>An attribute bag the template can read (namespace(), the loop variable, joiner()).</summary>
internal interface ITemplateObject
{
    /// <summary>Python type name, used in error messages and str().</summary>
    string TypeName { get; }
    /// <summary>The attribute's value, or null when there is none.</summary>
    TemplateValue? GetAttribute(string name);
    /// <summary>What str() of the object prints.</summary>
    string Describe();
}

internal delegate TemplateValue TemplateFunction(TemplateArgs args);

/// <summary>A function or bound method the template can call.</summary>
internal sealed record TemplateCallable(string Name, TemplateFunction Invoke);

/// <summary>
/// A Python generator or iterator: always truthy, no len(), not JSON-serialisable, and used up by
/// the first loop or filter that reads it.
/// </summary>
internal sealed class TemplateIterator(List<TemplateValue> items, string typeName)
{
    private int _position;

    public string TypeName { get; } = typeName;

    /// <summary>The next item, or null when exhausted.</summary>
    public TemplateValue? Next() => _position < items.Count ? items[_position++] : null;

    /// <summary>Everything not yet read; the iterator is exhausted afterwards.</summary>
    public List<TemplateValue> Drain()
    {
        var rest = items.GetRange(_position, items.Count - _position);
        _position = items.Count;
        return rest;
    }
}

internal sealed class TemplateValue
{
    public ValueKind Kind { get; }
    private readonly long _int;
    private readonly double _float;
    private readonly object? _ref;

    /// <summary>For lists: true when the value is a Python tuple (prints with parentheses).</summary>
    public bool IsTuple { get; }

    /// <summary>For strings: true when the value is a Markup (HTML-safe) string; + escapes a plain str added to it.</summary>
    public bool IsMarkup { get; }

    private TemplateValue(ValueKind kind, long i = 0, double f = 0, object? r = null, bool tuple = false, bool markup = false)
    {
        Kind = kind; _int = i; _float = f; _ref = r; IsTuple = tuple; IsMarkup = markup;
    }

    public static readonly TemplateValue None = new(ValueKind.None);
    public static readonly TemplateValue True = new(ValueKind.Bool, 1);
    public static readonly TemplateValue False = new(ValueKind.Bool, 0);
    public static readonly TemplateValue EmptyString = new(ValueKind.String, r: "");
    private static readonly TemplateValue PlainUndefined = new(ValueKind.Undefined, r: "undefined value");

    /// <summary>An undefined value; <paramref name="why"/> is the error raised when it is used wrongly.</summary>
    public static TemplateValue Undefined(string? why = null) =>
        why == null ? PlainUndefined : new(ValueKind.Undefined, r: why);

    public static TemplateValue Bool(bool b) => b ? True : False;
    public static TemplateValue Int(long i) => new(ValueKind.Int, i: i);
    public static TemplateValue Float(double f) => new(ValueKind.Float, f: f);
    public static TemplateValue String(string s) => s.Length == 0 ? EmptyString : new(ValueKind.String, r: s);
    public static TemplateValue Markup(string s) => new(ValueKind.String, r: s, markup: true);
    public static TemplateValue List(List<TemplateValue> items) => new(ValueKind.List, r: items);
    public static TemplateValue Tuple(List<TemplateValue> items) => new(ValueKind.List, r: items, tuple: true);
    public static TemplateValue Dict(TemplateDict dict) => new(ValueKind.Dict, r: dict);
    public static TemplateValue Object(ITemplateObject obj) => new(ValueKind.Object, r: obj);
    public static TemplateValue Function(string name, TemplateFunction f) =>
        new(ValueKind.Callable, r: new TemplateCallable(name, f));
    public static TemplateValue Iterator(List<TemplateValue> items, string typeName = "generator") =>
        new(ValueKind.Iterator, r: new TemplateIterator(items, typeName));

    public bool IsUndefined => Kind == ValueKind.Undefined;
    public bool IsNone => Kind == ValueKind.None;
    public bool IsString => Kind == ValueKind.String;
    /// <summary>int, float or bool (bool is a number in Python).</summary>
    public bool IsNumber => Kind is ValueKind.Int or ValueKind.Float or ValueKind.Bool;
    /// <summary>int or bool: the kinds integer arithmetic applies to.</summary>
    public bool IsIntegral => Kind is ValueKind.Int or ValueKind.Bool;

    public bool AsBool => _int != 0;
    public long AsInt => _int;
    public double AsDouble => Kind == ValueKind.Float ? _float : _int;
    public string AsString => (string)_ref!;
    public List<TemplateValue> AsList => (List<TemplateValue>)_ref!;
    public TemplateDict AsDict => (TemplateDict)_ref!;
    public ITemplateObject AsObject => (ITemplateObject)_ref!;
    public TemplateCallable AsCallable => (TemplateCallable)_ref!;
    public TemplateIterator AsIterator => (TemplateIterator)_ref!;
    /// <summary>For undefined values: the message of the error their misuse raises.</summary>
    public string UndefinedReason => (string)_ref!;
    internal object? Reference => _ref;

    /// <summary>Python truthiness.</summary>
    public bool IsTruthy => Kind switch
    {
        ValueKind.Undefined or ValueKind.None => false,
        ValueKind.Bool or ValueKind.Int => _int != 0,
        ValueKind.Float => _float != 0,
        ValueKind.String => AsString.Length != 0,
        ValueKind.List => AsList.Count != 0,
        ValueKind.Dict => AsDict.Count != 0,
        _ => true,
    };

    /// <summary>Python's type(x).__name__, for error messages.</summary>
    public string TypeName => Kind switch
    {
        ValueKind.Undefined => "Undefined",
        ValueKind.None => "NoneType",
        ValueKind.Bool => "bool",
        ValueKind.Int => "int",
        ValueKind.Float => "float",
        ValueKind.String => IsMarkup ? "Markup" : "str",
        ValueKind.List => IsTuple ? "tuple" : "list",
        ValueKind.Dict => "dict",
        ValueKind.Object => AsObject.TypeName,
        ValueKind.Iterator => AsIterator.TypeName,
        _ => "function",
    };

    /// <summary>Python str(): what {{ value }} prints.</summary>
    public override string ToString() => PythonRepr.Str(this);

    /// <summary>Converts JSON the way Python's json.loads would: "1" is an int, "1.0" a float.</summary>
    public static TemplateValue FromJson(JsonNode? node)
    {
        switch (node)
        {
            case null:
                return None;
            case JsonObject obj:
                var dict = new TemplateDict();
                foreach (var (key, child) in obj) dict[String(key)] = FromJson(child);
                return Dict(dict);
            case JsonArray arr:
                var list = new List<TemplateValue>(arr.Count);
                foreach (var child in arr) list.Add(FromJson(child));
                return List(list);
            case JsonValue value:
                if (value.TryGetValue<JsonElement>(out var element)) return FromJson(element);
                switch (value.GetValueKind())
                {
                    case JsonValueKind.String: return String(value.GetValue<string>());
                    case JsonValueKind.True: return True;
                    case JsonValueKind.False: return False;
                    case JsonValueKind.Null: return None;
                    case JsonValueKind.Number:
                        // A value built in C# keeps its CLR type: floating types are floats, the rest ints.
                        if (value.TryGetValue<double>(out var d)) return Float(d);
                        if (value.TryGetValue<float>(out var f)) return Float(f);
                        if (value.TryGetValue<decimal>(out var m)) return Float((double)m);
                        return NumberFromText(value.ToJsonString());
                }
                break;
        }
        throw new TemplateError($"cannot convert JSON node {node.ToJsonString()} to a template value");
    }

    public static TemplateValue FromJson(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var dict = new TemplateDict();
                foreach (var p in element.EnumerateObject()) dict[String(p.Name)] = FromJson(p.Value);
                return Dict(dict);
            case JsonValueKind.Array:
                var list = new List<TemplateValue>(element.GetArrayLength());
                foreach (var item in element.EnumerateArray()) list.Add(FromJson(item));
                return List(list);
            case JsonValueKind.String: return String(element.GetString()!);
            case JsonValueKind.Number: return NumberFromText(element.GetRawText());
            case JsonValueKind.True: return True;
            case JsonValueKind.False: return False;
            default: return None;
        }
    }

    private static TemplateValue NumberFromText(string text)
    {
        if (text.IndexOfAny(['.', 'e', 'E']) < 0 &&
            long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var i))
            return Int(i);
        return Float(double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture));
    }
}
