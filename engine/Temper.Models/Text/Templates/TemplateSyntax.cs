// The syntax tree the parser builds and the interpreter walks: statements (text, output, for, if,
// set, macro, ...) and expressions (constants, names, attribute/item access, calls, filters, tests,
// operators). Every node keeps its source line for error messages.
namespace Temper.Models.Text;

internal abstract record Stmt(int Line);

internal sealed record TextStmt(string Text, int Line) : Stmt(Line);
internal sealed record OutputStmt(Expr Value, int Line) : Stmt(Line);
/// <summary>{% for target in iterable if filter [recursive] %}; a recursive loop renders loop(children) with its own body.</summary>
internal sealed record ForStmt(Expr Target, Expr Iterable, Expr? Filter, List<Stmt> Body, List<Stmt>? Else, bool Recursive, int Line) : Stmt(Line);
internal sealed record IfStmt(List<(Expr Test, List<Stmt> Body)> Branches, List<Stmt>? Else, int Line) : Stmt(Line);
internal sealed record SetStmt(Expr Target, Expr Value, int Line) : Stmt(Line);
internal sealed record SetBlockStmt(Expr Target, List<FilterExpr> Filters, List<Stmt> Body, int Line) : Stmt(Line);
/// <summary>
/// A macro; as in Jinja, it takes extra positional arguments as varargs, extra keywords as kwargs and a
/// {% call %} body as caller only when its body reads those names.
/// </summary>
internal sealed record MacroStmt(string Name, List<string> Params, List<Expr?> Defaults, List<Stmt> Body,
    bool CatchesVarargs, bool CatchesKwargs, bool UsesCaller, int Line) : Stmt(Line);
/// <summary>{% call(params) macro(args) %}body{% endcall %}: calls the macro with the body as its caller.</summary>
internal sealed record CallBlockStmt(MacroStmt Caller, CallExpr Call, int Line) : Stmt(Line);
internal sealed record WithStmt(List<(Expr Target, Expr Value)> Assignments, List<Stmt> Body, int Line) : Stmt(Line);
internal sealed record FilterBlockStmt(List<FilterExpr> Filters, List<Stmt> Body, int Line) : Stmt(Line);
/// <summary>transformers' {% generation %} block: renders its body (the span marks assistant tokens).</summary>
internal sealed record GenerationStmt(List<Stmt> Body, int Line) : Stmt(Line);
internal sealed record BreakStmt(int Line) : Stmt(Line);
internal sealed record ContinueStmt(int Line) : Stmt(Line);

internal abstract record Expr(int Line);

internal sealed record ConstExpr(TemplateValue Value, int Line) : Expr(Line);
internal sealed record NameExpr(string Name, int Line) : Expr(Line);
/// <summary>ns.attr as the target of {% set %}.</summary>
internal sealed record NamespaceRefExpr(string Name, string Attribute, int Line) : Expr(Line);
internal sealed record ListExpr(List<Expr> Items, bool IsTuple, int Line) : Expr(Line);
internal sealed record DictExpr(List<(Expr Key, Expr Value)> Items, int Line) : Expr(Line);
internal sealed record GetAttrExpr(Expr Target, string Name, int Line) : Expr(Line);
internal sealed record GetItemExpr(Expr Target, Expr Key, int Line) : Expr(Line);
internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop, Expr? Step, int Line) : Expr(Line);
internal sealed record CallExpr(Expr Callee, CallArgs Args, int Line) : Expr(Line);
internal sealed record FilterExpr(Expr? Input, string Name, CallArgs Args, int Line) : Expr(Line);
internal sealed record TestExpr(Expr Input, string Name, CallArgs Args, int Line) : Expr(Line);
internal sealed record UnaryExpr(string Op, Expr Operand, int Line) : Expr(Line);
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right, int Line) : Expr(Line);
internal sealed record CompareExpr(Expr First, List<(string Op, Expr Right)> Rest, int Line) : Expr(Line);
internal sealed record ConcatExpr(List<Expr> Parts, int Line) : Expr(Line);
internal sealed record AndExpr(Expr Left, Expr Right, int Line) : Expr(Line);
internal sealed record OrExpr(Expr Left, Expr Right, int Line) : Expr(Line);
internal sealed record NotExpr(Expr Operand, int Line) : Expr(Line);
internal sealed record CondExpr(Expr Test, Expr Then, Expr? Else, int Line) : Expr(Line);

internal sealed record CallArgs(List<Expr> Positional, List<(string Name, Expr Value)> Keyword)
{
    public static readonly CallArgs None = new([], []);

    /// <summary>The argument expressions in source order: positional, then keyword values.</summary>
    public IEnumerable<Expr> All => Positional.Concat(Keyword.Select(k => k.Value));
}

/// <summary>The sub-expressions of an expression in source order (nulls for absent optional parts), for the passes that walk every one.</summary>
internal static class ExprChildren
{
    public static IEnumerable<Expr?> Of(Expr expr) => expr switch
    {
        ListExpr l => l.Items,
        DictExpr d => d.Items.SelectMany(x => new[] { x.Key, x.Value }),
        GetAttrExpr a => [a.Target],
        GetItemExpr g => [g.Target, g.Key],
        SliceExpr s => [s.Target, s.Start, s.Stop, s.Step],
        CallExpr c => c.Args.All.Prepend(c.Callee),
        FilterExpr f => f.Args.All.Prepend(f.Input),
        TestExpr t => t.Args.All.Prepend(t.Input),
        UnaryExpr u => [u.Operand],
        BinaryExpr b => [b.Left, b.Right],
        CompareExpr c => c.Rest.Select(r => r.Right).Prepend(c.First),
        ConcatExpr c => c.Parts,
        AndExpr a => [a.Left, a.Right],
        OrExpr o => [o.Left, o.Right],
        NotExpr n => [n.Operand],
        CondExpr c => [c.Test, c.Then, c.Else],
        _ => [], // ConstExpr, NameExpr, NamespaceRefExpr
    };
}
