// Errors raised while a template is parsed or rendered, before ChatTemplate turns them into a
// one-line TemperException naming the template file and line.
namespace Temper.Models.Text;

/// <summary>A problem rendering a template (a Python TypeError, UndefinedError and the like).</summary>
internal class TemplateError : Exception
{
    public TemplateError(string message) : base(message) { }
    public TemplateError() { }
    public TemplateError(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A syntax error at a known line of the template source.</summary>
internal sealed class TemplateSyntaxError : TemplateError
{
    public int Line { get; }
    public TemplateSyntaxError(string message, int line) : base(message) => Line = line;
    public TemplateSyntaxError() { }
    public TemplateSyntaxError(string message) : base(message) { }
    public TemplateSyntaxError(string message, Exception inner) : base(message, inner) { }
}

/// <summary>The template called raise_exception(message).</summary>
internal sealed class TemplateRaisedError : TemplateError
{
    public TemplateRaisedError(string message) : base(message) { }
    public TemplateRaisedError() { }
    public TemplateRaisedError(string message, Exception inner) : base(message, inner) { }
}
