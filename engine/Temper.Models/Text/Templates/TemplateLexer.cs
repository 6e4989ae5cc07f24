// Splits template source into tokens the way Jinja's lexer does under transformers' settings:
// trim_blocks (drop the newline after %} and #}), lstrip_blocks (drop spaces before {% and {# on their
// line), "-" and "+" whitespace control, {# comments #}, {% raw %}, and no trailing newline.
using System.Globalization;
using System.Text;

namespace Temper.Models.Text;

internal enum TokenKind { Data, BlockBegin, BlockEnd, VariableBegin, VariableEnd, Name, String, Integer, Float, Operator, Eof }

internal readonly record struct TemplateToken(TokenKind Kind, string Text, int Line, TemplateValue? Value = null)
{
    public bool IsName(string name) => Kind == TokenKind.Name && Text == name;
    public bool IsOp(string op) => Kind == TokenKind.Operator && Text == op;

    /// <summary>How Jinja names the token in "unexpected ..." messages.</summary>
    public string Describe() => Kind switch
    {
        TokenKind.BlockEnd => "end of statement block",
        TokenKind.VariableEnd => "end of print statement",
        TokenKind.BlockBegin => "begin of statement block",
        TokenKind.VariableBegin => "begin of print statement",
        TokenKind.Eof => "end of template",
        TokenKind.Data => "template data",
        TokenKind.Integer => "integer",
        TokenKind.Float => "float",
        TokenKind.String => "string",
        _ => Text,
    };
}

internal sealed class TemplateLexer
{
    private static readonly string[] Operators =
        ["//", "**", "==", "!=", "<=", ">=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")", "{", "}",
         "<", ">", "=", ".", ":", "|", ",", ";"];

    private readonly string _src;
    private readonly List<TemplateToken> _tokens = [];
    private int _pos;
    private int _line = 1;

    private TemplateLexer(string source)
    {
        var normalized = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (normalized.EndsWith('\n')) normalized = normalized[..^1];   // keep_trailing_newline=False
        _src = normalized;
    }

    public static List<TemplateToken> Tokenize(string source)
    {
        var lexer = new TemplateLexer(source);
        lexer.Run();
        return lexer._tokens;
    }

    private void Run()
    {
        var lineStarting = true;
        while (_pos < _src.Length)
        {
            var tagAt = FindTagStart(_pos);
            if (tagAt < 0)
            {
                Emit(TokenKind.Data, _src[_pos..]);
                Advance(_src.Length - _pos);
                break;
            }
            var kind = _src[tagAt + 1];
            var sign = tagAt + 2 < _src.Length && _src[tagAt + 2] is '-' or '+' ? _src[tagAt + 2] : '\0';
            var text = StripBefore(_src[_pos..tagAt], sign, kind != '{', lineStarting);
            if (text.Length > 0) Emit(TokenKind.Data, text);
            Advance(tagAt - _pos);

            var tagLine = _line;
            if (kind == '%' && TryRawBlock(sign)) { lineStarting = _pos > 0 && _src[_pos - 1] == '\n'; continue; }
            Advance(sign == '\0' ? 2 : 3);
            if (kind == '#') SkipComment(tagLine);
            else TokenizeTag(kind == '%', tagLine);
            lineStarting = _pos > 0 && _src[_pos - 1] == '\n';
        }
        // Like Jinja, the end of the template reports the line of the last token.
        _tokens.Add(new(TokenKind.Eof, "", _tokens.Count > 0 ? _tokens[^1].Line : 1));
    }

    private int FindTagStart(int from)
    {
        for (var i = _src.IndexOf('{', from); i >= 0 && i + 1 < _src.Length; i = _src.IndexOf('{', i + 1))
            if (_src[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>Whitespace control on the text before a tag: "-" strips it all, lstrip_blocks the indent.</summary>
    private static string StripBefore(string text, char sign, bool lstrip, bool lineStarting)
    {
        if (sign == '-')
        {
            var end = text.Length;
            while (end > 0 && PythonRepr.IsSpace(text[end - 1])) end--;
            return text[..end];
        }
        if (sign == '+' || !lstrip) return text;
        var lineStart = text.LastIndexOf('\n') + 1;
        if (lineStart == 0 && !lineStarting) return text;
        if (lineStart == text.Length) return text;
        for (var i = lineStart; i < text.Length; i++)
            if (!PythonRepr.IsSpace(text[i])) return text;
        return text[..lineStart];
    }

    private void SkipComment(int startLine)
    {
        for (var i = _pos; i + 1 < _src.Length; i++)
        {
            if (_src[i] is '-' or '+' && i + 2 < _src.Length && _src[i + 1] == '#' && _src[i + 2] == '}')
            {
                Advance(i + 3 - _pos);
                if (_src[i] == '-') SkipWhitespace();
                return;
            }
            if (_src[i] == '#' && _src[i + 1] == '}')
            {
                Advance(i + 2 - _pos);
                if (_pos < _src.Length && _src[_pos] == '\n') Advance(1);
                return;
            }
        }
        throw new TemplateSyntaxError("Missing end of comment tag", startLine);
    }

    /// <summary>{% raw %}...{% endraw %}: everything between is data.</summary>
    private bool TryRawBlock(char sign)
    {
        var i = _pos + 2 + (sign == '\0' ? 0 : 1);
        while (i < _src.Length && PythonRepr.IsSpace(_src[i])) i++;
        if (string.CompareOrdinal(_src, i, "raw", 0, 3) != 0) return false;
        i += 3;
        while (i < _src.Length && PythonRepr.IsSpace(_src[i])) i++;
        bool trimAfter;
        if (string.CompareOrdinal(_src, i, "-%}", 0, 3) == 0) { i += 3; trimAfter = true; }
        else if (string.CompareOrdinal(_src, i, "%}", 0, 2) == 0) { i += 2; trimAfter = false; }
        else return false;
        var startLine = _line;
        Advance(i - _pos);
        if (trimAfter) SkipWhitespace();

        for (var j = FindTagStart(_pos); j >= 0; j = FindTagStart(j + 1))
        {
            if (_src[j + 1] != '%') continue;
            var k = j + 2;
            var endSign = k < _src.Length && _src[k] is '-' or '+' ? _src[k] : '\0';
            if (endSign != '\0') k++;
            while (k < _src.Length && PythonRepr.IsSpace(_src[k])) k++;
            if (string.CompareOrdinal(_src, k, "endraw", 0, 6) != 0) continue;
            k += 6;
            while (k < _src.Length && PythonRepr.IsSpace(_src[k])) k++;
            int close;
            if (string.CompareOrdinal(_src, k, "+%}", 0, 3) == 0) close = 0;
            else if (string.CompareOrdinal(_src, k, "-%}", 0, 3) == 0) close = 1;
            else if (string.CompareOrdinal(_src, k, "%}", 0, 2) == 0) close = 2;
            else continue;
            var text = StripBefore(_src[_pos..j], endSign, true, false);
            if (text.Length > 0) Emit(TokenKind.Data, text);
            Advance(k + (close == 2 ? 2 : 3) - _pos);
            if (close == 1) SkipWhitespace();
            else if (close == 2 && _pos < _src.Length && _src[_pos] == '\n') Advance(1);
            return true;
        }
        throw new TemplateSyntaxError("Missing end of raw directive", startLine);
    }

    private void TokenizeTag(bool block, int startLine)
    {
        Emit(block ? TokenKind.BlockBegin : TokenKind.VariableBegin, block ? "{%" : "{{", startLine);
        var brackets = new Stack<char>();
        while (true)
        {
            SkipWhitespace();
            if (_pos >= _src.Length)
                throw new TemplateSyntaxError($"unexpected end of template, expected '{(block ? "%}" : "}}")}'", _line);
            if (brackets.Count == 0 && TryTagEnd(block)) return;

            var c = _src[_pos];
            if (char.IsAsciiDigit(c)) { LexNumber(); continue; }
            if (char.IsLetter(c) || c == '_')
            {
                var start = _pos;
                while (_pos < _src.Length && (char.IsLetterOrDigit(_src[_pos]) || _src[_pos] == '_')) _pos++;
                _tokens.Add(new(TokenKind.Name, _src[start.._pos], _line));
                continue;
            }
            if (c is '\'' or '"') { LexString(c); continue; }

            var op = Operators.FirstOrDefault(o => string.CompareOrdinal(_src, _pos, o, 0, o.Length) == 0)
                ?? throw new TemplateSyntaxError($"unexpected char '{c}' at {_pos}", _line);
            if (op is "(" or "[" or "{") brackets.Push(op[0]);
            else if (op is ")" or "]" or "}")
            {
                var expected = op switch { ")" => '(', "]" => '[', _ => '{' };
                if (brackets.Count == 0) throw new TemplateSyntaxError($"unexpected '{op}'", _line);
                var open = brackets.Pop();
                if (open != expected)
                    throw new TemplateSyntaxError($"unexpected '{op}', expected '{Closer(open)}'", _line);
            }
            _tokens.Add(new(TokenKind.Operator, op, _line));
            _pos += op.Length;
        }
    }

    private static char Closer(char open) => open switch { '(' => ')', '[' => ']', _ => '}' };

    private bool TryTagEnd(bool block)
    {
        var end = block ? "%}" : "}}";
        if (block && string.CompareOrdinal(_src, _pos, "+" + end, 0, 3) == 0)
        {
            _tokens.Add(new(TokenKind.BlockEnd, end, _line));
            Advance(3);
            return true;
        }
        if (string.CompareOrdinal(_src, _pos, "-" + end, 0, 3) == 0)
        {
            _tokens.Add(new(block ? TokenKind.BlockEnd : TokenKind.VariableEnd, end, _line));
            Advance(3);
            SkipWhitespace();
            return true;
        }
        if (string.CompareOrdinal(_src, _pos, end, 0, 2) == 0)
        {
            _tokens.Add(new(block ? TokenKind.BlockEnd : TokenKind.VariableEnd, end, _line));
            Advance(2);
            if (block && _pos < _src.Length && _src[_pos] == '\n') Advance(1);   // trim_blocks
            return true;
        }
        return false;
    }

    private void LexNumber()
    {
        var start = _pos;
        SkipDigits();
        var isFloat = false;
        if (_pos + 1 < _src.Length && _src[_pos] == '.' && char.IsAsciiDigit(_src[_pos + 1]))
        {
            isFloat = true;
            _pos++;
            SkipDigits();
        }
        if (_pos < _src.Length && _src[_pos] is 'e' or 'E')
        {
            var save = _pos;
            _pos++;
            if (_pos < _src.Length && _src[_pos] is '+' or '-') _pos++;
            if (_pos < _src.Length && char.IsAsciiDigit(_src[_pos])) { isFloat = true; SkipDigits(); }
            else _pos = save;
        }
        var text = _src[start.._pos].Replace("_", "", StringComparison.Ordinal);
        if (isFloat)
        {
            _tokens.Add(new(TokenKind.Float, text, _line,
                TemplateValue.Float(double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture))));
        }
        else
        {
            if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
                throw new TemplateSyntaxError($"integer literal {text} is too large", _line);
            _tokens.Add(new(TokenKind.Integer, text, _line, TemplateValue.Int(value)));
        }
    }

    private void SkipDigits()
    {
        while (_pos < _src.Length && (char.IsAsciiDigit(_src[_pos]) ||
               (_src[_pos] == '_' && _pos + 1 < _src.Length && char.IsAsciiDigit(_src[_pos + 1]))))
            _pos++;
    }

    private void LexString(char quote)
    {
        var startLine = _line;
        var start = _pos;
        var i = _pos + 1;
        while (i < _src.Length && _src[i] != quote)
            i += _src[i] == '\\' ? 2 : 1;
        if (i >= _src.Length) throw new TemplateSyntaxError($"unexpected char {PythonRepr.StringRepr(quote.ToString())} at {start}", startLine);
        var raw = _src[(start + 1)..i];
        Advance(i + 1 - _pos);
        _tokens.Add(new(TokenKind.String, raw, startLine, TemplateValue.String(Unescape(raw, startLine))));
    }

    /// <summary>Python's "unicode-escape" decoding, which Jinja applies to string literals.</summary>
    private static string Unescape(string raw, int line)
    {
        if (!raw.Contains('\\')) return raw;
        var sb = new StringBuilder(raw.Length);
        for (var i = 0; i < raw.Length; i++)
        {
            var c = raw[i];
            if (c != '\\' || i + 1 >= raw.Length) { sb.Append(c); continue; }
            var e = raw[++i];
            switch (e)
            {
                case '\n': break;
                case '\\': sb.Append('\\'); break;
                case '\'': sb.Append('\''); break;
                case '"': sb.Append('"'); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'v': sb.Append('\v'); break;
                case 'x': sb.Append(HexEscape(raw, ref i, 2, line)); break;
                case 'u': sb.Append(HexEscape(raw, ref i, 4, line)); break;
                case 'U': sb.Append(HexEscape(raw, ref i, 8, line)); break;
                case >= '0' and <= '7':
                    var value = 0;
                    var n = 0;
                    for (; n < 3 && i < raw.Length && raw[i] is >= '0' and <= '7'; n++, i++) value = value * 8 + (raw[i] - '0');
                    i--;
                    sb.Append((char)value);
                    break;
                default: sb.Append('\\').Append(e); break;
            }
        }
        return sb.ToString();
    }

    /// <summary>\\xXX, \\uXXXX or \\UXXXXXXXX; a lone surrogate stays one (Python strings may hold them).</summary>
    private static string HexEscape(string raw, ref int i, int digits, int line)
    {
        var truncated = $"truncated \\{raw[i]}{new string('X', digits)} escape";
        if (i + digits >= raw.Length) throw new TemplateSyntaxError(truncated, line);
        var hex = raw.Substring(i + 1, digits);
        if (!hex.All(char.IsAsciiHexDigit) || !int.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var cp))
            throw new TemplateSyntaxError(truncated, line);
        i += digits;
        if (cp is >= 0xD800 and <= 0xDFFF) return ((char)cp).ToString();
        return cp <= 0x10FFFF ? char.ConvertFromUtf32(cp) : throw new TemplateSyntaxError("illegal Unicode character", line);
    }

    private void SkipWhitespace()
    {
        var start = _pos;
        while (_pos < _src.Length && PythonRepr.IsSpace(_src[_pos])) _pos++;
        CountLines(start, _pos);
    }

    private void Advance(int n)
    {
        CountLines(_pos, _pos + n);
        _pos += n;
    }

    private void CountLines(int from, int to)
    {
        for (var i = from; i < to; i++)
            if (_src[i] == '\n') _line++;
    }

    private void Emit(TokenKind kind, string text, int? line = null) => _tokens.Add(new(kind, text, line ?? _line));
}
