// The reasoning parsers against vLLM's rules for whole texts (qwen3: both tags or all content; deepseek_r1:
// all reasoning until </think>, a leading <think> dropped), and streaming: every way of cutting a text into
// deltas (tags split across them included) gives, joined, the whole text's split; and the server answering
// with reasoning_content apart from content, whole and streamed, with the tags the tiny model's own greedy
// answer contains standing in for <think> and </think>; and the IChatClient giving TextReasoningContent.
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Http;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class ReasoningParserTests
{
    [Theory]
    [InlineData("qwen3", "<think>\nplan it\n</think>\n\nThe answer.", "\nplan it\n", "\n\nThe answer.")]
    [InlineData("qwen3", "No thinking here.", null, "No thinking here.")]
    [InlineData("qwen3", "<think>cut off before the end", null, "<think>cut off before the end")]
    [InlineData("qwen3", "<think>all thought</think>", "all thought", null)]
    [InlineData("deepseek_r1", "plan it\n</think>\n\nThe answer.", "plan it\n", "\n\nThe answer.")]
    [InlineData("deepseek_r1", "<think>\nplan</think>ok", "\nplan", "ok")]
    [InlineData("deepseek_r1", "still thinking", "still thinking", null)]
    public void Whole_texts_split_as_vllm_splits_them(string name, string text, string? reasoning, string? content)
    {
        Assert.Equal((reasoning, content), ReasoningParser.Create(name).Split(text));
    }

    [Theory]
    [InlineData("qwen3", "<think>\nplan <it> with </thin care\n</think>\n\nThe answer < 3.")]
    [InlineData("qwen3", "Just an answer, no <thinking> tags at all.")]
    [InlineData("deepseek_r1", "plan it\n</think>\n\nThe answer.")]
    [InlineData("deepseek_r1", "\n<think>\nplan</think>ok")]
    [InlineData("deepseek_r1", "never closed <")]
    public void Streaming_in_any_cuts_joins_to_the_whole_split(string name, string text)
    {
        var parser = ReasoningParser.Create(name);
        var (wantReasoning, wantContent) = parser.Split(text);
        var rng = new Random(text.Length);
        for (int trial = 0; trial < 200; trial++)
        {
            var stream = parser.NewStream();
            string reasoning = "", content = "";
            for (int i = 0; i < text.Length;)
            {
                int n = trial == 0 ? 1 : rng.Next(1, 6);
                var (r, c) = stream.Push(text.Substring(i, Math.Min(n, text.Length - i)));
                (reasoning, content) = (reasoning + r, content + c);
                i += n;
            }
            var (r2, c2) = stream.Finish();
            Assert.Equal(wantReasoning ?? "", reasoning + r2);
            Assert.Equal(wantContent ?? "", content + c2);
        }
    }

    [Fact]
    public void An_unknown_parser_is_refused_by_name()
    {
        var e = Assert.Throws<Temper.Core.TemperException>(() => ReasoningParser.Create("r2"));
        Assert.Equal("--reasoning-parser 'r2' is not one of qwen3, deepseek_r1", e.Message);
    }

    [Fact]
    public async Task The_server_answers_with_reasoning_content_whole_and_streamed()
    {
        var cancel = TestContext.Current.CancellationToken;
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        var body = new JsonObject { ["model"] = "llama-tiny", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Once upon a time" }), ["max_tokens"] = 24, ["temperature"] = 0 };
        // The plain answer first; then two pieces of it stand in for the tags.
        string plain;
        using (var served = new ServedModel(lm, [], new ServingOptions { BlockSize = 4, Blocks = 64 }))
        await using (var host = await ServingHost.StartAsync(served, "127.0.0.1", 0))
        {
            using var http = new HttpClient { BaseAddress = host.Address };
            var r = await (await http.PostAsJsonAsync("v1/chat/completions", body, cancel)).Content.ReadFromJsonAsync<JsonObject>(cancel);
            plain = (string)r!["choices"]![0]!["message"]!["content"]!;
        }
        Assert.True(plain.Length >= 12, $"the tiny model's answer '{plain}' is too short to cut tags from");
        string start = plain[2..4], end = plain[7..9];
        Assert.True(plain.IndexOf(start, StringComparison.Ordinal) < plain.IndexOf(end, 4, StringComparison.Ordinal), "tags out of order");
        var parser = new ReasoningParser("test", start, end, startsInside: false);
        var (wantReasoning, wantContent) = parser.Split(plain);
        Assert.NotNull(wantReasoning);

        using var served2 = new ServedModel(lm, [], new ServingOptions { BlockSize = 4, Blocks = 64 }) { Reasoning = parser };
        await using var host2 = await ServingHost.StartAsync(served2, "127.0.0.1", 0);
        using var client = new HttpClient { BaseAddress = host2.Address };
        var whole = await (await client.PostAsJsonAsync("v1/chat/completions", body, cancel)).Content.ReadFromJsonAsync<JsonObject>(cancel);
        var message = whole!["choices"]![0]!["message"]!;
        Assert.Equal(wantReasoning, (string?)message["reasoning_content"]);
        Assert.Equal(wantContent, (string?)message["content"]);

        body["stream"] = true;
        var sse = await (await client.PostAsJsonAsync("v1/chat/completions", body, cancel)).Content.ReadAsStringAsync(cancel);
        string reasoning = "", content = "";
        foreach (var line in sse.Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal)))
        {
            var delta = JsonNode.Parse(line["data: ".Length..])!["choices"]![0]!["delta"]!;
            reasoning += (string?)delta["reasoning_content"] ?? "";
            content += (string?)delta["content"] ?? "";
        }
        Assert.Equal(wantReasoning, reasoning);
        Assert.Equal(wantContent ?? "", content);

        // In process: the IChatClient gives the thinking as TextReasoningContent, whole and streamed.
        using Microsoft.Extensions.AI.IChatClient local = new TemperChatClient(served2);
        var options = new Microsoft.Extensions.AI.ChatOptions { MaxOutputTokens = 24 };
        var response = await local.GetResponseAsync([new(Microsoft.Extensions.AI.ChatRole.User, "Once upon a time")], options, cancel);
        var contents = response.Messages.Single().Contents;
        Assert.Equal(wantReasoning, Assert.IsType<Microsoft.Extensions.AI.TextReasoningContent>(contents[0]).Text);
        Assert.Equal(wantContent ?? "", response.Text);
        string streamedReasoning = "", streamedText = "";
        await foreach (var u in local.GetStreamingResponseAsync([new(Microsoft.Extensions.AI.ChatRole.User, "Once upon a time")], options, cancel))
        {
            streamedReasoning += string.Concat(u.Contents.OfType<Microsoft.Extensions.AI.TextReasoningContent>().Select(c => c.Text));
            streamedText += u.Text;
        }
        Assert.Equal(wantReasoning, streamedReasoning);
        Assert.Equal(wantContent ?? "", streamedText);
    }
}
