// Loads Text/templates/expected.json (written by make_expected.py with Python Jinja2 set up as
// transformers sets it up) and the published .jinja templates beside it, found from the repo root.
using System.Text.Json.Nodes;
using Temper.Models.Text;

namespace Temper.Tests.Text;

internal static class TemplateExpectations
{
    private static readonly Lazy<JsonObject> _expected = new(() =>
        (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(Folder, "expected.json")))!);

    public static string Folder => Path.Combine(Fixtures.RepoRoot, "tests", "Temper.Models.Tests", "Text", "templates");

    public static JsonObject Case(string name) => Find("cases", name);
    public static JsonObject Snippet(string name) => Find("snippets", name);

    public static TheoryData<string> Names(string section)
    {
        var data = new TheoryData<string>();
        foreach (var item in _expected.Value[section]!.AsArray()) data.Add(item!["name"]!.GetValue<string>());
        return data;
    }

    public static ChatTemplate LoadTemplate(string fileName) =>
        ChatTemplate.Parse(File.ReadAllText(Path.Combine(Folder, fileName)), fileName);

    /// <summary>The JSON object's entries as the extra variables Render takes.</summary>
    public static Dictionary<string, JsonNode?> Variables(JsonNode? vars)
    {
        var result = new Dictionary<string, JsonNode?>();
        if (vars is JsonObject obj)
            foreach (var (key, value) in obj) result[key] = value?.DeepClone();
        return result;
    }

    private static JsonObject Find(string section, string name) =>
        (JsonObject)_expected.Value[section]!.AsArray().First(c => c!["name"]!.GetValue<string>() == name)!;
}
