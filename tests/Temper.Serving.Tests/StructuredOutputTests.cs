// Structured output through the server and the IChatClient on the random llama-tiny model: a json_schema
// request through the official OpenAI client answers content that parses and matches the schema (whole,
// streamed, n = 3 choices each with its own constraint state); json_object and vLLM's guided_json on
// /v1/completions; ChatOptions.ResponseFormat in process; bad schemas and unsupported keywords get a 400
// naming them.
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI.Chat;
using Temper.Serving.Http;

namespace Temper.Serving.Tests;

public sealed class StructuredOutputTests(ServerFixture f) : IClassFixture<ServerFixture>
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private const string Schema = """
        {"type":"object","properties":{"answer":{"enum":["yes","no","maybe"]},"sure":{"type":"boolean"},"note":{"type":["string","null"],"maxLength":4}},
         "required":["answer","sure","note"],"additionalProperties":false}
        """;

    private static void Valid(string content)
    {
        using var doc = JsonDocument.Parse(content);
        var e = doc.RootElement;
        Assert.Equal(["answer", "sure", "note"], e.EnumerateObject().Select(p => p.Name));
        Assert.Contains(e.GetProperty("answer").GetString(), new[] { "yes", "no", "maybe" });
        Assert.Contains(e.GetProperty("sure").ValueKind, new[] { JsonValueKind.True, JsonValueKind.False });
        var note = e.GetProperty("note");
        Assert.True(note.ValueKind == JsonValueKind.Null || note.GetString()!.EnumerateRunes().Count() <= 4, content);
    }

    private static ChatCompletionOptions Options(float temperature, long? seed = null) => new()
    {
        Temperature = temperature, MaxOutputTokenCount = 150, Seed = seed,
        ResponseFormat = OpenAI.Chat.ChatResponseFormat.CreateJsonSchemaFormat("verdict", BinaryData.FromString(Schema), jsonSchemaIsStrict: true),
    };

    [Fact]
    public async Task Json_schema_answers_parse_whole_streamed_and_sampled()
    {
        var chat = f.Client().GetChatClient("llama-tiny");
        List<OpenAI.Chat.ChatMessage> messages = [new UserChatMessage("Is the sky blue? Answer in JSON.")];
        var whole = (await chat.CompleteChatAsync(messages, Options(0), Cancel)).Value;
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, whole.FinishReason);
        Valid(whole.Content[0].Text);

        var streamed = new StringBuilder();
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, Options(0), Cancel))
            foreach (var part in u.ContentUpdate) streamed.Append(part.Text);
        Assert.Equal(whole.Content[0].Text, streamed.ToString());

        for (int seed = 0; seed < 4; seed++)
        {
            var sampled = (await chat.CompleteChatAsync(messages, Options(1.2f, seed), Cancel)).Value;
            Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, sampled.FinishReason);
            Valid(sampled.Content[0].Text);
        }
    }

    [Fact]
    public async Task Every_choice_of_n_keeps_its_own_constraint_state()
    {
        var body = new JsonObject
        {
            ["model"] = "llama-tiny", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Verdict?" }),
            ["n"] = 3, ["temperature"] = 1.3, ["seed"] = 7, ["max_tokens"] = 150,
            ["response_format"] = new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "v", ["schema"] = JsonNode.Parse(Schema), ["strict"] = true } },
        };
        var (status, json) = await Post("v1/chat/completions", body.ToJsonString());
        Assert.Equal(HttpStatusCode.OK, status);
        var choices = json["choices"]!.AsArray();
        Assert.Equal(3, choices.Count);
        foreach (var c in choices)
        {
            Assert.Equal("stop", (string?)c!["finish_reason"]);
            Valid((string)c["message"]!["content"]!);
        }
    }

    [Fact]
    public async Task Json_object_and_guided_json_constrain_completions()
    {
        // json_object: the random model may not close its object within the budget, but what it wrote is an object's start
        // (and a whole object when it stopped).
        for (int seed = 0; seed < 3; seed++)
        {
            var (status, json) = await Post("v1/completions", $$$"""{"model": "llama-tiny", "prompt": "JSON:", "max_tokens": 60, "temperature": 1, "seed": {{{seed}}}, "response_format": {"type": "json_object"}}""");
            Assert.Equal(HttpStatusCode.OK, status);
            string text = (string)json["choices"]![0]!["text"]!;
            Assert.StartsWith("{", text.TrimStart(), StringComparison.Ordinal);
            if ((string?)json["choices"]![0]!["finish_reason"] == "stop") Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(text).RootElement.ValueKind);
        }
        var guided = new JsonObject { ["model"] = "llama-tiny", ["prompt"] = "Verdict:", ["max_tokens"] = 150, ["temperature"] = 0, ["guided_json"] = Schema };
        var (s2, j2) = await Post("v1/completions", guided.ToJsonString());
        Assert.Equal(HttpStatusCode.OK, s2);
        Valid((string)j2["choices"]![0]!["text"]!);
    }

    [Fact]
    public async Task The_chat_client_honours_response_format()
    {
        using IChatClient local = new TemperChatClient(f.Model);
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 150, ResponseFormat = Microsoft.Extensions.AI.ChatResponseFormat.ForJsonSchema(JsonDocument.Parse(Schema).RootElement, "verdict") };
        var answer = await local.GetResponseAsync([new Microsoft.Extensions.AI.ChatMessage(ChatRole.User, "Is the sky blue? Answer in JSON.")], options, Cancel);
        Valid(answer.Text);
        // the same request through the server gives the same text
        var server = (await f.Client().GetChatClient("llama-tiny").CompleteChatAsync([new UserChatMessage("Is the sky blue? Answer in JSON.")], Options(0), Cancel)).Value;
        Assert.Equal(server.Content[0].Text, answer.Text);

        var obj = await local.GetResponseAsync([new Microsoft.Extensions.AI.ChatMessage(ChatRole.User, "JSON please")],
            new ChatOptions { Temperature = 0, MaxOutputTokens = 40, ResponseFormat = Microsoft.Extensions.AI.ChatResponseFormat.Json }, Cancel);
        Assert.StartsWith("{", obj.Text.TrimStart(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Bad_schemas_get_400_naming_the_problem()
    {
        foreach (var (format, message) in new[]
        {
            ("""{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "^a+$"}}}""", "'response_format.json_schema.schema': JSON schema at #: the keyword 'pattern' is not supported"),
            ("""{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}}}""", "JSON schema at #/properties/d: the keyword 'format' is not supported"),
            ("""{"type": "json_schema", "json_schema": {"name": "x"}}""", "needs 'json_schema.schema'"),
            ("""{"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/Nope"}}}""", "points at nothing"),
            ("""{"type": "yaml"}""", "'response_format' type 'yaml' is not supported"),
            ("""[1]""", "'response_format' must be an object"),
        })
        {
            var (status, json) = await Post("v1/chat/completions", $$$"""{"model": "llama-tiny", "messages": [{"role": "user", "content": "hi"}], "response_format": {{{format}}}}""");
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Contains(message, (string)json["error"]!["message"]!, StringComparison.Ordinal);
        }
        var (s2, j2) = await Post("v1/completions", """{"model": "llama-tiny", "prompt": "hi", "guided_json": "{not json"}""");
        Assert.Equal(HttpStatusCode.BadRequest, s2);
        Assert.Contains("'guided_json' is not valid JSON", (string)j2["error"]!["message"]!, StringComparison.Ordinal);
    }

    private async Task<(HttpStatusCode Status, JsonNode Json)> Post(string route, string body)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var r = await f.Http.PostAsync(new Uri(f.Host.Address, route), content, Cancel);
        return (r.StatusCode, JsonNode.Parse(await r.Content.ReadAsStringAsync(Cancel))!);
    }
}
