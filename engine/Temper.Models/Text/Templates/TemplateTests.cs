// The tests (value is name(args)) of Jinja: defined, none, string, mapping, iterable, sequence,
// number, equalto, in, ... with Python's quirks kept (true is a number; an undefined value is
// iterable and a sequence).
namespace Temper.Models.Text;

internal static class TemplateTests
{
    private delegate bool Test(TemplateValue value, TemplateArgs args);

    private static readonly Dictionary<string, Test> All = new()
    {
        ["defined"] = (v, _) => !v.IsUndefined,
        ["undefined"] = (v, _) => v.IsUndefined,
        ["none"] = (v, _) => v.IsNone,
        ["boolean"] = (v, _) => v.Kind == ValueKind.Bool,
        ["true"] = (v, _) => v.Kind == ValueKind.Bool && v.AsBool,
        ["false"] = (v, _) => v.Kind == ValueKind.Bool && !v.AsBool,
        ["integer"] = (v, _) => v.Kind == ValueKind.Int,
        ["float"] = (v, _) => v.Kind == ValueKind.Float,
        ["number"] = (v, _) => v.IsNumber,
        ["string"] = (v, _) => v.IsString,
        ["mapping"] = (v, _) => v.Kind == ValueKind.Dict,
        ["iterable"] = (v, _) => v.Kind is ValueKind.Undefined or ValueKind.String or ValueKind.List or ValueKind.Dict or ValueKind.Iterator,
        ["sequence"] = (v, _) => v.Kind is ValueKind.Undefined or ValueKind.String or ValueKind.List or ValueKind.Dict,
        ["callable"] = (v, _) => v.Kind is ValueKind.Callable or ValueKind.Undefined,
        ["odd"] = (v, _) => TemplateOperators.Binary("%", v, TemplateValue.Int(2)).AsDouble == 1,
        ["even"] = (v, _) => TemplateOperators.Binary("%", v, TemplateValue.Int(2)).AsDouble == 0,
        ["divisibleby"] = (v, a) => TemplateOperators.Binary("%", v, a.Require(0, "num", "divisibleby")).AsDouble == 0,
        ["lower"] = (v, _) => PythonRepr.Str(v) is var s && s.Any(char.IsLower) && !s.Any(char.IsUpper),
        ["upper"] = (v, _) => PythonRepr.Str(v) is var s && s.Any(char.IsUpper) && !s.Any(char.IsLower),
        ["escaped"] = (v, _) => v.IsMarkup,
        ["sameas"] = (v, a) => SameAs(v, a.Require(0, "other", "sameas")),
        ["in"] = (v, a) => TemplateOperators.Contains(a.Require(0, "seq", "in"), v),
        ["filter"] = (v, _) => v.IsString && TemplateFilters.Exists(v.AsString),
        ["test"] = (v, _) => v.IsString && Exists(v.AsString),
        ["=="] = Equal, ["eq"] = Equal, ["equalto"] = Equal,
        ["!="] = (v, a) => !Equal(v, a), ["ne"] = (v, a) => !Equal(v, a),
        ["<"] = Ordered("<"), ["lt"] = Ordered("<"), ["lessthan"] = Ordered("<"),
        ["<="] = Ordered("<="), ["le"] = Ordered("<="),
        [">"] = Ordered(">"), ["gt"] = Ordered(">"), ["greaterthan"] = Ordered(">"),
        [">="] = Ordered(">="), ["ge"] = Ordered(">="),
    };

    public static bool Exists(string name) => All.ContainsKey(name);

    public static bool Apply(string name, TemplateValue value, TemplateArgs args) =>
        All.TryGetValue(name, out var test) ? test(value, args) : throw new TemplateError($"No test named '{name}' found.");

    private static bool Equal(TemplateValue v, TemplateArgs a) => TemplateOperators.AreEqual(v, a.Require(0, "other", "equalto"));

    private static Test Ordered(string op) => (v, a) => TemplateOperators.Compare(op, v, a.Require(0, "other", op));

    private static bool SameAs(TemplateValue a, TemplateValue b) =>
        a.Kind == b.Kind && (a.Kind is ValueKind.None or ValueKind.Undefined || (a.Kind == ValueKind.Bool && a.AsBool == b.AsBool)
                             || ReferenceEquals(a, b) || (a.Reference != null && ReferenceEquals(a.Reference, b.Reference)));
}
