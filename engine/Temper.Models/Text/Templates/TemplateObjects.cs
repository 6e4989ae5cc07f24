// The objects a template can hold besides plain data: namespace() (the one thing a template may
// assign attributes to, how loops carry state out) and the loop variable of a for loop (callable in a
// recursive loop).
namespace Temper.Models.Text;

internal sealed class TemplateNamespace : ITemplateObject
{
    private readonly TemplateDict _attributes = new();

    public string TypeName => "Namespace";

    public TemplateValue? GetAttribute(string name) => _attributes.TryGet(name, out var v) ? v : null;

    public void Set(string name, TemplateValue value) => _attributes[TemplateValue.String(name)] = value;

    public string Describe() => "<Namespace " + PythonRepr.Repr(TemplateValue.Dict(_attributes)) + ">";
}

/// <summary>loop.index, loop.first, loop.previtem, ... for one iteration of a for loop; loop(items) in a recursive one.</summary>
internal sealed class LoopContext(List<TemplateValue> items, int depth) : ITemplateObject
{
    private TemplateValue? _lastChanged;

    public int Index0 { get; set; }

    /// <summary>Renders the loop body over other items one level deeper; null unless the loop is recursive.</summary>
    public Func<TemplateValue, TemplateValue>? Recurse { get; set; }

    public TemplateValue Call(TemplateArgs args) =>
        Recurse == null ? throw new TemplateError("The loop must have the 'recursive' marker to be called recursively.")
            : Recurse(args.Require(0, "iterable", "loop"));

    public string TypeName => "LoopContext";

    public TemplateValue? GetAttribute(string name)
    {
        var length = items.Count;
        return name switch
        {
            "index" => TemplateValue.Int(Index0 + 1),
            "index0" => TemplateValue.Int(Index0),
            "revindex" => TemplateValue.Int(length - Index0),
            "revindex0" => TemplateValue.Int(length - Index0 - 1),
            "first" => TemplateValue.Bool(Index0 == 0),
            "last" => TemplateValue.Bool(Index0 == length - 1),
            "length" => TemplateValue.Int(length),
            "depth" => TemplateValue.Int(depth),
            "depth0" => TemplateValue.Int(depth - 1),
            "previtem" => Index0 > 0 ? items[Index0 - 1] : TemplateValue.Undefined("there is no previous item"),
            "nextitem" => Index0 + 1 < length ? items[Index0 + 1] : TemplateValue.Undefined("there is no next item"),
            "cycle" => TemplateValue.Function("cycle", args =>
                args.Positional.Count == 0
                    ? throw new TemplateError("no items for cycling given")
                    : args.Positional[Index0 % args.Positional.Count]),
            "changed" => TemplateValue.Function("changed", args =>
            {
                var now = TemplateValue.Tuple(args.Positional);
                if (_lastChanged != null && TemplateOperators.AreEqual(_lastChanged, now)) return TemplateValue.False;
                _lastChanged = now;
                return TemplateValue.True;
            }),
            _ => null,
        };
    }

    public string Describe() => $"<LoopContext {Index0 + 1}/{items.Count}>";
}
