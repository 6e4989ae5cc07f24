// Recursive-descent parser from tokens to the syntax tree, following Jinja's grammar and operator
// precedence: ternary < or < and < not < comparisons/in < + - < ~ < * / // % < ** < unary, then
// postfix (.attr, [item], call) and the filter/test chain (| filter, is test).
namespace Temper.Models.Text;

internal sealed class TemplateParser
{
    private readonly List<TemplateToken> _tokens;
    private int _at;
    private int _loopDepth;
    private readonly Stack<(string Tag, int Line)> _open = new();
    private readonly List<string[]> _endTags = [];
    /// <summary>The names read in the macro (or template) being parsed: varargs, kwargs and caller matter.</summary>
    private HashSet<string> _namesRead = [];

    private TemplateParser(List<TemplateToken> tokens) => _tokens = tokens;

    public static List<Stmt> Parse(string source)
    {
        var parser = new TemplateParser(TemplateLexer.Tokenize(source));
        var body = parser.Subparse(null);
        TemplateNameCheck.Run(body);
        return body;
    }

    private TemplateToken Current => _tokens[_at];
    private TemplateToken Peek(int ahead = 1) => _tokens[Math.Min(_at + ahead, _tokens.Count - 1)];
    private TemplateToken Next() => _tokens[_at < _tokens.Count - 1 ? _at++ : _at];

    private TemplateSyntaxError Fail(string message, int? line = null) => new(message, line ?? Current.Line);

    private void Expect(TokenKind kind, string what)
    {
        if (Current.Kind != kind) throw Fail($"expected token '{what}', got '{Current.Describe()}'");
        Next();
    }

    private void ExpectOp(string op)
    {
        if (!Current.IsOp(op)) throw Fail($"expected token '{op}', got '{Current.Describe()}'");
        Next();
    }

    private void ExpectName(string name)
    {
        if (!Current.IsName(name)) throw Fail($"expected token '{name}', got '{Current.Describe()}'");
        Next();
    }

    private void ExpectBlockEnd() => Expect(TokenKind.BlockEnd, "end of statement block");

    // ---- statements -------------------------------------------------------------------------------

    /// <summary>Parses until one of <paramref name="endTags"/> opens a block; stops on its name token.</summary>
    private List<Stmt> Subparse(string[]? endTags)
    {
        if (endTags != null) _endTags.Add(endTags);
        try
        {
            return SubparseBody(endTags);
        }
        finally
        {
            if (endTags != null) _endTags.RemoveAt(_endTags.Count - 1);
        }
    }

    private List<Stmt> SubparseBody(string[]? endTags)
    {
        var body = new List<Stmt>();
        while (true)
        {
            var tok = Current;
            switch (tok.Kind)
            {
                case TokenKind.Data:
                    body.Add(new TextStmt(tok.Text, tok.Line));
                    Next();
                    break;
                case TokenKind.VariableBegin:
                    Next();
                    body.Add(new OutputStmt(ParseTuple(), tok.Line));
                    Expect(TokenKind.VariableEnd, "end of print statement");
                    break;
                case TokenKind.BlockBegin:
                    Next();
                    if (endTags != null && Current.Kind == TokenKind.Name && endTags.Contains(Current.Text)) return body;
                    body.Add(ParseStatement());
                    break;
                case TokenKind.Eof:
                    if (endTags != null) throw UnknownTag(null, tok.Line);
                    return body;
                default:
                    throw Fail($"unexpected '{tok.Describe()}'");
            }
        }
    }

    /// <summary>Jinja's message for an unknown tag (or, with a null name, an unclosed block).</summary>
    private TemplateSyntaxError UnknownTag(string? name, int line)
    {
        var message = name == null ? "Unexpected end of template." : $"Encountered unknown tag '{name}'.";
        if (_endTags.Count > 0)
        {
            var looking = Quote(_endTags[^1]);
            if (name != null && _endTags.Exists(tags => tags.Contains(name)))
                message += $" You probably made a nesting mistake. Jinja is expecting this tag, but currently looking for {looking}.";
            else
                message += $" Jinja was looking for the following tags: {looking}.";
        }
        if (_open.Count > 0) message += $" The innermost block that needs to be closed is '{_open.Peek().Tag}'.";
        return Fail(message, line);
    }

    private static string Quote(string[] tags) => string.Join(" or ", tags.Select(t => $"'{t}'"));

    private Stmt ParseStatement()
    {
        var tok = Current;
        if (tok.Kind != TokenKind.Name) throw Fail("tag name expected");
        switch (tok.Text)
        {
            case "for": return ParseFor();
            case "if": return ParseIf();
            case "set": return ParseSet();
            case "macro": return ParseMacro();
            case "call": return ParseCallBlock();
            case "with": return ParseWith();
            case "filter": return ParseFilterBlock();
            case "generation":
                Next();
                ExpectBlockEnd();
                return new GenerationStmt(ParseBlockBody("generation", tok.Line, "endgeneration"), tok.Line);
            case "break":
            case "continue":
                Next();
                if (_loopDepth == 0) throw Fail($"'{tok.Text}' outside of a loop", tok.Line);
                ExpectBlockEnd();
                return tok.Text == "break" ? new BreakStmt(tok.Line) : new ContinueStmt(tok.Line);
        }
throw UnknownTag(tok.Text, tok.Line);
    }

    /// <summary>Parses a body up to <paramref name="endTag"/> and consumes "{% endtag %}".</summary>
    private List<Stmt> ParseBlockBody(string tag, int line, string endTag)
    {
        _open.Push((tag, line));
        var body = Subparse([endTag]);
        _open.Pop();
        Next();
        ExpectBlockEnd();
        return body;
    }

    private ForStmt ParseFor()
    {
        var line = Next().Line;
        var target = ParseAssignTarget(["in"]);
        ExpectName("in");
        var iterable = ParseTuple(withCondExpr: false, extraEnd: ["recursive"]);
        Expr? filter = null;
        if (Current.IsName("if")) { Next(); filter = ParseExpression(); }
        var recursive = Current.IsName("recursive");
        if (recursive) Next();
        ExpectBlockEnd();
        _open.Push(("for", line));
        _loopDepth++;
        var body = Subparse(["endfor", "else"]);
        _loopDepth--;
        List<Stmt>? elseBody = null;
        if (Current.IsName("else"))
        {
            Next();
            ExpectBlockEnd();
            elseBody = Subparse(["endfor"]);
        }
        _open.Pop();
        Next();
        ExpectBlockEnd();
        return new ForStmt(target, iterable, filter, body, elseBody, recursive, line);
    }

    private IfStmt ParseIf()
    {
        var line = Next().Line;
        var branches = new List<(Expr, List<Stmt>)>();
        List<Stmt>? elseBody = null;
        _open.Push(("if", line));
        var test = ParseTuple(withCondExpr: false);
        while (true)
        {
            ExpectBlockEnd();
            var body = Subparse(["elif", "else", "endif"]);
            branches.Add((test, body));
            var tag = Next().Text;
            if (tag == "elif") { test = ParseTuple(withCondExpr: false); continue; }
            if (tag == "else")
            {
                ExpectBlockEnd();
                elseBody = Subparse(["endif"]);
                Next();
            }
            break;
        }
        _open.Pop();
        ExpectBlockEnd();
        return new IfStmt(branches, elseBody, line);
    }

    private Stmt ParseSet()
    {
        var line = Next().Line;
        var target = ParseAssignTarget(null, withNamespace: true);
        if (Current.IsOp("="))
        {
            Next();
            var value = ParseTuple();
            ExpectBlockEnd();
            return new SetStmt(target, value, line);
        }
        var filters = ParseFilterChain();
        ExpectBlockEnd();
        return new SetBlockStmt(target, filters, ParseBlockBody("set", line, "endset"), line);
    }

    private List<FilterExpr> ParseFilterChain()
    {
        var filters = new List<FilterExpr>();
        while (Current.IsOp("|")) filters.Add((FilterExpr)ParseFilter(null));
        return filters;
    }

    private MacroStmt ParseMacro()
    {
        var line = Next().Line;
        if (Current.Kind != TokenKind.Name) throw Fail($"expected token 'name', got '{Current.Describe()}'");
        var name = Next().Text;
        var (parameters, defaults) = ParseSignature();
        ExpectBlockEnd();
        return ParseMacroBody(name, parameters, defaults, "macro", "endmacro", line);
    }

    private CallBlockStmt ParseCallBlock()
    {
        var line = Next().Line;
        var (parameters, defaults) = Current.IsOp("(") ? ParseSignature() : ([], []);
        if (ParseExpression() is not CallExpr call) throw Fail("expected call", line);
        ExpectBlockEnd();
        return new CallBlockStmt(ParseMacroBody("caller", parameters, defaults, "call", "endcall", line), call, line);
    }

    /// <summary>The body of a macro or call block, noting whether it reads varargs, kwargs or caller.</summary>
    private MacroStmt ParseMacroBody(string name, List<string> parameters, List<Expr?> defaults, string tag, string endTag, int line)
    {
        var (savedLoops, savedNames) = (_loopDepth, _namesRead);
        (_loopDepth, _namesRead) = (0, []);
        var body = ParseBlockBody(tag, line, endTag);
        var read = _namesRead;
        (_loopDepth, _namesRead) = (savedLoops, savedNames);
        _namesRead.UnionWith(read);
        return new MacroStmt(name, parameters, defaults, body, read.Contains("varargs"), read.Contains("kwargs"), read.Contains("caller"), line);
    }

    /// <summary>"(a, b=1)": parameter names and their defaults (null where there is none).</summary>
    private (List<string>, List<Expr?>) ParseSignature()
    {
        var parameters = new List<string>();
        var defaults = new List<Expr?>();
        ExpectOp("(");
        while (!Current.IsOp(")"))
        {
            if (parameters.Count > 0) ExpectOp(",");
            if (Current.IsOp(")")) break;
            if (Current.Kind != TokenKind.Name) throw Fail($"expected token 'name', got '{Current.Describe()}'");
            parameters.Add(Next().Text);
            if (Current.IsOp("=")) { Next(); defaults.Add(ParseExpression()); }
            else if (defaults.Count > 0 && defaults[^1] != null) throw Fail("non-default argument follows default argument");
            else defaults.Add(null);
        }
        Next();
        return (parameters, defaults);
    }

    private WithStmt ParseWith()
    {
        var line = Next().Line;
        var assignments = new List<(Expr, Expr)>();
        while (Current.Kind != TokenKind.BlockEnd)
        {
            if (assignments.Count > 0) ExpectOp(",");
            var target = ParseAssignTarget(null);
            ExpectOp("=");
            assignments.Add((target, ParseExpression()));
        }
        ExpectBlockEnd();
        return new WithStmt(assignments, ParseBlockBody("with", line, "endwith"), line);
    }

    private FilterBlockStmt ParseFilterBlock()
    {
        var line = Next().Line;
        var filters = new List<FilterExpr>();
        // {% filter upper | trim %}: the first filter has no leading "|".
        filters.Add((FilterExpr)ParseFilter(null, startsWithPipe: false));
        filters.AddRange(ParseFilterChain());
        ExpectBlockEnd();
        return new FilterBlockStmt(filters, ParseBlockBody("filter", line, "endfilter"), line);
    }

    private Expr ParseAssignTarget(string[]? extraEnd, bool withNamespace = false)
    {
        Expr target;
        if (withNamespace && Current.Kind == TokenKind.Name && Peek().IsOp("."))
        {
            var name = Next();
            Next();
            if (Current.Kind != TokenKind.Name) throw Fail("expected attribute name");
            target = new NamespaceRefExpr(name.Text, Next().Text, name.Line);
        }
        else
        {
            target = ParseTuple(simplified: true, extraEnd: extraEnd);
        }
        CheckTarget(target);
        return target;
    }

    private void CheckTarget(Expr target)
    {
        if (!CanAssign(target))
        {
            var kind = target is ListExpr { IsTuple: true } ? "tuple"
                : target.GetType().Name.Replace("Expr", "", StringComparison.Ordinal).ToLowerInvariant();
            throw Fail($"can't assign to '{kind}'", target.Line);
        }
    }

    private static bool CanAssign(Expr target) => target switch
    {
        NameExpr or NamespaceRefExpr => true,
        ListExpr { IsTuple: true } t => t.Items.TrueForAll(CanAssign),
        _ => false,
    };

    // ---- expressions ------------------------------------------------------------------------------

    private Expr ParseExpression(bool withCondExpr = true) => withCondExpr ? ParseCondExpr() : ParseOr();

    private Expr ParseTuple(bool simplified = false, bool withCondExpr = true, string[]? extraEnd = null, bool explicitParens = false)
    {
        var line = Current.Line;
        var items = new List<Expr>();
        var isTuple = false;
        while (true)
        {
            if (items.Count > 0) ExpectOp(",");
            if (IsTupleEnd(extraEnd)) break;
            items.Add(simplified ? ParsePrimary() : ParseExpression(withCondExpr));
            if (Current.IsOp(",")) isTuple = true;
            else break;
        }
        if (!isTuple)
        {
            if (items.Count > 0) return items[0];
            if (!explicitParens) throw Fail($"Expected an expression, got '{Current.Describe()}'");
        }
        return new ListExpr(items, true, line);
    }

    private bool IsTupleEnd(string[]? extraEnd)
    {
        var t = Current;
        if (t.Kind is TokenKind.VariableEnd or TokenKind.BlockEnd || t.IsOp(")")) return true;
        return extraEnd != null && t.Kind == TokenKind.Name && extraEnd.Contains(t.Text);
    }

    private Expr ParseCondExpr()
    {
        var line = Current.Line;
        var expr = ParseOr();
        while (Current.IsName("if"))
        {
            Next();
            var test = ParseOr();
            Expr? elseExpr = null;
            if (Current.IsName("else")) { Next(); elseExpr = ParseCondExpr(); }
            expr = new CondExpr(test, expr, elseExpr, line);
        }
        return expr;
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        while (Current.IsName("or")) { var line = Next().Line; left = new OrExpr(left, ParseAnd(), line); }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        while (Current.IsName("and")) { var line = Next().Line; left = new AndExpr(left, ParseNot(), line); }
        return left;
    }

    private Expr ParseNot()
    {
        if (Current.IsName("not")) { var line = Next().Line; return new NotExpr(ParseNot(), line); }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        var line = Current.Line;
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            var t = Current;
            if (t.Kind == TokenKind.Operator && t.Text is "==" or "!=" or "<" or "<=" or ">" or ">=")
            {
                Next();
                rest.Add((t.Text, ParseMath1()));
            }
            else if (t.IsName("in")) { Next(); rest.Add(("in", ParseMath1())); }
            else if (t.IsName("not") && Peek().IsName("in")) { Next(); Next(); rest.Add(("notin", ParseMath1())); }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, line);
    }

    private Expr ParseMath1()
    {
        var left = ParseConcat();
        while (Current.Kind == TokenKind.Operator && Current.Text is "+" or "-")
        {
            var op = Next();
            left = new BinaryExpr(op.Text, left, ParseConcat(), op.Line);
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var line = Current.Line;
        var parts = new List<Expr> { ParseMath2() };
        while (Current.IsOp("~")) { Next(); parts.Add(ParseMath2()); }
        return parts.Count == 1 ? parts[0] : new ConcatExpr(parts, line);
    }

    private Expr ParseMath2()
    {
        var left = ParsePow();
        while (Current.Kind == TokenKind.Operator && Current.Text is "*" or "/" or "//" or "%")
        {
            var op = Next();
            left = new BinaryExpr(op.Text, left, ParsePow(), op.Line);
        }
        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary();
        while (Current.IsOp("**"))
        {
            var op = Next();
            left = new BinaryExpr("**", left, ParseUnary(), op.Line);
        }
        return left;
    }

    private Expr ParseUnary(bool withFilter = true)
    {
        var t = Current;
        Expr node;
        if (t.IsOp("-")) { Next(); node = new UnaryExpr("-", ParseUnary(false), t.Line); }
        else if (t.IsOp("+")) { Next(); node = new UnaryExpr("+", ParseUnary(false), t.Line); }
        else node = ParsePrimary();
        node = ParsePostfix(node);
        if (withFilter) node = ParseFilterExpr(node);
        return node;
    }

    private NameExpr ReadName(TemplateToken t)
    {
        _namesRead.Add(t.Text);
        return new NameExpr(t.Text, t.Line);
    }

    private Expr ParsePrimary()
    {
        var t = Current;
        switch (t.Kind)
        {
            case TokenKind.Name:
                Next();
                return t.Text switch
                {
                    "true" or "True" => new ConstExpr(TemplateValue.True, t.Line),
                    "false" or "False" => new ConstExpr(TemplateValue.False, t.Line),
                    "none" or "None" => new ConstExpr(TemplateValue.None, t.Line),
                    _ => ReadName(t),
                };
            case TokenKind.String:
                Next();
                var text = t.Value!.AsString;
                while (Current.Kind == TokenKind.String) text += Next().Value!.AsString;
                return new ConstExpr(TemplateValue.String(text), t.Line);
            case TokenKind.Integer:
            case TokenKind.Float:
                Next();
                return new ConstExpr(t.Value!, t.Line);
            case TokenKind.Operator when t.Text == "(":
                Next();
                var inner = ParseTuple(explicitParens: true);
                ExpectOp(")");
                return inner;
            case TokenKind.Operator when t.Text == "[":
                return ParseList();
            case TokenKind.Operator when t.Text == "{":
                return ParseDict();
        }
        throw Fail($"unexpected '{t.Describe()}'");
    }

    private ListExpr ParseList()
    {
        var line = Next().Line;
        var items = new List<Expr>();
        while (!Current.IsOp("]"))
        {
            if (items.Count > 0) ExpectOp(",");
            if (Current.IsOp("]")) break;
            items.Add(ParseExpression());
        }
        ExpectOp("]");
        return new ListExpr(items, false, line);
    }

    private DictExpr ParseDict()
    {
        var line = Next().Line;
        var items = new List<(Expr, Expr)>();
        while (!Current.IsOp("}"))
        {
            if (items.Count > 0) ExpectOp(",");
            if (Current.IsOp("}")) break;
            var key = ParseExpression();
            ExpectOp(":");
            items.Add((key, ParseExpression()));
        }
        ExpectOp("}");
        return new DictExpr(items, line);
    }

    private Expr ParsePostfix(Expr node)
    {
        while (true)
        {
            var line = Current.Line;
            if (Current.IsOp(".") || Current.IsOp("[")) node = ParseSubscript(node);
            else if (Current.IsOp("(")) node = new CallExpr(node, ParseCallArgs(), line);
            else return node;
        }
    }

    private Expr ParseFilterExpr(Expr node)
    {
        while (true)
        {
            var line = Current.Line;
            if (Current.IsOp("|")) node = ParseFilter(node);
            else if (Current.IsName("is")) node = ParseTest(node);
            else if (Current.IsOp("(")) node = new CallExpr(node, ParseCallArgs(), line);
            else return node;
        }
    }

    private Expr ParseSubscript(Expr node)
    {
        var t = Next();
        if (t.Text == ".")
        {
            var attr = Next();
            if (attr.Kind == TokenKind.Name) return new GetAttrExpr(node, attr.Text, t.Line);
            if (attr.Kind == TokenKind.Integer) return new GetItemExpr(node, new ConstExpr(attr.Value!, attr.Line), t.Line);
            throw Fail("expected name or number", attr.Line);
        }
        var args = new List<Expr>();
        while (!Current.IsOp("]"))
        {
            if (args.Count > 0) ExpectOp(",");
            args.Add(ParseSubscribed(node));
        }
        ExpectOp("]");
        if (args.Count == 1) return args[0] is SliceExpr s ? s : new GetItemExpr(node, args[0], t.Line);
        return new GetItemExpr(node, new ListExpr(args, true, t.Line), t.Line);
    }

    /// <summary>One subscript: an expression, or a slice start:stop:step (returned as a SliceExpr on node).</summary>
    private Expr ParseSubscribed(Expr node)
    {
        var line = Current.Line;
        Expr? start = null;
        if (Current.IsOp(":")) Next();
        else
        {
            var expr = ParseExpression();
            if (!Current.IsOp(":")) return expr;
            Next();
            start = expr;
        }
        Expr? stop = null, step = null;
        if (!Current.IsOp("]") && !Current.IsOp(",") && !Current.IsOp(":")) stop = ParseExpression();
        if (Current.IsOp(":"))
        {
            Next();
            if (!Current.IsOp("]") && !Current.IsOp(",")) step = ParseExpression();
        }
        return new SliceExpr(node, start, stop, step, line);
    }

    private CallArgs ParseCallArgs()
    {
        ExpectOp("(");
        var positional = new List<Expr>();
        var keyword = new List<(string, Expr)>();
        var first = true;
        while (!Current.IsOp(")"))
        {
            if (!first) ExpectOp(",");
            first = false;
            if (Current.IsOp(")")) break;
            if (Current.IsOp("*") || Current.IsOp("**")) throw Fail("*args and **kwargs in calls are not supported");
            if (Current.Kind == TokenKind.Name && Peek().IsOp("="))
            {
                var name = Next().Text;
                Next();
                keyword.Add((name, ParseExpression()));
            }
            else
            {
                if (keyword.Count > 0) throw Fail("invalid syntax for function call expression");
                positional.Add(ParseExpression());
            }
        }
        Next();
        return new CallArgs(positional, keyword);
    }

    private Expr ParseFilter(Expr? input, bool startsWithPipe = true)
    {
        if (startsWithPipe) ExpectOp("|");
        var t = Current;
        if (t.Kind != TokenKind.Name) throw Fail($"expected token 'name', got '{t.Describe()}'");
        Next();
        var args = Current.IsOp("(") ? ParseCallArgs() : CallArgs.None;
        return new FilterExpr(input, t.Text, args, t.Line);
    }

    private Expr ParseTest(Expr input)
    {
        var line = Next().Line;
        var negated = false;
        if (Current.IsName("not")) { Next(); negated = true; }
        var t = Current;
        if (t.Kind != TokenKind.Name) throw Fail($"expected token 'name', got '{t.Describe()}'");
        Next();
        CallArgs args;
        var c = Current;
        if (c.IsOp("(")) args = ParseCallArgs();
        else if ((c.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float
                  || c.IsOp("[") || c.IsOp("{")) && !(c.IsName("else") || c.IsName("or") || c.IsName("and")))
        {
            if (c.IsName("is")) throw Fail("You cannot chain multiple tests with is");
            args = new CallArgs([ParsePostfix(ParsePrimary())], []);
        }
        else args = CallArgs.None;
        Expr test = new TestExpr(input, t.Text, args, line);
        return negated ? new NotExpr(test, line) : test;
    }
}
