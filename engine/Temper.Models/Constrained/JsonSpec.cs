// What a JSON value must look like, compiled from a JSON Schema (JsonSchemaCompiler) or built in for
// json_object: a graph of nodes (cyclic where a $ref recurses) that the byte automaton (JsonFrames) walks.
// Objects list their properties in the order they must be written (the schema's order, as vLLM/xgrammar
// emit them); optional ones may be skipped, and the keys that may come next at each position are a
// literal trie precomputed per position. Literals (enum, const, true/false/null) are a trie of their
// compact JSON texts.
using System.Text;

namespace Temper.Models.Constrained;

internal enum SpecKind { Object, Array, String, Number, Integer, Literals, Union }

internal sealed class JsonSpec
{
    public SpecKind Kind { get; set; }

    // Object: fixed properties in order, or (MapValues != null) any string keys each with a MapValues value.
    public List<(string Name, JsonSpec Value, bool Required)> Properties { get; } = [];
    public JsonSpec? MapValues { get; set; }
    private LiteralTrie[]? _keys;

    // Array.
    public JsonSpec? Items { get; set; }
    public int MinItems { get; set; }
    public int MaxItems { get; set; } = int.MaxValue;

    // String (lengths in code points; an escape counts one).
    public int MinLength { get; set; }
    public int MaxLength { get; set; } = int.MaxValue;

    // Literals.
    public LiteralTrie? Literals { get; set; }

    // Union.
    public List<JsonSpec> Alternatives { get; } = [];

    public bool TracksLength => MinLength > 0 || MaxLength != int.MaxValue;

    /// <summary>The keys (as JSON strings, quotes included) allowed when the properties from `next` on remain:
    /// each property up to and including the first required one; tag = the property's index.</summary>
    public LiteralTrie KeysFrom(int next)
    {
        _keys ??= BuildKeys();
        return _keys[next];
    }

    private LiteralTrie[] BuildKeys()
    {
        var r = new LiteralTrie[Properties.Count + 1];
        for (int next = 0; next <= Properties.Count; next++)
        {
            var keys = new List<(byte[], int)>();
            for (int j = next; j < Properties.Count; j++)
            {
                keys.Add((Encoding.UTF8.GetBytes(JsonSchemaCompiler.Compact(Properties[j].Name)), j));
                if (Properties[j].Required) break;
            }
            r[next] = new LiteralTrie(keys);
        }
        return r;
    }

    /// <summary>Whether the object may close when the properties from `next` on remain (none of them required).</summary>
    public bool CanClose(int next)
    {
        for (int j = next; j < Properties.Count; j++) if (Properties[j].Required) return false;
        return true;
    }

    public static JsonSpec String() => new() { Kind = SpecKind.String };

    /// <summary>A string of any length (a map's keys): one shared node, so states with one compare equal.</summary>
    public static readonly JsonSpec FreeString = String();

    /// <summary>Any JSON value (json_object's values, a schema of {} or true).</summary>
    public static JsonSpec Any()
    {
        var any = new JsonSpec { Kind = SpecKind.Union };
        var obj = new JsonSpec { Kind = SpecKind.Object, MapValues = any };
        var arr = new JsonSpec { Kind = SpecKind.Array, Items = any };
        any.Alternatives.AddRange([obj, arr, String(), new JsonSpec { Kind = SpecKind.Number }, LiteralsOf("true", "false", "null")]);
        return any;
    }

    /// <summary>json_object: any object (whose values are any JSON).</summary>
    public static JsonSpec AnyObject() => Any().Alternatives[0];

    public static JsonSpec LiteralsOf(params string[] texts) =>
        new() { Kind = SpecKind.Literals, Literals = new LiteralTrie(texts.Select((t, i) => (Encoding.UTF8.GetBytes(t), i))) };
}

/// <summary>A trie of byte strings with a tag at each string's end (a key's property index).</summary>
internal sealed class LiteralTrie
{
    private readonly List<(byte B, int Child)>[] _children;
    private readonly int[] _tag;                 // -1: no string ends here

    public LiteralTrie(IEnumerable<(byte[] Text, int Tag)> strings)
    {
        var children = new List<List<(byte, int)>> { new() };
        var tags = new List<int> { -1 };
        foreach (var (text, tag) in strings)
        {
            int node = 0;
            foreach (byte b in text)
            {
                int next = -1;
                foreach (var (cb, c) in children[node]) if (cb == b) next = c;
                if (next < 0)
                {
                    next = children.Count;
                    children.Add([]);
                    tags.Add(-1);
                    children[node].Add((b, next));
                }
                node = next;
            }
            if (tags[node] < 0) tags[node] = tag;
        }
        _children = [.. children];
        _tag = [.. tags];
    }

    public bool IsEmpty => _children[0].Count == 0 && _tag[0] < 0;

    public int Child(int node, byte b)
    {
        foreach (var (cb, c) in _children[node]) if (cb == b) return c;
        return -1;
    }

    public int Tag(int node) => _tag[node];
    public bool HasChildren(int node) => _children[node].Count > 0;
}
