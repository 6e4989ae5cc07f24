// Walks the syntax tree and writes the output. Scoping follows Jinja: each for-loop iteration, macro
// call, with, set, filter and generation block gets its own frame, so {% set %} inside them does not
// leak out (which is why templates carry loop state in namespace()); if blocks share their frame. A
// frame starts with the names TemplateScopes says Jinja starts that scope without, as undefined.
using System.Text;

namespace Temper.Models.Text;

internal sealed class TemplateInterpreter(TemplateScopes scopes)
{
    private const int MaxMacroDepth = 200;

    private sealed class Frame(Frame? parent)
    {
        private readonly Dictionary<string, TemplateValue> _vars = [];

        public TemplateValue? Lookup(string name)
        {
            for (var f = this; f != null; f = f.Parent)
                if (f._vars.TryGetValue(name, out var v)) return v;
            return null;
        }

        public Frame? Parent { get; } = parent;
        public void Set(string name, TemplateValue value) => _vars[name] = value;
    }

    private enum Flow { Normal, Break, Continue }

    private int _macroDepth;

    /// <summary>The source line of the statement or expression being evaluated (for error messages).</summary>
    public int Line { get; private set; } = 1;

    public string Render(List<Stmt> body, Dictionary<string, TemplateValue> context)
    {
        var globals = new Frame(null);
        foreach (var (name, value) in context) globals.Set(name, value);
        var output = new StringBuilder();
        Exec(body, Enter(globals, body), output);
        return output.ToString();
    }

    /// <summary>A new scope for <paramref name="body"/>, holding as undefined the names Jinja starts it without.</summary>
    private Frame Enter(Frame parent, List<Stmt>? body)
    {
        var frame = new Frame(parent);
        foreach (var name in scopes.UndefinedAtEntry(body)) frame.Set(name, TemplateValue.Undefined($"'{name}' is undefined"));
        return frame;
    }

    private Flow Exec(List<Stmt> body, Frame frame, StringBuilder output)
    {
        foreach (var stmt in body)
        {
            Line = stmt.Line;
            switch (stmt)
            {
                case TextStmt text:
                    output.Append(text.Text);
                    break;
                case OutputStmt print:
                    output.Append(PythonRepr.Str(Eval(print.Value, frame)));
                    break;
                case IfStmt cond:
                    var flow = ExecIf(cond, frame, output);
                    if (flow != Flow.Normal) return flow;
                    break;
                case ForStmt loop:
                    ExecFor(loop, Eval(loop.Iterable, frame), frame, output, depth: 1);
                    break;
                case SetStmt set:
                    Assign(set.Target, Eval(set.Value, frame), frame);
                    break;
                case SetBlockStmt setBlock:
                    var captured = new StringBuilder();
                    var blockFlow = Exec(setBlock.Body, Enter(frame, setBlock.Body), captured);
                    Assign(setBlock.Target, ApplyFilters(setBlock.Filters, TemplateValue.String(captured.ToString()), frame), frame);
                    if (blockFlow != Flow.Normal) return blockFlow;
                    break;
                case MacroStmt macro:
                    frame.Set(macro.Name, DefineMacro(macro, frame));
                    break;
                case CallBlockStmt callBlock:
                    var callArgs = EvalArgs(callBlock.Call.Args, frame);
                    var withCaller = new TemplateArgs(callArgs.Positional, [.. callArgs.Keyword, new("caller", DefineMacro(callBlock.Caller, frame))]);
                    output.Append(PythonRepr.Str(Call(Eval(callBlock.Call.Callee, frame), withCaller)));
                    break;
                case WithStmt with:
                    var inner = Enter(frame, with.Body);
                    foreach (var (target, value) in with.Assignments) Assign(target, Eval(value, frame), inner);
                    var withFlow = Exec(with.Body, inner, output);
                    if (withFlow != Flow.Normal) return withFlow;
                    break;
                case FilterBlockStmt filterBlock:
                    var body2 = new StringBuilder();
                    var filterFlow = Exec(filterBlock.Body, Enter(frame, filterBlock.Body), body2);
                    output.Append(PythonRepr.Str(ApplyFilters(filterBlock.Filters, TemplateValue.String(body2.ToString()), frame)));
                    if (filterFlow != Flow.Normal) return filterFlow;
                    break;
                case GenerationStmt generation:
                    var genFlow = Exec(generation.Body, Enter(frame, generation.Body), output);
                    if (genFlow != Flow.Normal) return genFlow;
                    break;
                case BreakStmt:
                    return Flow.Break;
                case ContinueStmt:
                    return Flow.Continue;
                default:
                    throw new TemplateError($"unknown statement {stmt.GetType().Name}");
            }
        }
        return Flow.Normal;
    }

    private Flow ExecIf(IfStmt cond, Frame frame, StringBuilder output)
    {
        foreach (var (test, body) in cond.Branches)
            if (Eval(test, frame).IsTruthy) return Exec(body, frame, output);
        return cond.Else == null ? Flow.Normal : Exec(cond.Else, frame, output);
    }

    private void ExecFor(ForStmt loop, TemplateValue iterable, Frame frame, StringBuilder output, int depth)
    {
        var items = TemplateAccess.Iterate(iterable);
        if (loop.Filter != null)
        {
            items = items.Where(item =>
            {
                var probe = new Frame(frame);
                Assign(loop.Target, item, probe);
                return Eval(loop.Filter, probe).IsTruthy;
            }).ToList();
        }
        var context = new LoopContext(items, depth);
        if (loop.Recursive)
            context.Recurse = children =>
            {
                var inner = new StringBuilder();
                ExecFor(loop, children, frame, inner, depth + 1);
                return TemplateValue.String(inner.ToString());
            };
        var loopValue = TemplateValue.Object(context);
        // Jinja clears its "else" flag at the end of the body, so else runs unless some iteration got
        // there: for an empty loop, and also when every iteration left by break or continue.
        var completed = false;
        for (var i = 0; i < items.Count; i++)
        {
            var iteration = Enter(frame, loop.Body);
            context.Index0 = i;
            iteration.Set("loop", loopValue);
            Line = loop.Line;
            Assign(loop.Target, items[i], iteration);
            var flow = Exec(loop.Body, iteration, output);
            completed |= flow == Flow.Normal;
            if (flow == Flow.Break) break;
        }
        if (!completed && loop.Else != null) Exec(loop.Else, Enter(frame, loop.Else), output);
    }

    private void Assign(Expr target, TemplateValue value, Frame frame)
    {
        switch (target)
        {
            case NameExpr name:
                frame.Set(name.Name, value);
                break;
            case NamespaceRefExpr reference:
                var ns = frame.Lookup(reference.Name);
                if (ns is not { Kind: ValueKind.Object } || ns.AsObject is not TemplateNamespace nsObject)
                    throw new TemplateError("cannot assign attribute on non-namespace object");
                nsObject.Set(reference.Attribute, value);
                break;
            case ListExpr tuple:
                if (value.Kind is not (ValueKind.List or ValueKind.Dict or ValueKind.String or ValueKind.Iterator or ValueKind.Undefined))
                    throw new TemplateError($"cannot unpack non-iterable {value.TypeName} object");
                var parts = TemplateAccess.Iterate(TemplateOperators.Defined(value));
                if (parts.Count > tuple.Items.Count)
                    throw new TemplateError($"too many values to unpack (expected {tuple.Items.Count})");
                if (parts.Count < tuple.Items.Count)
                    throw new TemplateError($"not enough values to unpack (expected {tuple.Items.Count}, got {parts.Count})");
                for (var i = 0; i < parts.Count; i++) Assign(tuple.Items[i], parts[i], frame);
                break;
            default:
                throw new TemplateError("cannot assign to this expression");
        }
    }

    /// <summary>A macro as a callable, binding its arguments as Jinja's Macro.__call__ does.</summary>
    private TemplateValue DefineMacro(MacroStmt macro, Frame defining) =>
        TemplateValue.Function(macro.Name, args =>
        {
            var count = macro.Params.Count;
            var keywords = args.Keyword.ToDictionary(k => k.Key, k => k.Value);
            var bound = new List<TemplateValue?>();
            for (var i = 0; i < count; i++)
                bound.Add(i < args.Positional.Count ? args.Positional[i] : keywords.Remove(macro.Params[i], out var v) ? v : null);
            TemplateValue? caller = null;
            if (macro.UsesCaller) caller = keywords.Remove("caller", out var c) ? c : TemplateValue.Undefined("No caller defined");
            if (!macro.CatchesKwargs && keywords.Count > 0)
                throw new TemplateError(keywords.ContainsKey("caller")
                    ? $"macro '{macro.Name}' was invoked with two values for the special caller argument. This is most likely a bug."
                    : $"macro '{macro.Name}' takes no keyword argument '{keywords.Keys.First()}'");
            if (!macro.CatchesVarargs && args.Positional.Count > count)
                throw new TemplateError($"macro '{macro.Name}' takes not more than {count} argument(s)");
            if (++_macroDepth > MaxMacroDepth) throw new TemplateError($"macro '{macro.Name}' recursed too deeply");
            var savedLine = Line;
            try
            {
                var local = Enter(defining, macro.Body);
                for (var i = 0; i < count; i++)
                {
                    var name = macro.Params[i];
                    var value = bound[i]
                        ?? (macro.Defaults[i] is { } d ? Eval(d, local) : TemplateValue.Undefined($"parameter '{name}' was not provided"));
                    local.Set(name, value);
                }
                if (caller != null) local.Set("caller", caller);
                if (macro.CatchesKwargs)
                {
                    var rest = new TemplateDict();
                    foreach (var (key, value) in keywords) rest[TemplateValue.String(key)] = value;
                    local.Set("kwargs", TemplateValue.Dict(rest));
                }
                if (macro.CatchesVarargs) local.Set("varargs", TemplateValue.Tuple([.. args.Positional.Skip(count)]));
                var output = new StringBuilder();
                Exec(macro.Body, local, output);
                return TemplateValue.String(output.ToString());
            }
            finally
            {
                _macroDepth--;
                Line = savedLine;
            }
        });

    private TemplateValue ApplyFilters(List<FilterExpr> filters, TemplateValue value, Frame frame)
    {
        foreach (var f in filters) value = TemplateFilters.Apply(f.Name, value, EvalArgs(f.Args, frame));
        return value;
    }

    private TemplateArgs EvalArgs(CallArgs args, Frame frame)
    {
        if (args.Positional.Count == 0 && args.Keyword.Count == 0) return TemplateArgs.Empty;
        return new TemplateArgs(args.Positional.Select(a => Eval(a, frame)).ToList(),
            args.Keyword.Select(k => new KeyValuePair<string, TemplateValue>(k.Name, Eval(k.Value, frame))).ToList());
    }

    private TemplateValue Eval(Expr expr, Frame frame)
    {
        Line = expr.Line;
        switch (expr)
        {
            case ConstExpr c:
                return c.Value;
            case NameExpr n:
                return frame.Lookup(n.Name) ?? TemplateValue.Undefined($"'{n.Name}' is undefined");
            case ListExpr list:
                var items = list.Items.Select(i => Eval(i, frame)).ToList();
                return list.IsTuple ? TemplateValue.Tuple(items) : TemplateValue.List(items);
            case DictExpr dictExpr:
                var dict = new TemplateDict();
                foreach (var (key, value) in dictExpr.Items) dict[Eval(key, frame)] = Eval(value, frame);
                return TemplateValue.Dict(dict);
            case GetAttrExpr attr:
                return TemplateAccess.GetAttr(Eval(attr.Target, frame), attr.Name);
            case GetItemExpr item:
                var target = Eval(item.Target, frame);
                return TemplateAccess.GetItem(target, Eval(item.Key, frame));
            case SliceExpr slice:
                var sliced = Eval(slice.Target, frame);
                return TemplateAccess.Slice(sliced, EvalOrNone(slice.Start, frame), EvalOrNone(slice.Stop, frame), EvalOrNone(slice.Step, frame),
                    constant: slice.Target is ConstExpr);
            case CallExpr call:
                return Call(Eval(call.Callee, frame), EvalArgs(call.Args, frame));
            case FilterExpr filter:
                var input = filter.Input == null ? TemplateValue.Undefined() : Eval(filter.Input, frame);
                return TemplateFilters.Apply(filter.Name, input, EvalArgs(filter.Args, frame));
            case TestExpr test:
                var tested = Eval(test.Input, frame);
                return TemplateValue.Bool(TemplateTests.Apply(test.Name, tested, EvalArgs(test.Args, frame)));
            case UnaryExpr unary:
                var operand = Eval(unary.Operand, frame);
                return unary.Op == "-" ? TemplateOperators.Negate(operand) : TemplateOperators.Plus(operand);
            case BinaryExpr binary:
                var left = Eval(binary.Left, frame);
                var right = Eval(binary.Right, frame);
                Line = binary.Line;
                return TemplateOperators.Binary(binary.Op, left, right);
            case CompareExpr compare:
                var a = Eval(compare.First, frame);
                foreach (var (op, rightExpr) in compare.Rest)
                {
                    var b = Eval(rightExpr, frame);
                    Line = compare.Line;
                    if (!TemplateOperators.Compare(op, a, b)) return TemplateValue.False;
                    a = b;
                }
                return TemplateValue.True;
            case ConcatExpr concat:
                var sb = new StringBuilder();
                foreach (var part in concat.Parts) sb.Append(PythonRepr.Str(Eval(part, frame)));
                return TemplateValue.String(sb.ToString());
            case AndExpr and:
                var l = Eval(and.Left, frame);
                return l.IsTruthy ? Eval(and.Right, frame) : l;
            case OrExpr or:
                var o = Eval(or.Left, frame);
                return o.IsTruthy ? o : Eval(or.Right, frame);
            case NotExpr not:
                return TemplateValue.Bool(!Eval(not.Operand, frame).IsTruthy);
            case CondExpr cond:
                if (Eval(cond.Test, frame).IsTruthy) return Eval(cond.Then, frame);
                return cond.Else != null ? Eval(cond.Else, frame)
                    : TemplateValue.Undefined($"the inline if-expression on line {cond.Line} evaluated to false and no else section was defined.");
            default:
                throw new TemplateError($"unknown expression {expr.GetType().Name}");
        }
    }

    private TemplateValue EvalOrNone(Expr? expr, Frame frame) => expr == null ? TemplateValue.None : Eval(expr, frame);

    private static TemplateValue Call(TemplateValue callee, TemplateArgs args)
    {
        if (callee.IsUndefined) throw new TemplateError(callee.UndefinedReason);
        if (callee.Kind == ValueKind.Object && callee.AsObject is LoopContext loop) return loop.Call(args);
        if (callee.Kind != ValueKind.Callable) throw new TemplateError($"'{callee.TypeName}' object is not callable");
        return callee.AsCallable.Invoke(args);
    }
}
