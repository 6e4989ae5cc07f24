// Errors name the template and line: syntax errors at parse time, raise_exception and runtime
// errors at render time.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Tests.Text;

public class ChatTemplateErrorTests
{
    [Fact]
    public void SyntaxErrorNamesOriginAndLine()
    {
        const string source = "{% for m in messages %}\n{{ m.role }}\n{{ m.content + }}\n{% endfor %}";
        var e = Assert.Throws<TemperException>(() => ChatTemplate.Parse(source, "chat_template.jinja"));
        Assert.Equal("chat_template.jinja:3: unexpected 'end of print statement'", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void UnclosedBlockNamesTheBlock()
    {
        var e = Assert.Throws<TemperException>(() => ChatTemplate.Parse("{% if x %}\n{% for a in b %}\nx", "t.jinja"));
        Assert.StartsWith("t.jinja:3: Unexpected end of template.", e.Message);
        Assert.Contains("'for'", e.Message);
    }

    [Fact]
    public void ParseWithoutOriginStillNamesLine()
    {
        var e = Assert.Throws<TemperException>(() => ChatTemplate.Parse("a\n\n{% break %}"));
        Assert.Equal("<chat template>:3: 'break' outside of a loop", e.Message);
    }

    [Fact]
    public void RaiseExceptionGivesItsMessage()
    {
        var template = ChatTemplate.Parse("{% if messages|length == 0 %}{{ raise_exception('No messages!') }}{% endif %}", "t.jinja");
        var e = Assert.Throws<TemperException>(() => template.Render([]));
        Assert.Equal("t.jinja: No messages!", e.Message);
    }

    [Fact]
    public void RuntimeErrorNamesLine()
    {
        var template = ChatTemplate.Parse("line one\n{% for m in messages %}\n{{ m.content + 1 }}\n{% endfor %}", "t.jinja");
        var e = Assert.Throws<TemperException>(() => template.Render([new JsonObject { ["role"] = "user", ["content"] = "x" }]));
        Assert.Equal("t.jinja:3: can only concatenate str (not \"int\") to str", e.Message);
    }
}
