// An insertion-ordered dictionary with Python key semantics (1, 1.0 and True are the same key),
// the dict a chat template sees for each message, tool and dict literal.
namespace Temper.Models.Text;

internal sealed class TemplateDict
{
    private readonly List<KeyValuePair<TemplateValue, TemplateValue>> _entries = [];
    private readonly Dictionary<TemplateValue, int> _index = new(PythonKeyComparer.Instance);

    public int Count => _entries.Count;
    public IReadOnlyList<KeyValuePair<TemplateValue, TemplateValue>> Entries => _entries;

    public TemplateValue this[TemplateValue key]
    {
        set
        {
            if (_index.TryGetValue(key, out var at)) _entries[at] = new(_entries[at].Key, value);
            else { _index[key] = _entries.Count; _entries.Add(new(key, value)); }
        }
    }

    public bool TryGet(TemplateValue key, out TemplateValue value)
    {
        if (IsHashable(key) && _index.TryGetValue(key, out var at)) { value = _entries[at].Value; return true; }
        value = TemplateValue.None;
        return false;
    }

    public bool TryGet(string key, out TemplateValue value) => TryGet(TemplateValue.String(key), out value);

    public bool ContainsKey(TemplateValue key) => IsHashable(key) && _index.ContainsKey(key);

    public static bool IsHashable(TemplateValue v) =>
        v.Kind is ValueKind.None or ValueKind.Bool or ValueKind.Int or ValueKind.Float or ValueKind.String
        || (v.Kind == ValueKind.List && v.IsTuple && v.AsList.TrueForAll(IsHashable));

    private sealed class PythonKeyComparer : IEqualityComparer<TemplateValue>
    {
        public static readonly PythonKeyComparer Instance = new();

        public bool Equals(TemplateValue? x, TemplateValue? y) => TemplateOperators.AreEqual(x!, y!);

        public int GetHashCode(TemplateValue v)
        {
            if (!IsHashable(v)) throw new TemplateError($"unhashable type: '{v.TypeName}'");
            return v.Kind switch
            {
                ValueKind.None => 0,
                ValueKind.Bool or ValueKind.Int or ValueKind.Float => v.AsDouble.GetHashCode(),
                ValueKind.String => StringComparer.Ordinal.GetHashCode(v.AsString),
                _ => v.AsList.Aggregate(17, (h, item) => h * 31 + GetHashCode(item)),
            };
        }
    }
}
