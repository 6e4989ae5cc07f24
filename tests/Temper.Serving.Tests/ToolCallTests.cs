// Tool calling as vLLM serves it: the hermes and llama3_json parsers on whole answers (calls found, content
// kept, malformed calls left as content), streaming in every cut giving the whole answer's content and calls;
// then a scripted model (tests/Shared/ScriptedModel.cs: its greedy answer is text plus two hermes calls, its
// tag split across tokens) behind the server: the official OpenAI client gets tool_calls whole and streamed
// with finish reason tool_calls, Microsoft.Extensions.AI's function-invoking client runs the whole loop over
// HTTP and in process (the functions called with the model's arguments, the results rendered back through
// the chat template, the model's final text returned), and the tool fields' bad values get 400s.
using System.ClientModel;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Http;
using Temper.Serving.Scheduling;
using Temper.Tests;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;
using ChatFinishReason = Microsoft.Extensions.AI.ChatFinishReason;

namespace Temper.Serving.Tests;

public sealed class ToolCallTests
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private static string Calls(IEnumerable<ToolCall> calls) => string.Join(" | ", calls.Select(c => $"{c.Name} {c.Arguments}"));

    public static TheoryData<string, string, string?, string> Answers => new()
    {
        { "hermes", "plain text, no call", "plain text, no call", "" },
        { "hermes", "Let me see.<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}</tool_call>", "Let me see.", "f {\"a\":1}" },
        { "hermes", "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": {\"x\": \"é\"}}", null, "f {} | g {\"x\":\"é\"}" },
        { "hermes", "a<tool_call>{\"name\": \"f\", \"arguments\": [1, 2]}</tool_call> between <tool_call>{\"name\": \"g\", \"arguments\": null}</tool_call> after", "a", "f [1,2] | g null" },
        { "hermes", "<tool_call>{\"name\": \"f\"}</tool_call>", "<tool_call>{\"name\": \"f\"}</tool_call>", "" },
        { "hermes", "x <tool_call>not json</tool_call>", "x <tool_call>not json</tool_call>", "" },
        { "hermes", "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>", "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>", "" },
        { "llama3_json", "{\"name\": \"f\", \"parameters\": {\"a\": 1}}", null, "f {\"a\":1}" },
        { "llama3_json", " {\"name\": \"f\", \"arguments\": {}} ; {\"name\": \"g\", \"parameters\": {\"s\": \"}{;\\\"\"}}\n", null, "f {} | g {\"s\":\"}{;\\\"\"}" },
        { "llama3_json", "The answer is {\"name\": \"f\", \"parameters\": {}}", "The answer is {\"name\": \"f\", \"parameters\": {}}", "" },
        { "llama3_json", "{\"name\": \"f\", \"parameters\": {}} and more", "{\"name\": \"f\", \"parameters\": {}} and more", "" },
        { "llama3_json", "{\"a\": 1}", "{\"a\": 1}", "" },
        { "llama3_json", "   ", "   ", "" },
        { "mistral", "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": 1}}, {\"name\": \"g\", \"arguments\": {}}]", null, "f {\"a\":1} | g {}" },
        { "mistral", "Sure. [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}] trailing", "Sure. ", "f {}" },
        { "mistral", "no call [{\"name\": \"f\", \"arguments\": {}}]", "no call [{\"name\": \"f\", \"arguments\": {}}]", "" },
        { "mistral", "[TOOL_CALLS] [{\"name\": \"f\"}]", "[TOOL_CALLS] [{\"name\": \"f\"}]", "" },
    };

    [Theory]
    [MemberData(nameof(Answers))]
    public void Whole_answers_parse_as_vllm_parses_them(string parser, string text, string? content, string calls)
    {
        var (gotContent, gotCalls) = ToolCallParser.Create(parser).Parse(text);
        Assert.Equal(content, gotContent);
        Assert.Equal(calls, Calls(gotCalls));
        Assert.All(gotCalls, c => Assert.Matches(parser == "mistral" ? "^[A-Za-z0-9]{9}$" : "^chatcmpl-tool-[0-9a-f]{32}$", c.Id));
    }

    [Theory]
    [MemberData(nameof(Answers))]
    public void Streaming_in_any_cut_gives_the_whole_answers_content_and_calls(string parser, string text, string? content, string calls)
    {
        if (calls.Length > 0 && content == text) return; // not reached: a malformed answer has no calls
        var cuts = Enumerable.Range(0, text.Length + 1).Select(i => new[] { text[..i], text[i..] })
            .Append(text.Select(c => c.ToString()).ToArray());
        foreach (var pieces in cuts)
        {
            var stream = ToolCallParser.Create(parser).NewStream();
            string got = "";
            var found = new List<ToolCall>();
            for (int i = 0; i < pieces.Length; i++)
            {
                var (c, k) = stream.Push(pieces[i], last: i == pieces.Length - 1);
                got += c;
                found.AddRange(k);
            }
            string where = string.Join("|", pieces);
            Assert.True((content ?? "") == got, $"content '{got}' for cut {where}");
            Assert.True(calls == Calls(found), $"calls '{Calls(found)}' for cut {where}");
        }
    }

    [Fact]
    public void Unknown_parsers_are_refused_by_name()
    {
        var e = Assert.Throws<TemperException>(() => ToolCallParser.Create("pythonic"));
        Assert.Equal("--tool-call-parser 'pythonic' is not one of hermes, llama3_json, mistral", e.Message);
    }

    // A Qwen2.5-style template: tools in the system turn, calls as <tool_call> JSON with the arguments rendered by tojson,
    // results as <tool_response>; after a result the answer is opened with <answer>, from which the script goes on.
    private const string Template = """
        {%- if tools %}<|im_start|>system
        <tools>{% for tool in tools %}
        {{ tool | tojson }}{% endfor %}
        </tools><|im_end|>
        {% endif %}
        {%- for message in messages %}
        {%- if message.role == "assistant" and message.tool_calls %}<|im_start|>assistant
        {%- for tc in message.tool_calls %}
        <tool_call>{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}</tool_call>
        {%- endfor %}<|im_end|>
        {% elif message.role == "tool" %}<|im_start|>user
        <tool_response>{{ message.content }}</tool_response><|im_end|>
        {% else %}<|im_start|>{{ message.role }}
        {{ message.content }}<|im_end|>
        {% endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}<|im_start|>assistant
        {% if messages[-1].role == "tool" %}<answer>{% endif %}{% endif %}
        """;

    private static readonly string[] Script =
    [
        "I will look.", "<tool_",
        "call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool",
        "_call>", "<|im_end|>", "<answer>", "It is sunny in Paris.", "<|endoftext|>",
    ];

    private const string ExpectedCalls = "get_weather {\"city\":\"Paris\"} | get_time {\"zone\":\"CET\"}";

    private static readonly Lazy<string> Folder = new(() => ScriptedModel.Write(Script, Template));

    private static ServedModel Serve(LanguageModel lm, bool tools = true) =>
        new(lm, [], new ServingOptions { BlockSize = 16, Blocks = 128 }, ["scripted"]) { ToolCalls = tools ? ToolCallParser.Create("hermes") : null };

    private static ChatTool WeatherTool => ChatTool.CreateFunctionTool("get_weather", "The weather in a city",
        BinaryData.FromString("""{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}"""));

    [Fact]
    public async Task The_official_client_gets_tool_calls_whole_and_streamed()
    {
        using var lm = LanguageModel.Load(Folder.Value, new CpuBackend(1));
        using var served = Serve(lm);
        await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0);
        var chat = LoopbackServer.OpenAi(host).GetChatClient("scripted");
        var options = new ChatCompletionOptions { Temperature = 0, Tools = { WeatherTool } };
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("What is the weather in Paris?")];

        var whole = (await chat.CompleteChatAsync(messages, options, Cancel)).Value;
        Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, whole.FinishReason);
        Assert.Equal("I will look.", whole.Content.Single().Text);
        Assert.Equal(ExpectedCalls, string.Join(" | ", whole.ToolCalls.Select(c => $"{c.FunctionName} {c.FunctionArguments}")));
        Assert.Equal(2, whole.ToolCalls.Select(c => c.Id).Distinct().Count());

        string content = "";
        var names = new SortedDictionary<int, string>();
        var args = new SortedDictionary<int, string>();
        OpenAI.Chat.ChatFinishReason? finish = null;
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, options, Cancel))
        {
            content += string.Concat(u.ContentUpdate.Select(p => p.Text));
            foreach (var t in u.ToolCallUpdates)
            {
                if (t.FunctionName != null) names[t.Index] = t.FunctionName;
                args[t.Index] = (args.GetValueOrDefault(t.Index) ?? "") + t.FunctionArgumentsUpdate?.ToString();
            }
            finish ??= u.FinishReason;
        }
        Assert.Equal("I will look.", content);
        Assert.Equal(ExpectedCalls, string.Join(" | ", names.Keys.Select(i => $"{names[i]} {args[i]}")));
        Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, finish);
    }

    [Fact]
    public async Task Function_invoking_clients_run_the_loop_over_http_and_in_process()
    {
        using var lm = LanguageModel.Load(Folder.Value, new CpuBackend(1));
        using var served = Serve(lm);
        await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0);
        var calls = new List<string>();
        var tools = new AITool[]
        {
            AIFunctionFactory.Create((string city) => { calls.Add("get_weather " + city); return "sunny"; }, "get_weather", "The weather in a city"),
            AIFunctionFactory.Create((string zone) => { calls.Add("get_time " + zone); return "12:00"; }, "get_time", "The time in a zone"),
        };
        var options = new ChatOptions { Temperature = 0, Tools = tools, MaxOutputTokens = 32 };
        IChatClient overHttp = LoopbackServer.OpenAi(host)
            .GetChatClient("scripted").AsIChatClient();
        foreach (var inner in new[] { overHttp, new TemperChatClient(served) })
        {
            calls.Clear();
            using var client = inner.AsBuilder().UseFunctionInvocation().Build();
            var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "What is the weather in Paris?")], options, Cancel);
            Assert.Equal(["get_weather Paris", "get_time CET"], calls);
            Assert.Equal("It is sunny in Paris.", response.Messages[^1].Text);
            var results = response.Messages.SelectMany(m => m.Contents).OfType<FunctionResultContent>().Select(r => r.Result?.ToString() ?? "").ToArray();
            Assert.Equal(["sunny", "12:00"], results);
        }
    }

    [Fact]
    public async Task Reasoning_comes_apart_from_the_calls_after_it()
    {
        // Qwen3 thinks, then calls: the <think> text is reasoning_content and the call is found in what follows it.
        string folder = ScriptedModel.Write(["<think>", "Paris, so the weather tool.", "</think>", "\n\n", "<tool_call>",
            "\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n", "</tool_call>", "<|im_end|>"], Template);
        using var lm = LanguageModel.Load(folder, new CpuBackend(1));
        using var served = new ServedModel(lm, [], new ServingOptions { BlockSize = 16, Blocks = 128 }, ["scripted"])
        {
            ToolCalls = ToolCallParser.Create("hermes"), Reasoning = ReasoningParser.Create("qwen3"),
        };
        await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0);
        using var http = new HttpClient { BaseAddress = host.Address };
        var body = JsonNode.Parse("""
            {"model": "scripted", "messages": [{"role": "user", "content": "Weather?"}], "temperature": 0,
             "tools": [{"type": "function", "function": {"name": "get_weather"}}]}
            """)!.AsObject();
        var whole = (await (await http.PostAsJsonAsync("v1/chat/completions", body, Cancel)).Content.ReadFromJsonAsync<JsonObject>(Cancel))!["choices"]![0]!;
        Assert.Equal("tool_calls", (string?)whole["finish_reason"]);
        Assert.Equal("Paris, so the weather tool.", (string?)whole["message"]!["reasoning_content"]);
        Assert.Equal("\n\n", (string?)whole["message"]!["content"]);
        Assert.Equal("get_weather {\"city\":\"Paris\"}", $"{whole["message"]!["tool_calls"]![0]!["function"]!["name"]} {whole["message"]!["tool_calls"]![0]!["function"]!["arguments"]}");

        body["stream"] = true;
        string sse = await (await http.PostAsJsonAsync("v1/chat/completions", body, Cancel)).Content.ReadAsStringAsync(Cancel);
        string reasoning = "", content = "", calls = "", finish = "";
        foreach (var line in sse.Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal)))
        {
            var choice = JsonNode.Parse(line["data: ".Length..])!["choices"]![0]!;
            reasoning += (string?)choice["delta"]!["reasoning_content"] ?? "";
            content += (string?)choice["delta"]!["content"] ?? "";
            foreach (var c in choice["delta"]!["tool_calls"]?.AsArray() ?? []) calls += $"{c!["index"]} {c["function"]!["name"]} {c["function"]!["arguments"]}";
            finish += (string?)choice["finish_reason"] ?? "";
        }
        Assert.Equal("Paris, so the weather tool.", reasoning);
        Assert.Equal("\n\n", content);
        Assert.Equal("0 get_weather {\"city\":\"Paris\"}", calls);
        Assert.Equal("tool_calls", finish);
    }

    [Fact]
    public async Task Mistral_calls_are_found_after_its_special_marker()
    {
        // [TOOL_CALLS] is a special token: kept in the text the parser reads, skipped when tools are off (tool_choice none).
        string folder = ScriptedModel.Write(["Checking.", "[TOOL_CALLS]", " [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]", "<|im_end|>"],
            Template, specials: ["[TOOL_CALLS]"]);
        using var lm = LanguageModel.Load(folder, new CpuBackend(1));
        using var served = new ServedModel(lm, [], new ServingOptions { BlockSize = 16, Blocks = 128 }, ["scripted"]) { ToolCalls = ToolCallParser.Create("mistral") };
        await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0);
        var chat = LoopbackServer.OpenAi(host).GetChatClient("scripted");
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Weather?")];
        var whole = (await chat.CompleteChatAsync(messages, new ChatCompletionOptions { Temperature = 0, Tools = { WeatherTool } }, Cancel)).Value;
        Assert.Equal("Checking.", whole.Content.Single().Text);
        var call = Assert.Single(whole.ToolCalls);
        Assert.Equal("get_weather {\"city\":\"Paris\"}", $"{call.FunctionName} {call.FunctionArguments}");
        Assert.Matches("^[A-Za-z0-9]{9}$", call.Id);
        string streamed = "", calls = "";
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, new ChatCompletionOptions { Temperature = 0, Tools = { WeatherTool } }, Cancel))
        {
            streamed += string.Concat(u.ContentUpdate.Select(p => p.Text));
            calls += string.Concat(u.ToolCallUpdates.Select(t => $"{t.FunctionName} {t.FunctionArgumentsUpdate}"));
        }
        Assert.Equal("Checking.", streamed);
        Assert.Equal("get_weather {\"city\":\"Paris\"}", calls);

        var none = (await chat.CompleteChatAsync(messages, new ChatCompletionOptions { Temperature = 0, Tools = { WeatherTool }, ToolChoice = ChatToolChoice.CreateNoneChoice() }, Cancel)).Value;
        Assert.Empty(none.ToolCalls);
        Assert.Equal("Checking. [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]", none.Content.Single().Text);

        // a tokenizer without the marker is refused when the server is made
        using var other = LanguageModel.Load(Folder.Value, new CpuBackend(1));
        var e = Assert.Throws<TemperException>(() => new ServedModel(other, [], new ServingOptions { BlockSize = 16, Blocks = 8 }) { ToolCalls = ToolCallParser.Create("mistral") });
        Assert.Equal("--tool-call-parser mistral: the model's tokenizer has no [TOOL_CALLS] token", e.Message);
    }

    // Forced calls: the scripted answers are the JSON a forced choice is constrained to (one token each, so the mask lets it through).
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Forced_tool_choices_answer_with_calls_without_a_parser(bool required)
    {
        string answer = required ? """[{"name": "get_time", "parameters": {"zone": "CET"}}, {"name": "get_weather", "parameters": {"city": "Paris"}}]""" : """{"city": "Paris"}""";
        string folder = ScriptedModel.Write([answer, "<|im_end|>"], Template);
        using var lm = LanguageModel.Load(folder, new CpuBackend(1));
        using var served = Serve(lm, tools: false); // no --tool-call-parser: forced choices need none
        await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0);
        var chat = LoopbackServer.OpenAi(host).GetChatClient("scripted");
        var timeTool = ChatTool.CreateFunctionTool("get_time", "The time in a zone",
            BinaryData.FromString("""{"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}"""));
        ChatCompletionOptions Options() => new()
        {
            Temperature = 0, Tools = { WeatherTool, timeTool },
            ToolChoice = required ? ChatToolChoice.CreateRequiredChoice() : ChatToolChoice.CreateFunctionChoice("get_weather"),
        };
        string want = required ? "get_time {\"zone\":\"CET\"} | get_weather {\"city\":\"Paris\"}" : "get_weather {\"city\":\"Paris\"}";
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Weather?")];
        var whole = (await chat.CompleteChatAsync(messages, Options(), Cancel)).Value;
        Assert.Equal(want, string.Join(" | ", whole.ToolCalls.Select(c => $"{c.FunctionName} {c.FunctionArguments}")));
        Assert.Equal(OpenAI.Chat.ChatFinishReason.ToolCalls, whole.FinishReason);
        Assert.Empty(whole.Content);
        var names = new SortedDictionary<int, string>();
        var args = new SortedDictionary<int, string>();
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, Options(), Cancel))
            foreach (var t in u.ToolCallUpdates)
            {
                if (t.FunctionName != null) names[t.Index] = t.FunctionName;
                args[t.Index] = (args.GetValueOrDefault(t.Index) ?? "") + t.FunctionArgumentsUpdate?.ToString();
            }
        Assert.Equal(want, string.Join(" | ", names.Keys.Select(i => $"{names[i]} {args[i]}")));

        // The request is constrained to the forced schema (and a plain or auto one is not).
        var body = new JsonObject
        {
            ["model"] = "scripted", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }),
            ["tools"] = JsonNode.Parse("""[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]"""),
            ["tool_choice"] = required ? "required" : JsonNode.Parse("""{"type": "function", "function": {"name": "get_weather"}}"""),
        };
        Assert.NotNull(OpenAiRequest.Parse(body, chat: true, served).Servings[0].Sampling.Constraint);
        body["tool_choice"] = "none";
        Assert.Null(OpenAiRequest.Parse(body, chat: true, served).Servings[0].Sampling.Constraint);

        // In process: ToolMode RequireSpecific / RequireAny give FunctionCallContent the same way.
        using IChatClient local = new TemperChatClient(served);
        var options = new ChatOptions
        {
            Tools = [AIFunctionFactory.Create((string city) => "sunny", "get_weather"), AIFunctionFactory.Create((string zone) => "12:00", "get_time")],
            ToolMode = required ? ChatToolMode.RequireAny : ChatToolMode.RequireSpecific("get_weather"),
        };
        var response = await local.GetResponseAsync([new ChatMessage(ChatRole.User, "Weather?")], options, Cancel);
        var calls = response.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>().Select(c => $"{c.Name} {System.Text.Json.JsonSerializer.Serialize(c.Arguments)}");
        Assert.Equal(want, string.Join(" | ", calls));
        Assert.Equal(ChatFinishReason.ToolCalls, response.FinishReason);
    }

    [Fact]
    public async Task The_in_process_client_streams_function_calls()
    {
        using var lm = LanguageModel.Load(Folder.Value, new CpuBackend(1));
        using var served = Serve(lm);
        using IChatClient local = new TemperChatClient(served);
        var options = new ChatOptions { Tools = [AIFunctionFactory.Create((string city) => "sunny", "get_weather")] };
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in local.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Weather?")], options, Cancel)) updates.Add(u);
        Assert.Equal("I will look.", string.Concat(updates.Select(u => u.Text)));
        var calls = updates.SelectMany(u => u.Contents).OfType<FunctionCallContent>().Select(c => $"{c.Name} {System.Text.Json.JsonSerializer.Serialize(c.Arguments)}");
        Assert.Equal(ExpectedCalls, string.Join(" | ", calls));
        Assert.Equal(ChatFinishReason.ToolCalls, updates[^1].FinishReason);

        // tool mode none: the tools stay out of the prompt and the answer is text
        options.ToolMode = ChatToolMode.None;
        var plain = await local.GetResponseAsync([new ChatMessage(ChatRole.User, "Weather?")], options, Cancel);
        Assert.Empty(plain.Messages.SelectMany(m => m.Contents).OfType<FunctionCallContent>());
        Assert.StartsWith("I will look.<tool_call>", plain.Text);
    }

    [Fact]
    public async Task Tools_reach_the_template_and_tool_fields_are_checked()
    {
        using var lm = LanguageModel.Load(Folder.Value, new CpuBackend(1));
        using var served = Serve(lm);
        await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0);
        using var http = new HttpClient { BaseAddress = host.Address };
        var tool = JsonNode.Parse("""{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}""")!;
        var turn = JsonNode.Parse("""
            [{"role": "user", "content": "Weather?"},
             {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
             {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
            """)!;
        var body = new JsonObject { ["model"] = "scripted", ["messages"] = turn.DeepClone(), ["tools"] = new JsonArray(tool.DeepClone()) };
        var ids = (await (await http.PostAsJsonAsync("tokenize", body, Cancel)).Content.ReadFromJsonAsync<JsonObject>(Cancel))!["tokens"]!.AsArray().Select(t => (int)t!).ToArray();
        string prompt = served.Tokenizer.Decode(ids, skipSpecialTokens: false);
        Assert.Contains("""{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}""", prompt); // transformers' tojson keeps the order
        Assert.Contains("""<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>""", prompt);
        Assert.EndsWith("<tool_response>sunny</tool_response><|im_end|>\n<|im_start|>assistant\n<answer>", prompt);

        async Task Refused(JsonObject b, string message, string path = "v1/chat/completions", bool prefix = false)
        {
            b["model"] = "scripted";
            b["messages"] ??= new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" });
            var r = await http.PostAsJsonAsync(path, b, Cancel);
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            string? got = (string?)(await r.Content.ReadFromJsonAsync<JsonObject>(Cancel))!["error"]!["message"];
            if (prefix) Assert.StartsWith(message, got);
            else Assert.Equal(message, got);
        }
        await Refused(new JsonObject { ["tools"] = new JsonArray(tool.DeepClone()), ["tool_choice"] = JsonNode.Parse("""{"type": "function", "function": {"name": "get_time"}}""") },
            "'tool_choice' names function 'get_time', which is not in 'tools'");
        await Refused(new JsonObject
        {
            ["tools"] = new JsonArray(tool.DeepClone()), ["tool_choice"] = "required", ["response_format"] = new JsonObject { ["type"] = "json_object" },
        }, "give either 'response_format' or a 'tool_choice' that forces a call, not both");
        await Refused(new JsonObject
        {
            ["tools"] = JsonNode.Parse("""[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "string", "pattern": "x+"}}}}}]"""),
            ["tool_choice"] = "required",
        }, "'tool_choice': the forced call's schema: ", prefix: true);
        await Refused(new JsonObject { ["tool_choice"] = "auto" }, "'tool_choice' auto needs 'tools'");
        await Refused(new JsonObject { ["tools"] = JsonNode.Parse("""[{"type": "function", "function": {"name": ""}}]""") }, "'tools[0].function.name' must be a non-empty string");
        await Refused(new JsonObject { ["tools"] = JsonNode.Parse("""[{"type": "code", "function": {"name": "f"}}]""") }, "'tools[0].type' must be \"function\"");
        await Refused(new JsonObject { ["tools"] = "f" }, "'tools' must be an array of {\"type\": \"function\", \"function\": {...}}");
        await Refused(new JsonObject { ["tools"] = new JsonArray(tool.DeepClone()), ["tool_choice"] = "sometimes" },
            "'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
        var badArgs = turn.DeepClone();
        badArgs[1]!["tool_calls"]![0]!["function"]!["arguments"] = "{city: Paris}";
        await Refused(new JsonObject { ["messages"] = badArgs }, "'messages[1].tool_calls[0].function.arguments' is not valid JSON: ", prefix: true);
        await Refused(new JsonObject { ["prompt"] = "hi", ["tools"] = new JsonArray(tool.DeepClone()) }, "'tools' is a chat field; use /v1/chat/completions", "v1/completions");

        // without --enable-auto-tool-choice (no parser), tool_choice auto is refused with vLLM's message; none still answers in text
        using var plain = Serve(lm, tools: false);
        await using var plainHost = await ServingHost.StartAsync(plain, "127.0.0.1", 0);
        using var plainHttp = new HttpClient { BaseAddress = plainHost.Address };
        var auto = new JsonObject { ["model"] = "scripted", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }), ["tools"] = new JsonArray(tool.DeepClone()) };
        var refused = await plainHttp.PostAsJsonAsync("v1/chat/completions", auto, Cancel);
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Equal("\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set",
            (string?)(await refused.Content.ReadFromJsonAsync<JsonObject>(Cancel))!["error"]!["message"]);
        auto["tool_choice"] = "none";
        auto["max_tokens"] = 8;
        var answer = (await (await plainHttp.PostAsJsonAsync("v1/chat/completions", auto, Cancel)).Content.ReadFromJsonAsync<JsonObject>(Cancel))!["choices"]![0]!;
        Assert.Equal("stop", (string?)answer["finish_reason"]);
        Assert.Null(answer["message"]!["tool_calls"]);
        Assert.StartsWith("I will look.<tool_call>", (string?)answer["message"]!["content"]);
    }
}
