// Values reach the template as Python's json.loads would make them, whether the JsonNode was parsed
// (JsonElement-backed) or built in C# (JsonValue.Create): 3 is an int, 1.0 a float, true True.
using System.Text.Json.Nodes;
using Temper.Models.Text;

namespace Temper.Tests.Text;

public class ChatTemplateValueTests
{
    private static readonly ChatTemplate Printer =
        ChatTemplate.Parse("{{ i }} {{ f }} {{ b }} {{ s }} {{ l }} {{ m }} {{ n }} {{ o }} {{ i is integer }} {{ f is float }}");

    [Fact]
    public void BuiltNodesConvertLikeJsonLoads()
    {
        var extra = new Dictionary<string, JsonNode?>
        {
            ["i"] = 3, ["f"] = 1.0, ["b"] = true, ["s"] = "x", ["l"] = 3L, ["m"] = 1.5m, ["n"] = null,
            ["o"] = new JsonObject { ["k"] = new JsonArray(1, 2.5f, "v") },
        };
        Assert.Equal("3 1.0 True x 3 1.5 None {'k': [1, 2.5, 'v']} True True", Printer.Render([], extra: extra));
    }

    [Fact]
    public void ParsedNodesConvertLikeJsonLoads()
    {
        var parsed = JsonNode.Parse("""{"i": 3, "f": 1.0, "b": true, "s": "x", "l": 3, "m": 1.5, "n": null, "o": {"k": [1, 2.5, "v"]}}""")!;
        var extra = parsed.AsObject().ToDictionary(p => p.Key, p => p.Value?.DeepClone());
        Assert.Equal("3 1.0 True x 3 1.5 None {'k': [1, 2.5, 'v']} True True", Printer.Render([], extra: extra));
    }

    [Fact]
    public void RenderDoesNotChangeItsInput()
    {
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" });
        var before = messages.ToJsonString();
        ChatTemplate.Parse("{% set messages = messages[1:] %}{% for m in messages %}{{ m }}{% endfor %}").Render(messages);
        Assert.Equal(before, messages.ToJsonString());
    }
}
