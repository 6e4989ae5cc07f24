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
            case null or ConstExpr or NameExpr or NamespaceRefExpr: return;
            case ListExpr l: l.Items.ForEach(x => Check(x, soft)); return;
            case DictExpr d: d.Items.ForEach(x => { Check(x.Key, soft); Check(x.Value, soft); }); return;
            case GetAttrExpr a: Check(a.Target, soft); return;
            case GetItemExpr g: Check(g.Target, soft); Check(g.Key, soft); return;
            case SliceExpr s: Check(s.Target, soft); Check(s.Start, soft); Check(s.Stop, soft); Check(s.Step, soft); return;
            case CallExpr c: Check(c.Callee, soft); Check(c.Args, soft); return;
            case FilterExpr f:
                if (!soft && !TemplateFilters.Exists(f.Name)) throw new TemplateSyntaxError($"No filter named '{f.Name}'.", f.Line);
                Check(f.Input, soft);
                Check(f.Args, soft);
                return;
            case TestExpr t:
                if (!soft && !TemplateTests.Exists(t.Name)) throw new TemplateSyntaxError($"No test named '{t.Name}'.", t.Line);
                Check(t.Input, soft);
                Check(t.Args, soft);
                return;
            case UnaryExpr u: Check(u.Operand, soft); return;
            case BinaryExpr b: Check(b.Left, soft); Check(b.Right, soft); return;
            case CompareExpr c: Check(c.First, soft); c.Rest.ForEach(r => Check(r.Right, soft)); return;
            case ConcatExpr c: c.Parts.ForEach(p => Check(p, soft)); return;
            case AndExpr a: Check(a.Left, soft); Check(a.Right, soft); return;
            case OrExpr o: Check(o.Left, soft); Check(o.Right, soft); return;
            case NotExpr n: Check(n.Operand, soft); return;
            case CondExpr c: Check(c.Test, true); Check(c.Then, true); Check(c.Else, true); return;
        }
    }

    private static void Check(CallArgs args, bool soft)
    {
        args.Positional.ForEach(a => Check(a, soft));
        args.Keyword.ForEach(k => Check(k.Value, soft));
    }
}
