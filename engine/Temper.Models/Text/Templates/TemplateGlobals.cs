// The functions every template can call: Jinja's range, dict, namespace and joiner, and the two
// transformers adds, raise_exception(message) and strftime_now(format).
namespace Temper.Models.Text;

internal static class TemplateGlobals
{
    private const int MaxRange = 100_000;   // the sandbox's limit

    public static void AddTo(Dictionary<string, TemplateValue> scope, Func<DateTime> now)
    {
        scope["range"] = TemplateValue.Function("range", Range);
        scope["dict"] = TemplateValue.Function("dict", Dict);
        scope["namespace"] = TemplateValue.Function("namespace", Namespace);
        scope["joiner"] = TemplateValue.Function("joiner", Joiner);
        scope["raise_exception"] = TemplateValue.Function("raise_exception", args =>
            throw new TemplateRaisedError(PythonRepr.Str(args.Require(0, "message", "raise_exception"))));
        scope["strftime_now"] = TemplateValue.Function("strftime_now", args =>
            TemplateValue.String(Strftime.Format(now(), PythonRepr.Str(args.Require(0, "format", "strftime_now")))));
    }

    private static TemplateValue Range(TemplateArgs args)
    {
        var p = args.Positional;
        if (p.Count is 0 or > 3 || !p.TrueForAll(x => x.IsIntegral))
            throw new TemplateError("range() takes 1 to 3 integer arguments");
        long start = 0, stop, step = 1;
        if (p.Count == 1) stop = p[0].AsInt;
        else { start = p[0].AsInt; stop = p[1].AsInt; if (p.Count == 3) step = p[2].AsInt; }
        if (step == 0) throw new TemplateError("range() arg 3 must not be zero");
        var items = new List<TemplateValue>();
        for (var i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            if (items.Count >= MaxRange) throw new TemplateError($"Range too big. The sandbox blocks ranges larger than MAX_RANGE ({MaxRange}).");
            items.Add(TemplateValue.Int(i));
        }
        return TemplateValue.List(items);
    }

    private static TemplateValue Dict(TemplateArgs args)
    {
        var dict = new TemplateDict();
        if (args.Positional.Count > 0)
        {
            var source = args.Positional[0];
            if (source.Kind == ValueKind.Dict) foreach (var (k, v) in source.AsDict.Entries) dict[k] = v;
            else
                foreach (var pair in TemplateAccess.Iterate(source))
                {
                    var kv = TemplateAccess.Iterate(pair);
                    if (kv.Count != 2) throw new TemplateError("dictionary update sequence element has wrong length");
                    dict[kv[0]] = kv[1];
                }
        }
        foreach (var (k, v) in args.Keyword) dict[TemplateValue.String(k)] = v;
        return TemplateValue.Dict(dict);
    }

    private static TemplateValue Namespace(TemplateArgs args)
    {
        var ns = new TemplateNamespace();
        foreach (var (k, v) in Dict(args).AsDict.Entries) ns.Set(PythonRepr.Str(k), v);
        return TemplateValue.Object(ns);
    }

    private static TemplateValue Joiner(TemplateArgs args)
    {
        var sep = args.Get(0, "sep", TemplateValue.String(", "));
        var used = false;
        return TemplateValue.Function("joiner", _ =>
        {
            if (used) return sep;
            used = true;
            return TemplateValue.EmptyString;
        });
    }
}
