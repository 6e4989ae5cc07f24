// The shared fixture models' and tokenizers' chat templates render exactly the text in their
// reference.json (made by transformers), whether the template sits in chat_template.jinja or only
// inside tokenizer_config.json.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Tests.Text;

public sealed class ChatTemplateFixtureTests : IDisposable
{
    private readonly string _tempDir = Path.Combine(Path.GetTempPath(), "temper-tpl-" + Guid.NewGuid().ToString("N"));

    public static TheoryData<string> FixtureDirs => new()
    {
        Path.Combine("hf", "llama-tiny"), Path.Combine("hf", "qwen2-tiny"),
        Path.Combine("tokenizers", "tok-llama3"), Path.Combine("tokenizers", "tok-qwen2"),
    };

    public void Dispose()
    {
        if (Directory.Exists(_tempDir)) Directory.Delete(_tempDir, recursive: true);
    }

    [Theory]
    [MemberData(nameof(FixtureDirs))]
    public void RendersReferenceText(string fixture)
    {
        var dir = Path.Combine(Fixtures.Root, fixture);
        var template = ChatTemplate.LoadFromModelDir(dir);
        Assert.NotNull(template);
        Assert.Equal(Path.Combine(dir, "chat_template.jinja"), template.Origin);
        AssertRendersReference(template, dir);
    }

    [Theory]
    [MemberData(nameof(FixtureDirs))]
    public void TemplateInsideTokenizerConfigRendersTheSame(string fixture)
    {
        var dir = Path.Combine(Fixtures.Root, fixture);
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!;
        config["chat_template"] = File.ReadAllText(Path.Combine(dir, "chat_template.jinja"));
        Directory.CreateDirectory(_tempDir);
        File.WriteAllText(Path.Combine(_tempDir, "tokenizer_config.json"), config.ToJsonString());

        var template = ChatTemplate.LoadFromModelDir(_tempDir);
        Assert.NotNull(template);
        Assert.Equal(Path.Combine(_tempDir, "tokenizer_config.json"), template.Origin);
        AssertRendersReference(template, dir);
    }

    [Fact]
    public void NamedTemplateListTakesDefault()
    {
        var dir = Fixtures.Hf("qwen2-tiny");
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")))!;
        config["chat_template"] = new JsonArray(
            new JsonObject { ["name"] = "tool_use", ["template"] = "TOOLS" },
            new JsonObject { ["name"] = "default", ["template"] = File.ReadAllText(Path.Combine(dir, "chat_template.jinja")) });
        Directory.CreateDirectory(_tempDir);
        File.WriteAllText(Path.Combine(_tempDir, "tokenizer_config.json"), config.ToJsonString());

        AssertRendersReference(ChatTemplate.LoadFromModelDir(_tempDir)!, dir);
    }

    [Fact]
    public void SpecialTokensAcceptTheAddedTokenForm()
    {
        Directory.CreateDirectory(_tempDir);
        File.WriteAllText(Path.Combine(_tempDir, "tokenizer_config.json"), """
            {"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false},
             "eos_token": "</s>", "pad_token": null,
             "chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}[{{ pad_token }}]"}
            """);
        var template = ChatTemplate.LoadFromModelDir(_tempDir)!;
        Assert.Equal("<s>hi</s>[]", template.Render([new JsonObject { ["role"] = "user", ["content"] = "hi" }]));
        Assert.Equal("<s>hi<eos>[]", template.Render([new JsonObject { ["role"] = "user", ["content"] = "hi" }],
            extra: new Dictionary<string, JsonNode?> { ["eos_token"] = "<eos>" }));
    }

    [Fact]
    public void FolderWithoutTemplateGivesNull()
    {
        Directory.CreateDirectory(_tempDir);
        File.WriteAllText(Path.Combine(_tempDir, "tokenizer_config.json"), """{"eos_token": "</s>"}""");
        Assert.Null(ChatTemplate.LoadFromModelDir(_tempDir));
        Assert.Throws<TemperException>(() => ChatTemplate.LoadFromModelDir(Path.Combine(_tempDir, "missing")));
    }

    private static void AssertRendersReference(ChatTemplate template, string dir)
    {
        var reference = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!["chat_template"]!;
        var messages = reference["messages"]!.DeepClone().AsArray();
        var checkedAny = false;
        if (reference["text"] is { } text)
        {
            Assert.Equal(text.GetValue<string>(), template.Render(messages));
            checkedAny = true;
        }
        if (reference["text_with_generation_prompt"] is { } withPrompt)
        {
            // The prompt for the final reply: the conversation before it, with the generation prompt.
            var prompt = messages.DeepClone().AsArray();
            if (prompt[^1]!["role"]!.GetValue<string>() == "assistant") prompt.RemoveAt(prompt.Count - 1);
            Assert.Equal(withPrompt.GetValue<string>(), template.Render(prompt, addGenerationPrompt: true));
            checkedAny = true;
        }
        Assert.True(checkedAny, "reference.json has no rendered text");
    }
}
