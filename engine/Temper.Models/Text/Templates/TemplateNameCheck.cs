// Jinja's compile-time check that every filter and test named in a template exists. As in Jinja,
// names inside an if block or a conditional expression are only checked when they run, so
// "{% if 'markdown' is filter %}{{ x | markdown }}{% endif %}" parses.
namespace Temper.Models.Text;

internal static class TemplateNameCheck
{
    public static void Run(List<Stmt> body) => Check(body, soft: false);

    private static void Check(List<Stmt>? body, bool soft)
    {
        if (body == null) return;
        foreach (var stmt in body)
        {
            switch (stmt)
            {
                case OutputStmt o: Check(o.Value, soft); break;
                case IfStmt i:
                    foreach (var (test, branch) in i.Branches) { Check(test, true); Check(branch, true); }
                    Check(i.Else, true);
                    break;
                case ForStmt f:
                    Check(f.Iterable, soft);
                    Check(f.Filter, false);
                    Check(f.Body, false);
                    Check(f.Else, false);
                    break;
                case SetStmt s: Check(s.Value, soft); break;
                case SetBlockStmt sb: sb.Filters.ForEach(x => Check(x, soft)); Check(sb.Body, false); break;
                case MacroStmt m: m.Defaults.ForEach(d => Check(d, false)); Check(m.Body, false); break;
                case CallBlockStmt c: c.Caller.Defaults.ForEach(d => Check(d, false)); Check(c.Caller.Body, false); Check(c.Call, soft); break;
                case WithStmt w: w.Assignments.ForEach(a => Check(a.Value, soft)); Check(w.Body, false); break;
                case FilterBlockStmt fb: fb.Filters.ForEach(x => Check(x, soft)); Check(fb.Body, false); break;
                case GenerationStmt g: Check(g.Body, false); break;
            }
        }
    }

    private static void Check(Expr? expr, bool soft)
    {
        switch (expr)
        {
            case null: return;
            case FilterExpr f when !soft && !TemplateFilters.Exists(f.Name): throw new TemplateSyntaxError($"No filter named '{f.Name}'.", f.Line);
            case TestExpr t when !soft && !TemplateTests.Exists(t.Name): throw new TemplateSyntaxError($"No test named '{t.Name}'.", t.Line);
        }
        bool childrenSoft = soft || expr is CondExpr; // an unknown name in either branch of a conditional fails only when that branch runs
        foreach (var child in ExprChildren.Of(expr)) Check(child, childrenSoft);
    }
}
