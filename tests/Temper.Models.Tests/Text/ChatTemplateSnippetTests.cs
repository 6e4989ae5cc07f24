// Small templates, one feature each (whitespace control, loops, scoping, macros, filters, tests,
// methods, slices, undefined values, errors), compared with what Python Jinja2 renders or raises.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Tests.Text;

public class ChatTemplateSnippetTests
{
    public static TheoryData<string> Snippets => TemplateExpectations.Names("snippets");

    [Theory]
    [MemberData(nameof(Snippets))]
    public void BehavesLikeJinja(string name)
    {
        var s = TemplateExpectations.Snippet(name);
        var source = s["source"]!.GetValue<string>();
        var vars = TemplateExpectations.Variables(s["vars"]);
        var messages = vars.Remove("messages", out var m) ? m!.AsArray() : [];

        if (s["error_line"] is { } line)
        {
            var e = Assert.Throws<TemperException>(() => ChatTemplate.Parse(source, name));
            Assert.Equal($"{name}:{line.GetValue<int>()}: {s["error"]!.GetValue<string>()}", e.Message);
            return;
        }
        var template = ChatTemplate.Parse(source, name);
        if (s["error"] is { } error)
        {
            var e = Assert.Throws<TemperException>(() => template.Render(messages, extra: vars));
            Assert.EndsWith(": " + error.GetValue<string>(), e.Message);
            return;
        }
        Assert.Equal(s["expected"]!.GetValue<string>(), template.Render(messages, extra: vars));
    }
}
