// Jinja's compile-time scoping (its idtracking), reduced to the one thing that changes output: which
// names a scope starts with as undefined. Jinja gives every scope (the template, a for body, a macro,
// with, filter, set and call blocks) one variable per name it mentions, made at scope entry. A name
// whose first mention in the scope is an assignment, with no enclosing scope mentioning it, starts
// undefined, so a loop or macro that reads it before the assignment runs sees undefined even when
// the caller passed a value ("{% for m in messages %}{{ x }}{% endfor %}{% set x = 1 %}" prints
// nothing for x). Names an if assigns in only some branches are looked up instead, as Jinja does.
namespace Temper.Models.Text;

internal sealed class TemplateScopes
{
    private enum Init { Parameter, Resolve, Alias, Undefined }

    /// <summary>One scope's names and how each starts (Jinja's Symbols).</summary>
    private sealed class Symbols(Symbols? parent)
    {
        public Dictionary<string, Init> Refs = [];
        public HashSet<string> Stores = [];
        public Symbols? Parent { get; } = parent;

        public bool HasRef(string name) => Refs.ContainsKey(name) || (Parent?.HasRef(name) ?? false);

        public void Load(string name)
        {
            if (!HasRef(name)) Refs[name] = Init.Resolve;
        }

        public void Store(string name)
        {
            Stores.Add(name);
            if (!Refs.ContainsKey(name)) Refs[name] = Parent?.HasRef(name) == true ? Init.Alias : Init.Undefined;
        }

        public void Parameter(string name)
        {
            Stores.Add(name);
            Refs[name] = Init.Parameter;
        }

        public Symbols Copy() => new(Parent) { Refs = new(Refs), Stores = [.. Stores] };

        /// <summary>After an if: a name only some branches assign is looked up (or aliased), not undefined.</summary>
        public void MergeBranches(List<Symbols> branches)
        {
            var counts = new Dictionary<string, int>();
            foreach (var branch in branches)
                foreach (var name in branch.Stores)
                    if (!Stores.Contains(name)) counts[name] = counts.GetValueOrDefault(name) + 1;
            foreach (var branch in branches)
            {
                foreach (var (name, init) in branch.Refs) Refs[name] = init;
                Stores.UnionWith(branch.Stores);
            }
            foreach (var (name, count) in counts)
                if (count != branches.Count) Refs[name] = Parent?.HasRef(name) == true ? Init.Alias : Init.Resolve;
        }
    }

    private readonly Dictionary<List<Stmt>, string[]> _undefinedAtEntry = new(ReferenceEqualityComparer.Instance);

    private TemplateScopes()
    {
    }

    public static TemplateScopes Analyze(List<Stmt> template)
    {
        var scopes = new TemplateScopes();
        scopes.Scope(template, null, []);
        return scopes;
    }

    /// <summary>The names a scope running <paramref name="body"/> must start as undefined.</summary>
    public string[] UndefinedAtEntry(List<Stmt>? body) =>
        body != null && _undefinedAtEntry.TryGetValue(body, out var names) ? names : [];

    /// <summary>
    /// Analyses one scope, then the scopes inside it: as in Jinja, a scope is analysed whole before its
    /// children, so they see every name it mentions, also after them.
    /// </summary>
    private void Scope(List<Stmt>? body, Symbols? parent, IEnumerable<string> parameters, IEnumerable<string>? stored = null)
    {
        if (body == null) return;
        var symbols = new Symbols(parent);
        foreach (var name in parameters) symbols.Parameter(name);
        foreach (var name in stored ?? []) symbols.Store(name);
        var children = new List<Action>();
        Visit(body, symbols, symbols, children);
        var undefined = symbols.Refs.Where(r => r.Value == Init.Undefined).Select(r => r.Key).ToArray();
        if (undefined.Length > 0) _undefinedAtEntry[body] = undefined;
        foreach (var child in children) child();
    }

    /// <summary>Visits statements into <paramref name="symbols"/> (a copy in if branches); inner scopes wait in children.</summary>
    private void Visit(List<Stmt> body, Symbols symbols, Symbols scope, List<Action> children)
    {
        foreach (var stmt in body)
        {
            switch (stmt)
            {
                case OutputStmt o: Load(o.Value, symbols); break;
                case IfStmt i: VisitIf(i, symbols, scope, children); break;
                case ForStmt f:
                    Load(f.Iterable, symbols);
                    children.Add(() => Scope(f.Body, scope, [.. Names(f.Target), "loop"]));
                    children.Add(() => Scope(f.Else, scope, []));
                    break;
                case SetStmt s:
                    Load(s.Value, symbols);
                    Store(s.Target, symbols);
                    break;
                case SetBlockStmt sb:
                    Store(sb.Target, symbols);
                    children.Add(() => Scope(sb.Body, scope, []));
                    break;
                case MacroStmt m:
                    symbols.Store(m.Name);
                    children.Add(() => Macro(m, scope));
                    break;
                case CallBlockStmt c:
                    Load(c.Call, symbols);
                    children.Add(() => Macro(c.Caller, scope));
                    break;
                case WithStmt w:
                    foreach (var (_, value) in w.Assignments) Load(value, symbols);
                    children.Add(() => Scope(w.Body, scope, [], w.Assignments.SelectMany(a => Names(a.Target))));
                    break;
                case FilterBlockStmt fb: children.Add(() => Scope(fb.Body, scope, [])); break;
                case GenerationStmt g: children.Add(() => Scope(g.Body, scope, [])); break;
            }
        }
    }

    private void Macro(MacroStmt macro, Symbols scope)
    {
        var parameters = macro.Params.Concat(macro.UsesCaller ? ["caller"] : [])
            .Concat(macro.CatchesVarargs ? ["varargs"] : []).Concat(macro.CatchesKwargs ? ["kwargs"] : []);
        Scope(macro.Body, scope, parameters);
    }

    /// <summary>Jinja's visit_If: the test here, then body, elifs and else each on a copy, merged.</summary>
    private void VisitIf(IfStmt cond, Symbols symbols, Symbols scope, List<Action> children)
    {
        Load(cond.Branches[0].Test, symbols);
        var body = symbols.Copy();
        Visit(cond.Branches[0].Body, body, scope, children);
        var elifs = symbols.Copy();
        foreach (var (test, branch) in cond.Branches.Skip(1))
            VisitIf(new IfStmt([(test, branch)], null, cond.Line), elifs, scope, children);
        var otherwise = symbols.Copy();
        Visit(cond.Else ?? [], otherwise, scope, children);
        symbols.MergeBranches([body, elifs, otherwise]);
    }

    private static void Store(Expr target, Symbols symbols)
    {
        if (target is NamespaceRefExpr reference) symbols.Load(reference.Name);
        foreach (var name in Names(target)) symbols.Store(name);
    }

    private static IEnumerable<string> Names(Expr target) => target switch
    {
        NameExpr n => [n.Name],
        ListExpr l => l.Items.SelectMany(Names),
        _ => [],
    };

    private static void Load(Expr? expr, Symbols symbols)
    {
        if (expr is NameExpr n) symbols.Load(n.Name);
        else if (expr != null)
            foreach (var child in ExprChildren.Of(expr)) Load(child, symbols);
    }
}
