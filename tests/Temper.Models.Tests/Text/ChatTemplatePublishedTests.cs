// The published chat templates of SmolLM2, Qwen2.5 (with tools), Llama 3.2 (tools, date_string) and
// Mistral v0.3 (tool calls, role-alternation errors) render exactly what Python Jinja2 renders.
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Tests.Text;

public class ChatTemplatePublishedTests
{
    public static TheoryData<string> Cases => TemplateExpectations.Names("cases");

    [Theory]
    [MemberData(nameof(Cases))]
    public void RendersLikeJinja(string name)
    {
        var c = TemplateExpectations.Case(name);
        var template = TemplateExpectations.LoadTemplate(c["template"]!.GetValue<string>());
        var messages = c["messages"]!.DeepClone().AsArray();
        var tools = c["tools"]?.DeepClone().AsArray();
        var extra = TemplateExpectations.Variables(c["extra"]);
        var addGenerationPrompt = c["add_generation_prompt"]!.GetValue<bool>();

        if (c["error"] is { } error)
        {
            var e = Assert.Throws<TemperException>(() => template.Render(messages, addGenerationPrompt, tools, extra));
            Assert.Equal($"{c["template"]}: {error.GetValue<string>()}", e.Message);
            return;
        }
        Assert.Equal(c["expected"]!.GetValue<string>(), template.Render(messages, addGenerationPrompt, tools, extra));
    }

    [Fact]
    public void MistralRaisesWhenRolesDoNotAlternate()
    {
        var template = TemplateExpectations.LoadTemplate("mistral-v0.3.jinja");
        var messages = new JsonArray(
            new JsonObject { ["role"] = "user", ["content"] = "Hi" },
            new JsonObject { ["role"] = "user", ["content"] = "Hello?" });
        var e = Assert.Throws<TemperException>(() => template.Render(messages, addGenerationPrompt: true));
        Assert.Equal("mistral-v0.3.jinja: After the optional system message, conversation roles must alternate " +
                     "user/assistant/user/assistant/...", e.Message);
    }

    [Fact]
    public void LlamaUsesStrftimeNowWithoutDateString()
    {
        var template = TemplateExpectations.LoadTemplate("llama3.2.jinja");
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Hi" });
        var before = DateTime.Now;
        var text = template.Render(messages, addGenerationPrompt: true);
        var after = DateTime.Now;
        var dates = new[] { before, after }.Select(d => "Today Date: " + d.ToString("dd MMM yyyy", System.Globalization.CultureInfo.InvariantCulture));
        Assert.Contains(dates, text.Contains);
    }
}
