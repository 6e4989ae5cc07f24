// SftDataset: the fixture references (made by transformers), every TRL form against labels computed
// here from the template's pieces, truncation modes, bad lines named by file and line.
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;
using Temper.Training.Data;

namespace Temper.Tests.Data;

public sealed class SftDatasetTests : IDisposable
{
    private const int No = SftExample.IgnoreIndex;
    private static readonly Lazy<HfTokenizer> LlamaTok = new(() => HfTokenizer.Load(Fixtures.Hf("llama-tiny")));
    private static readonly Lazy<ChatTemplate> LlamaTpl = new(() => ChatTemplate.LoadFromModelDir(Fixtures.Hf("llama-tiny"))!);
    private readonly TempJsonl _files = new();

    public void Dispose() => _files.Dispose();

    private static HfTokenizer Tok => LlamaTok.Value;
    private static int Eos => Tok.EosId!.Value;

    private SftDataset Load(SftDataOptions? o, params string[] lines) => SftDataset.Load(_files.Write(lines), Tok, LlamaTpl.Value, o ?? new());

    // Ids and labels built piece by piece: (text, learned?) pairs encoded one at a time.
    private static (int[] Ids, int[] Labels) Pieces(params (string Text, bool Learned)[] pieces)
    {
        List<int> ids = [], labels = [];
        foreach (var (text, learned) in pieces)
        {
            var p = Tok.Encode(text);
            ids.AddRange(p);
            labels.AddRange(learned ? p : p.Select(_ => No));
        }
        return ([.. ids], [.. labels]);
    }

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void ReproducesTrainerReference(string model)
    {
        var dir = Fixtures.Hf(model);
        var ds = SftDataset.Load(Path.Combine(dir, "trainer", "sft.jsonl"), HfTokenizer.Load(dir), ChatTemplate.LoadFromModelDir(dir), new());
        var sft = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "trainer", "trainer_reference.json")))!["sft"]!;
        Assert.Equal(sft["first_example_ids"]!.AsArray().Select(n => (int)n!), ds.Examples[0].Ids);
        Assert.Equal(sft["first_example_labels"]!.AsArray().Select(n => (int)n!), ds.Examples[0].Labels);
        Assert.Equal((int)sft["examples"]!, ds.Examples.Count);
        // For qwen2-tiny this holds because HfTokenizer follows transformers 5's Qwen2 pipeline (digits one
        // by one) rather than tokenizer.json's plain ByteLevel, under which "104" would be two tokens.
        Assert.Equal(sft["per_example_label_tokens"]!.AsArray().Select(n => (int)n!), ds.Examples.Select(e => e.Labels.Count(l => l != No)));
        Assert.Equal((int)sft["label_tokens"]!, ds.LabelTokenCount);
        Assert.Equal(Enumerable.Range(1, 6), ds.Examples.Select(e => e.SourceLine));
    }

    [Fact]
    public void MessagesLabelEachAssistantTurn()
    {
        var ds = Load(null, """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye?"}, {"role": "assistant", "content": "See you"}]}""");
        var (ids, labels) = Pieces(
            ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", false),
            ("Hello<|im_end|>\n", true),
            ("<|im_start|>user\nBye?<|im_end|>\n<|im_start|>assistant\n", false),
            ("See you<|im_end|>\n", true));
        Assert.Equal(ids, ds.Examples[0].Ids);
        Assert.Equal(labels, ds.Examples[0].Labels);
        Assert.Equal(labels.Count(l => l != No), ds.LabelTokenCount);
    }

    // TRL's assistant_only_loss=False and completion_only_loss=False: every token a label, the ids unchanged.
    [Fact]
    public void AllTokenLossOptionsLabelEveryToken()
    {
        const string chat = """{"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]}""";
        const string pc = """{"prompt": "What is 2+3?\n", "completion": "Answer: 5"}""";
        var only = Load(null, chat, pc).Examples;
        var all = Load(new(AssistantOnlyLoss: false, CompletionOnlyLoss: false), chat, pc).Examples;
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(only[i].Ids, all[i].Ids);
            Assert.Equal(all[i].Ids, all[i].Labels);
            Assert.Contains(No, only[i].Labels);
        }
        // Each option governs its own form only.
        var mixed = Load(new(AssistantOnlyLoss: false), chat, pc).Examples;
        Assert.Equal(mixed[0].Ids, mixed[0].Labels);
        Assert.Equal(only[1].Labels, mixed[1].Labels);
    }

    [Fact]
    public void PromptCompletionTextLabelsCompletionAndEos()
    {
        var ds = Load(null, """{"prompt": "What is 2+3?\n", "completion": "Answer: 5"}""");
        var (ids, labels) = Pieces(("What is 2+3?\n", false), ("Answer: 5<|im_end|>", true));
        Assert.Equal(Eos, ids[^1]);
        Assert.Equal(ids, ds.Examples[0].Ids);
        Assert.Equal(labels, ds.Examples[0].Labels);
    }

    [Fact]
    public void PromptCompletionConversationalLabelsWhatCompletionAdds()
    {
        var ds = Load(null, """{"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Yo there"}]}""");
        var (ids, labels) = Pieces(("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", false), ("Yo there<|im_end|>\n", true));
        Assert.Equal(ids, ds.Examples[0].Ids);
        Assert.Equal(labels, ds.Examples[0].Labels);
    }

    [Fact]
    public void TextLabelsEveryTokenAndAppendsEos()
    {
        var ds = Load(null, """{"text": "the sum of the list"}""", """{"text": "ends with eos<|im_end|>"}""");
        int[] expected = [.. Tok.Encode("the sum of the list"), Eos];
        Assert.Equal(expected, ds.Examples[0].Ids);
        Assert.Equal(expected, ds.Examples[0].Labels);
        Assert.Equal(Tok.Encode("ends with eos<|im_end|>"), ds.Examples[1].Ids); // no second EOS
        Assert.Equal(expected.Length - 1 + ds.Examples[1].Length - 1, ds.LabelTokenCount); // position 0 is never predicted
    }

    [Fact]
    public void ReportCountsLinesAndHashesTheBytes()
    {
        var path = _files.Write("""{"text": "a b c"}""", "", "  ", """{"text": "d e f"}""");
        var ds = SftDataset.Load(path, Tok, null, new());
        Assert.Equal(2, ds.LineCount);
        Assert.Equal([1, 4], ds.Examples.Select(e => e.SourceLine));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path))), ds.Sha256);
    }

    private const string Short = """{"text": "a"}""";
    private const string Long = """{"text": "the list of the sorted values of the file"}""";

    [Fact]
    public void TruncateRightKeepsTheStart()
    {
        var full = Load(null, Long).Examples[0];
        var ds = Load(new(MaxLength: 5), Short, Long);
        Assert.Equal((1, 0, 2), (ds.TruncatedCount, ds.DroppedCount, ds.Examples.Count));
        Assert.Equal(full.Ids[..5], ds.Examples[1].Ids);
        Assert.Equal(full.Labels[..5], ds.Examples[1].Labels);
    }

    [Fact]
    public void TruncateLeftKeepsTheEnd()
    {
        var full = Load(null, Long).Examples[0];
        var ds = Load(new(MaxLength: 5, Truncation: Truncation.Left), Short, Long);
        Assert.Equal((1, 0, 2), (ds.TruncatedCount, ds.DroppedCount, ds.Examples.Count));
        Assert.Equal(full.Ids[^5..], ds.Examples[1].Ids);
        Assert.Equal(Eos, ds.Examples[1].Ids[^1]);
    }

    [Fact]
    public void TruncateDropSkipsLongExamples()
    {
        var ds = Load(new(MaxLength: 5, Truncation: Truncation.Drop), Short, Long, Long);
        Assert.Equal((0, 2, 1, 3), (ds.TruncatedCount, ds.DroppedCount, ds.Examples.Count, ds.LineCount));
        Assert.Equal(1, ds.Examples[0].SourceLine);
    }

    [Fact]
    public void TruncateErrorNamesFileAndLine()
    {
        var path = _files.Write(Short, Long);
        var e = Assert.Throws<TemperException>(() => SftDataset.Load(path, Tok, null, new(MaxLength: 5, Truncation: Truncation.Error, SkipBadLines: true)));
        Assert.StartsWith($"{path}:2: example has {Load(null, Long).Examples[0].Length} tokens, more than the max length 5", e.Message);
    }

    [Fact]
    public void TruncationThatCutsEveryLabelDropsTheExample()
    {
        // The system and user turns alone are longer than 8 tokens: right truncation leaves no label.
        var ds = Load(new(MaxLength: 8), """{"messages": [{"role": "system", "content": "Answer with the key of the list."}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}""");
        Assert.Equal((1, 1, 0), (ds.TruncatedCount, ds.DroppedCount, ds.Examples.Count));
    }

    public static TheoryData<string, string> BadLines => new()
    {
        { "this is not json", "not valid JSON" },
        { "[1, 2]", "not a JSON object" },
        { """{"input": "x", "output": "y"}""", "no \"messages\", \"prompt\"+\"completion\" or \"text\" field (found: input, output)" },
        { """{"prompt": "x"}""", "\"prompt\" without \"completion\"" },
        { """{"prompt": "x", "completion": [{"role": "assistant", "content": "y"}]}""", "must both be strings or both be lists of messages" },
        { """{"messages": "hi"}""", "\"messages\" is not a list of messages" },
        { """{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}""", "messages[0]: unknown role 'robot'" },
        { """{"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]}""", "messages[0] (user): content is not a string" },
        { """{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}""", "messages[0] (user): content is not a string" },
        { """{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}""", "messages[1]: empty assistant turn" },
        { """{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "x"}]}""", "no assistant message" },
        { """{"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "assistant", "content": ""}]}""", "completion[0]: empty assistant turn" },
        { """{"text": 5}""", "\"text\" is not a string" },
        { """{"text": ""}""", "empty \"text\"" },
        { """{"prompt": "x", "completion": ""}""", "empty completion" },
    };

    [Theory]
    [MemberData(nameof(BadLines))]
    public void BadLineNamesFileLineAndCause(string line, string cause)
    {
        var path = _files.Write(Short, "", line, Short);
        var e = Assert.Throws<TemperException>(() => SftDataset.Load(path, Tok, LlamaTpl.Value, new()));
        Assert.StartsWith($"{path}:3: ", e.Message);
        Assert.Contains(cause, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void SkipBadLinesCountsThem()
    {
        var ds = Load(new(SkipBadLines: true), Short, "nope", "", """{"foo": 1}""", Short, """{"messages": []}""", Long);
        Assert.Equal((3, 3, 6), (ds.SkippedBadLines, ds.Examples.Count, ds.LineCount));
        Assert.Equal([1, 5, 7], ds.Examples.Select(e => e.SourceLine));
    }

    [Fact]
    public void MissingFileIsNamed()
    {
        var path = Path.Combine(_files.Dir, "absent.jsonl");
        var e = Assert.Throws<TemperException>(() => SftDataset.Load(path, Tok, null, new()));
        Assert.Equal($"{path}: data file not found", e.Message);
    }

    [Fact]
    public void ConversationWithoutTemplateIsAnError()
    {
        var path = _files.Write("""{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}""");
        var e = Assert.Throws<TemperException>(() => SftDataset.Load(path, Tok, null, new()));
        Assert.Equal($"{path}:1: a conversational example needs a chat template and the model has none", e.Message);
    }

    [Fact]
    public void TemplateThatIsNotPrefixStableIsAnError()
    {
        // The generation prompt says "bot" but the assistant turn is rendered as "assistant".
        var tpl = ChatTemplate.Parse("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>bot\n{% endif %}");
        var path = _files.Write("""{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}""");
        var e = Assert.Throws<TemperException>(() => SftDataset.Load(path, Tok, tpl, new()));
        Assert.Equal($"{path}:1: the tokens of messages[:1] rendered with the generation prompt are not a prefix of the whole example's tokens (the chat template does not render prefix-stably)", e.Message);
    }

    [Fact]
    public void PromptWhoseLastTokenMergesIntoTheCompletionIsAnError()
    {
        const string prompt = "What is 1+1? It is ", completion = "2"; // " 2" is one token, " " alone another
        Assert.NotEqual(Tok.Encode(prompt), Tok.Encode(prompt + completion).Take(Tok.Encode(prompt).Count));
        var path = _files.Write($$"""{"prompt": "{{prompt}}", "completion": "{{completion}}"}""");
        var e = Assert.Throws<TemperException>(() => SftDataset.Load(path, Tok, null, new()));
        Assert.StartsWith($"{path}:1: the tokens of the prompt are not a prefix", e.Message);
    }

    [Fact]
    public void ToolsOfTheLineReachTheTemplate()
    {
        var tpl = ChatTemplate.Parse("{% if tools %}tools: {{ tools|length }}\n{% endif %}" + LlamaTpl.Value.Source);
        var path = _files.Write("""{"tools": [{"type": "function"}, {"type": "function"}], "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}""");
        var ex = SftDataset.Load(path, Tok, tpl, new()).Examples[0];
        var (ids, labels) = Pieces(("tools: 2\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n", false), ("y<|im_end|>\n", true));
        Assert.Equal(ids, ex.Ids);
        Assert.Equal(labels, ex.Labels);
    }

    // TRL's tool-calling conversations (OpenAI's tool_calls in an assistant message, content null) through Qwen2.5's
    // published template: the call and the final answer are learned, the tool's response is not.
    [Fact]
    public void ToolCallTurnsAreRenderedAndLearned()
    {
        var tpl = ChatTemplate.Parse(File.ReadAllText(Path.Combine(Fixtures.RepoRoot, "tests", "Temper.Models.Tests", "Text", "templates", "qwen2.5.jinja")));
        var path = _files.Write("""{"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}], "messages": [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}, {"role": "tool", "content": "18C"}, {"role": "assistant", "content": "It is 18C."}]}""");
        var ex = SftDataset.Load(path, Tok, tpl, new()).Examples[0];
        var runs = new List<string>();
        for (int i = 0; i < ex.Labels.Length; i++)
        {
            if (ex.Labels[i] == No) continue;
            int j = i;
            while (j < ex.Labels.Length && ex.Labels[j] != No) j++;
            runs.Add(Tok.Decode(ex.Ids[i..j]));
            i = j;
        }
        Assert.Equal(["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n", "It is 18C.<|im_end|>\n"], runs);
        Assert.Contains("<tool_response>\n18C\n</tool_response>", Tok.Decode(ex.Ids));

        foreach (var (bad, why) in new[]
        {
            ("""{"role": "assistant", "content": null}""", "content is not a string (it may be null in a message with tool_calls)"),
            ("""{"role": "assistant", "content": null, "tool_calls": {"name": "f"}}""", "\"tool_calls\" is not a list"),
            ("""{"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": {}}}]}""", "tool_calls[0] has no function name"),
            ("""{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}""", "arguments must be an object or a JSON string"),
        })
        {
            var badPath = _files.Write($$"""{"messages": [{"role": "user", "content": "x"}, {{bad}}]}""");
            var e = Assert.Throws<TemperException>(() => SftDataset.Load(badPath, Tok, tpl, new()));
            Assert.Contains(why, e.Message);
        }
    }

    [Fact]
    public void PackingOptionPacksTheExamples()
    {
        var ds = Load(new(MaxLength: 64, Packing: true), Short, Short, Long, Short);
        Assert.Single(ds.Examples);
        Assert.Equal([0, 0, 1, 1], ds.Examples[0].SegmentIds![..4]);
        Assert.Equal(4, ds.LineCount);
        Assert.Throws<TemperException>(() => Load(new(Packing: true), Short));
    }
}
