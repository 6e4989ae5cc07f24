// Structured output from a reasoning model, as vLLM gives it: with a reasoning parser the JSON constraint waits for
// the end of the thinking (</think> generated), so a scripted model thinks freely and then answers JSON that the
// schema allows; without the parser the constraint holds from the first token and the thinking cannot start; with
// the thinking closed in the prompt (Qwen3's enable_thinking false) the constraint holds from the start.
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Http;
using Temper.Serving.Scheduling;
using Temper.Tests;

namespace Temper.Serving.Tests;

public sealed class ReasoningStructuredOutputTests
{
    private const string Template = """
        {%- for message in messages %}<|im_start|>{{ message.role }}
        {{ message.content }}<|im_end|>
        {% endfor %}
        {%- if add_generation_prompt %}<|im_start|>assistant
        {% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}{% endif %}
        """;

    private const string Answer = """{"city": "Paris"}""";

    [Fact]
    public async Task The_constraint_waits_for_the_end_of_the_thinking()
    {
        var cancel = TestContext.Current.CancellationToken;
        string folder = ScriptedModel.Write(["<think>", "The city is Paris.", "</think>", Answer, "<|im_end|>"], Template);
        using var lm = LanguageModel.Load(folder, new CpuBackend(1));
        var body = JsonNode.Parse("""
            {"model": "scripted", "messages": [{"role": "user", "content": "Where?"}], "temperature": 0, "max_tokens": 16,
             "response_format": {"type": "json_schema", "json_schema": {"name": "where", "schema":
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}}}
            """)!.AsObject();

        async Task<JsonNode> Ask(ServedModel served, JsonObject request)
        {
            await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0);
            using var http = new HttpClient { BaseAddress = host.Address };
            return (await (await http.PostAsJsonAsync("v1/chat/completions", request, cancel)).Content.ReadFromJsonAsync<JsonObject>(cancel))!["choices"]![0]!["message"]!;
        }

        using (var served = new ServedModel(lm, [], new ServingOptions { BlockSize = 16, Blocks = 64 }, ["scripted"]) { Reasoning = ReasoningParser.Create("qwen3") })
        {
            var message = await Ask(served, body);
            Assert.Equal("The city is Paris.", (string?)message["reasoning_content"]);
            Assert.Equal(Answer, (string?)message["content"]);

            // The thinking closed in the prompt: the answer is constrained from its first token, and has no reasoning.
            var closed = (JsonObject)body.DeepClone();
            closed["chat_template_kwargs"] = new JsonObject { ["enable_thinking"] = false };
            var direct = await Ask(served, closed);
            Assert.Null(direct["reasoning_content"]);
            Assert.Equal(Answer, (string?)direct["content"]);
        }

        // Without a reasoning parser the constraint holds from the first token: <think> is not JSON, so the answer opens the
        // object at once (the thinking can only end up inside a string of it).
        using (var plain = new ServedModel(lm, [], new ServingOptions { BlockSize = 16, Blocks = 64 }, ["scripted"]))
        {
            string content = (string?)(await Ask(plain, body))["content"] ?? "";
            Assert.StartsWith("{", content.TrimStart());
            Assert.NotEqual(Answer, content);
        }
    }
}
