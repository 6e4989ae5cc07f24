// The OpenAI-compatible server on loopback, driven by the official OpenAI .NET client (chat, streaming,
// log-probs, models, adapter selection, errors) and by raw HTTP (/v1/completions, malformed bodies);
// bad requests get a 4xx with a message and the server keeps answering; a bounded load test of
// concurrent streaming clients checks that nothing is lost or mixed up between them; the in-process
// IChatClient gives what the server gives; the runtime LoRA routes answer 404 unless the server allows them.
using System.ClientModel;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Http;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public class ServerFixture : IAsyncLifetime
{
    /// <summary>Whether the server takes POST /v1/load_lora_adapter and /v1/unload_lora_adapter (temper serve --allow-runtime-lora).</summary>
    protected virtual bool AllowRuntimeLora => false;

    private LanguageModel _lm = null!;
    public ServedModel Model { get; private set; } = null!;
    public ServingHost Host { get; private set; } = null!;
    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromSeconds(60) };

    public async ValueTask InitializeAsync()
    {
        _lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(2));
        Model = new ServedModel(_lm, [("a0", ServingFixtures.Adapter(0)), ("a1", ServingFixtures.Adapter(1))],
            new ServingOptions { BlockSize = 8, Blocks = 128, MaxSequenceLength = 200 });
        Host = await ServingHost.StartAsync(Model, "127.0.0.1", 0, maxBodyBytes: 64 << 10, allowRuntimeLora: AllowRuntimeLora);
    }

    /// <summary>POSTs a JSON body to <paramref name="path"/> (relative to the server's address).</summary>
    public Task<Reply> Post(string path, string body, CancellationToken cancel) => LoopbackServer.Post(Http, Host, path, body, cancel);

    public OpenAIClient Client() => LoopbackServer.OpenAi(Host);

    public async ValueTask DisposeAsync()
    {
        await Host.DisposeAsync();
        Model.Dispose();
        _lm.Dispose();
        Http.Dispose();
        GC.SuppressFinalize(this);
    }
}

public sealed class HttpServerTests(ServerFixture f) : IClassFixture<ServerFixture>
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private static ChatCompletionOptions Greedy(int tokens, int top = 0) =>
        new() { Temperature = 0, MaxOutputTokenCount = tokens, IncludeLogProbabilities = true, TopLogProbabilityCount = top };

    [Fact]
    public async Task Models_lists_the_base_and_the_adapters()
    {
        var models = await f.Client().GetOpenAIModelClient().GetModelsAsync(Cancel);
        Assert.Equal(["llama-tiny", "a0", "a1"], models.Value.Select(m => m.Id));
        var raw = JsonNode.Parse(await f.Http.GetStringAsync(new Uri(f.Host.Address, "v1/models"), Cancel))!["data"]!.AsArray();
        Assert.Equal([null, "llama-tiny", "llama-tiny"], raw.Select(x => (string?)x!["parent"]));
        Assert.All(raw, x => Assert.Equal(200, (int)x!["max_model_len"]!));
    }

    [Fact]
    public async Task Chat_whole_and_streamed_agree_and_adapters_change_the_answer()
    {
        List<OpenAI.Chat.ChatMessage> messages = [new SystemChatMessage("You are terse."), new UserChatMessage("Name three colours.")];
        var chat = f.Client().GetChatClient("llama-tiny");
        var whole = (await chat.CompleteChatAsync(messages, Greedy(12, 2), Cancel)).Value;
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Length, whole.FinishReason);
        Assert.Equal(12, whole.Usage.OutputTokenCount);
        Assert.Equal(12, whole.ContentTokenLogProbabilities.Count);
        Assert.All(whole.ContentTokenLogProbabilities, t => Assert.Equal(2, t.TopLogProbabilities.Count));
        Assert.All(whole.ContentTokenLogProbabilities, t => Assert.Equal(t.TopLogProbabilities[0].LogProbability, t.LogProbability, 5)); // greedy = top

        var streamed = new StringBuilder();
        int updates = 0;
        OpenAI.Chat.ChatFinishReason? finish = null;
        await foreach (var u in chat.CompleteChatStreamingAsync(messages, Greedy(12), Cancel))
        {
            updates++;
            foreach (var part in u.ContentUpdate) streamed.Append(part.Text);
            finish ??= u.FinishReason;
        }
        Assert.Equal(whole.Content.Single().Text, streamed.ToString());
        Assert.True(updates >= 12, $"{updates} stream updates for 12 tokens");
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Length, finish);

        // The same conversation in process, through IChatClient, gives the same text.
        using IChatClient local = new TemperChatClient(f.Model);
        var inProcess = await local.GetResponseAsync([new(ChatRole.System, "You are terse."), new(ChatRole.User, "Name three colours.")],
            new ChatOptions { MaxOutputTokens = 12 }, Cancel);
        Assert.Equal(whole.Content.Single().Text, inProcess.Text);
        var localStream = new StringBuilder();
        await foreach (var u in local.GetStreamingResponseAsync([new(ChatRole.System, "You are terse."), new(ChatRole.User, "Name three colours.")],
            new ChatOptions { MaxOutputTokens = 12 }, Cancel)) localStream.Append(u.Text);
        Assert.Equal(inProcess.Text, localStream.ToString());

        var withAdapter = (await f.Client().GetChatClient("a1").CompleteChatAsync(messages, Greedy(12), Cancel)).Value;
        Assert.NotEqual(whole.ContentTokenLogProbabilities[0].LogProbability, withAdapter.ContentTokenLogProbabilities[0].LogProbability);
    }

    [Fact]
    public async Task Completions_return_text_logprobs_and_stream()
    {
        var body = new JsonObject { ["model"] = "a0", ["prompt"] = "Once upon a time", ["max_tokens"] = 6, ["temperature"] = 0, ["logprobs"] = 3 };
        var r = await Post("v1/completions", body.ToJsonString());
        Assert.Equal(HttpStatusCode.OK, r.Status);
        var choice = r.Json!["choices"]![0]!;
        Assert.Equal("length", (string?)choice["finish_reason"]);
        Assert.Equal(6, choice["logprobs"]!["token_logprobs"]!.AsArray().Count);
        Assert.Equal(3, choice["logprobs"]!["top_logprobs"]![0]!.AsObject().Count);
        Assert.Equal(6, (int)r.Json["usage"]!["completion_tokens"]!);

        body["stream"] = true;
        var sse = await Post("v1/completions", body.ToJsonString());
        var chunks = sse.Text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", chunks[^1]);
        string text = string.Concat(chunks[..^1].Select(c => (string?)JsonNode.Parse(c["data: ".Length..])!["choices"]![0]!["text"]));
        Assert.Equal((string?)choice["text"], text);
    }

    // OpenAI's frequency and presence penalties and logit_bias (and vLLM's repetition_penalty, top_k, min_p) reach the sampler:
    // the tiny random model's greedy text repeats tokens, and the strongest presence penalty leaves none repeated.
    [Fact]
    public async Task Penalties_and_logit_bias_reach_the_sampler_and_bad_ones_are_refused()
    {
        async Task<string[]> Tokens(JsonObject extra)
        {
            var body = new JsonObject { ["model"] = "llama-tiny", ["prompt"] = "Once upon a time", ["max_tokens"] = 16, ["temperature"] = 0, ["logprobs"] = 0 };
            foreach (var (k, v) in extra) body[k] = v?.DeepClone();
            var r = await Post("v1/completions", body.ToJsonString());
            Assert.Equal(HttpStatusCode.OK, r.Status);
            return r.Json!["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Select(t => (string)t!).ToArray();
        }
        var plain = await Tokens([]);
        Assert.True(plain.Distinct().Count() < plain.Length, "the plain greedy text has no repeated token to penalise");
        Assert.Equal(16, (await Tokens(new JsonObject { ["presence_penalty"] = 2 })).Distinct().Count());
        Assert.NotEqual(plain, await Tokens(new JsonObject { ["frequency_penalty"] = 2 }));
        Assert.NotEqual(plain, await Tokens(new JsonObject { ["repetition_penalty"] = 3 }));
        Assert.Equal(plain, await Tokens(new JsonObject { ["frequency_penalty"] = 0, ["presence_penalty"] = 0, ["top_k"] = -1 }));
        // logit_bias: +100 forces a token at every step, -100 bans the plain text's first token
        Assert.Single((await Tokens(new JsonObject { ["logit_bias"] = new JsonObject { ["300"] = 100 } })).Distinct());
        var first = f.Model.Engine.Submit(new Temper.Serving.Scheduling.ServingRequest { PromptIds = f.Model.Encode("Once upon a time"), MaxNewTokens = 1 });
        int firstId = (await first.Events.ReadAsync(Cancel)).Token;
        Assert.NotEqual(plain[0], (await Tokens(new JsonObject { ["logit_bias"] = new JsonObject { [firstId.ToString()] = -100 } }))[0]);

        // the official client sends them too
        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("tell me a story")];
        var opts = Greedy(16);
        var repeated = (await f.Client().GetChatClient("llama-tiny").CompleteChatAsync(messages, opts, Cancel)).Value.ContentTokenLogProbabilities.Select(t => t.Token).ToArray();
        opts = Greedy(16);
        opts.PresencePenalty = 2;
        var penalised = (await f.Client().GetChatClient("llama-tiny").CompleteChatAsync(messages, opts, Cancel)).Value;
        var distinct = penalised.ContentTokenLogProbabilities.Select(t => t.Token).ToArray();
        Assert.True(repeated.Distinct().Count() < repeated.Length, "the chat answer has no repeated token to penalise");
        Assert.Equal(distinct.Length, distinct.Distinct().Count());
        // and in process, IChatClient's ChatOptions carry them to the same answer
        using IChatClient local = new TemperChatClient(f.Model);
        var inProcess = await local.GetResponseAsync([new(ChatRole.User, "tell me a story")], new ChatOptions { MaxOutputTokens = 16, PresencePenalty = 2 }, Cancel);
        Assert.Equal(penalised.Content.Single().Text, inProcess.Text);

        foreach (var (field, value, message) in new (string, JsonNode, string)[]
        {
            ("logit_bias", new JsonObject { ["abc"] = 1 }, "'logit_bias' key 'abc' is not a token id"), ("logit_bias", new JsonObject { ["99999999"] = 1 }, "is not a token id of the vocabulary"),
            ("logit_bias", new JsonObject { ["5"] = 101 }, "'logit_bias' of token 5 must be in [-100, 100]"), ("logit_bias", 3, "'logit_bias' must be an object"),
            ("frequency_penalty", 2.5, "'frequency_penalty' must be in [-2, 2]"), ("presence_penalty", -3, "'presence_penalty' must be in [-2, 2]"),
            ("top_k", -2, "'top_k' must be >= 1, or 0 or -1 for off"), ("min_p", 1.5, "'min_p' must be in [0, 1]"), ("repetition_penalty", 0, "'repetition_penalty' must be > 0"),
        })
        {
            var bad = await Post("v1/completions", new JsonObject { ["model"] = "llama-tiny", ["prompt"] = "hi", [field] = value }.ToJsonString());
            Assert.Equal(HttpStatusCode.BadRequest, bad.Status);
            Assert.Contains(message, Message(bad));
        }
    }

    // lm-evaluation-harness scores text through /v1/completions: prompt [[token ids]], echo, logprobs 1,
    // max_tokens 1, then sums token_logprobs[ctxlen:-1] and calls the text greedy when each equals the
    // largest of its top_logprobs. Here every prompt position's value is the contiguous decoder's.
    [Fact]
    public async Task Echo_scores_the_prompt_as_lm_evaluation_harness_reads_it()
    {
        var ids = f.Model.Encode("The quick brown fox jumps over the lazy dog").ToArray();
        var reference = Temper.Serving.Tests.ServingFixtures.ReferenceLogprobs(ids);
        var body = new JsonObject
        {
            ["model"] = "llama-tiny", ["prompt"] = new JsonArray(new JsonArray(ids.Select(i => (JsonNode)i).ToArray())),
            ["max_tokens"] = 1, ["logprobs"] = 1, ["echo"] = true, ["temperature"] = 0, ["seed"] = 1234,
        };
        var r = await Post("v1/completions", body.ToJsonString());
        Assert.Equal(HttpStatusCode.OK, r.Status);
        var lp = r.Json!["choices"]![0]!["logprobs"]!;
        var tokenLogprobs = lp["token_logprobs"]!.AsArray();
        var top = lp["top_logprobs"]!.AsArray();
        Assert.Equal(ids.Length + 1, lp["tokens"]!.AsArray().Count);
        Assert.Null(tokenLogprobs[0]);
        Assert.Null(top[0]);
        bool greedy = true;
        for (int i = 1; i < ids.Length; i++)
        {
            double got = (double)tokenLogprobs[i]!;
            Assert.True(Math.Abs(got - reference[i - 1][ids[i]]) < 1e-4, $"prompt token {i}: {got} vs {reference[i - 1][ids[i]]}");
            double best = top[i]!.AsObject().Max(kv => (double)kv.Value!);
            Assert.True(best >= got - 1e-6);
            greedy &= got == best;
        }
        Assert.Equal(Enumerable.Range(1, ids.Length - 1).All(i => Sampler.ArgMax(reference[i - 1]) == ids[i]), greedy);

        // a string prompt with max_tokens 0 comes back as itself, every token scored, nothing generated
        body = new JsonObject { ["model"] = "llama-tiny", ["prompt"] = "Once upon a time", ["max_tokens"] = 0, ["logprobs"] = 0, ["echo"] = true };
        r = await Post("v1/completions", body.ToJsonString());
        Assert.Equal(HttpStatusCode.OK, r.Status);
        Assert.Equal("Once upon a time", (string?)r.Json!["choices"]![0]!["text"]);
        Assert.Equal(f.Model.Encode("Once upon a time").Count, r.Json["choices"]![0]!["logprobs"]!["token_logprobs"]!.AsArray().Count);
        Assert.Equal(0, (int)r.Json["usage"]!["completion_tokens"]!);

        body["stream"] = true;
        var streamed = await Post("v1/completions", body.ToJsonString());
        Assert.Equal(HttpStatusCode.BadRequest, streamed.Status);
        Assert.Contains("'echo' is not supported with 'stream'", Message(streamed));
        var noEcho = await Post("v1/completions", """{"model": "llama-tiny", "prompt": "hi", "max_tokens": 0}""");
        Assert.Equal(HttpStatusCode.BadRequest, noEcho.Status);
        Assert.Contains("max tokens must be >= 1", Message(noEcho));
    }

    // A batch of prompts (strings or token-id lists) is one serving request each: choice i x n + j is prompt
    // i's choice j, equal to what the prompt gives alone, whole or streamed; usage counts every prompt.
    [Fact]
    public async Task A_batch_of_prompts_answers_each_as_alone()
    {
        string[] prompts = ["Once upon a time", "The capital of France", "1 2 3 4"];
        async Task<JsonNode> Complete(JsonNode prompt, int n = 1, bool echo = false, bool stream = false)
        {
            var body = new JsonObject { ["model"] = "llama-tiny", ["prompt"] = prompt, ["max_tokens"] = 5, ["temperature"] = 0, ["n"] = n, ["logprobs"] = 0, ["echo"] = echo, ["stream"] = stream };
            var r = await Post("v1/completions", body.ToJsonString());
            Assert.Equal(HttpStatusCode.OK, r.Status);
            if (!stream) return r.Json!;
            var texts = new Dictionary<int, string>();
            foreach (var chunk in r.Text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1])
                foreach (var c in JsonNode.Parse(chunk["data: ".Length..])!["choices"]!.AsArray())
                    texts[(int)c!["index"]!] = texts.GetValueOrDefault((int)c["index"]!) + (string?)c["text"];
            return new JsonObject { ["choices"] = new JsonArray([.. texts.OrderBy(kv => kv.Key).Select(kv => (JsonNode)new JsonObject { ["index"] = kv.Key, ["text"] = kv.Value })]) };
        }
        var alone = new List<string>();
        foreach (var p in prompts) alone.Add((string)(await Complete(p))["choices"]![0]!["text"]!);
        Assert.True(alone.Distinct().Count() > 1, "the prompts' answers are too alike to tell a mix-up");

        var batch = await Complete(new JsonArray([.. prompts.Select(p => (JsonNode)p)]), n: 2);
        var choices = batch["choices"]!.AsArray();
        Assert.Equal(6, choices.Count);
        for (int i = 0; i < 6; i++)
        {
            Assert.Equal(i, (int)choices[i]!["index"]!);
            Assert.Equal(alone[i / 2], (string)choices[i]!["text"]!);
        }
        Assert.Equal(prompts.Sum(p => f.Model.Encode(p).Count), (int)batch["usage"]!["prompt_tokens"]!);
        Assert.Equal(30, (int)batch["usage"]!["completion_tokens"]!);

        var streamed = (await Complete(new JsonArray([.. prompts.Select(p => (JsonNode)p)]), stream: true))["choices"]!.AsArray();
        Assert.Equal(alone, streamed.Select(c => (string)c!["text"]!));

        // token-id lists with echo, as lm-evaluation-harness batches its scoring requests
        var ids = prompts.Select(p => f.Model.Encode(p).ToArray()).ToArray();
        var echoed = (await Complete(new JsonArray([.. ids.Select(x => (JsonNode)new JsonArray([.. x.Select(t => (JsonNode)t)]))]), echo: true))["choices"]!.AsArray();
        for (int i = 0; i < prompts.Length; i++)
        {
            var tokens = echoed[i]!["logprobs"]!["tokens"]!.AsArray();
            Assert.Equal(ids[i].Length + 5, tokens.Count);
            Assert.Equal(ids[i].Select(t => f.Model.Tokenizer.TokenToString(t)), tokens.Take(ids[i].Length).Select(t => (string)t!));
            var reference = Temper.Serving.Tests.ServingFixtures.ReferenceLogprobs(ids[i]);
            var lps = echoed[i]!["logprobs"]!["token_logprobs"]!.AsArray();
            for (int t = 1; t < ids[i].Length; t++) Assert.True(Math.Abs((double)lps[t]! - reference[t - 1][ids[i][t]]) < 1e-4, $"prompt {i} token {t}");
        }

        var many = await Post("v1/completions", new JsonObject { ["model"] = "llama-tiny", ["prompt"] = new JsonArray([.. Enumerable.Range(0, 600).Select(_ => (JsonNode)"x")]), ["n"] = 2 }.ToJsonString());
        Assert.Equal(HttpStatusCode.BadRequest, many.Status);
        Assert.Contains("600 prompts x n 2 ask for more than 1024 choices", Message(many));
        var bad = await Post("v1/completions", """{"model": "llama-tiny", "prompt": ["fine", 7]}""");
        Assert.Equal(HttpStatusCode.BadRequest, bad.Status);
        Assert.Contains("'prompt' must be a string, an array of token ids, or a non-empty list of either", Message(bad));
    }

    // /health answers 200; /metrics gives the engine's counters in Prometheus' text format, and a completion
    // moves them by what it computed.
    [Fact]
    public async Task Health_and_metrics_answer_and_the_counters_move()
    {
        Assert.Equal(HttpStatusCode.OK, (await f.Http.GetAsync(new Uri(f.Host.Address, "health"), Cancel)).StatusCode);
        async Task<Dictionary<string, long>> Metrics()
        {
            var r = await f.Http.GetAsync(new Uri(f.Host.Address, "metrics"), Cancel);
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.StartsWith("text/plain", r.Content.Headers.ContentType!.ToString());
            var lines = (await r.Content.ReadAsStringAsync(Cancel)).Split('\n', StringSplitOptions.RemoveEmptyEntries);
            var values = lines.Where(l => !l.StartsWith('#')).Select(l => l.Split(' ')).ToDictionary(p => p[0], p => long.Parse(p[1]));
            foreach (var name in values.Keys) Assert.Contains($"# TYPE {name} ", string.Join('\n', lines));
            return values;
        }
        var before = await Metrics();
        var body = new JsonObject { ["model"] = "llama-tiny", ["prompt"] = "Counting the tokens of a request", ["max_tokens"] = 7, ["temperature"] = 0 };
        Assert.Equal(HttpStatusCode.OK, (await Post("v1/completions", body.ToJsonString())).Status);
        var after = await Metrics();
        Assert.True(after["temper_generation_tokens_total"] - before["temper_generation_tokens_total"] >= 6); // 7 tokens: 6 decode steps after the prefill's
        Assert.True(after["temper_prompt_tokens_total"] > before["temper_prompt_tokens_total"]);
        Assert.True(after["temper_requests_finished_total"] > before["temper_requests_finished_total"]);
        Assert.Equal(128, after["temper_kv_blocks"]);
        Assert.InRange(after["temper_kv_blocks_free"], 0, 128);
    }

    // --api-key: /v1/ routes answer 401 without the bearer key (or with another), the official client with
    // the key is served, and /health stays open.
    [Fact]
    public async Task An_api_key_guards_the_v1_routes()
    {
        await using var guarded = await ServingHost.StartAsync(f.Model, "127.0.0.1", 0, apiKey: "s3cret");
        async Task<HttpStatusCode> Models(string? key)
        {
            using var req = new HttpRequestMessage(HttpMethod.Get, new Uri(guarded.Address, "v1/models"));
            if (key != null) req.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
            var r = await f.Http.SendAsync(req, Cancel);
            if (r.StatusCode == HttpStatusCode.Unauthorized) Assert.Contains("a valid API key is required", await r.Content.ReadAsStringAsync(Cancel));
            return r.StatusCode;
        }
        Assert.Equal(HttpStatusCode.Unauthorized, await Models(null));
        Assert.Equal(HttpStatusCode.Unauthorized, await Models("s3cre"));
        Assert.Equal(HttpStatusCode.OK, await Models("s3cret"));
        Assert.Equal(HttpStatusCode.OK, (await f.Http.GetAsync(new Uri(guarded.Address, "health"), Cancel)).StatusCode);
        var client = LoopbackServer.OpenAi(guarded, "s3cret");
        var answer = await client.GetChatClient("llama-tiny").CompleteChatAsync([new UserChatMessage("hi")], Greedy(3), Cancel);
        Assert.Equal(3, answer.Value.Usage.OutputTokenCount);
        var refused = await Assert.ThrowsAsync<ClientResultException>(() => LoopbackServer.OpenAi(guarded, "wrong")
            .GetChatClient("llama-tiny").CompleteChatAsync([new UserChatMessage("hi")], Greedy(3), Cancel));
        Assert.Equal(401, refused.Status);
    }

    // vLLM's /tokenize and /detokenize: the ids a completion or chat request would run, and back to text.
    [Fact]
    public async Task Tokenize_and_detokenize_round_trip()
    {
        var r = await Post("tokenize", """{"model": "llama-tiny", "prompt": "Once upon a time"}""");
        Assert.Equal(HttpStatusCode.OK, r.Status);
        var ids = r.Json!["tokens"]!.AsArray().Select(t => (int)t!).ToArray();
        Assert.Equal(f.Model.Encode("Once upon a time"), ids);
        Assert.Equal(ids.Length, (int)r.Json["count"]!);
        Assert.Equal(200, (int)r.Json["max_model_len"]!);
        var chat = await Post("tokenize", """{"model": "a0", "messages": [{"role": "user", "content": "hi"}]}""");
        Assert.Equal(f.Model.EncodeChat(JsonNode.Parse("""[{"role": "user", "content": "hi"}]""")!.AsArray()), chat.Json!["tokens"]!.AsArray().Select(t => (int)t!));

        var back = await Post("detokenize", new JsonObject { ["model"] = "llama-tiny", ["tokens"] = new JsonArray([.. ids.Select(i => (JsonNode)i)]) }.ToJsonString());
        Assert.Equal(HttpStatusCode.OK, back.Status);
        Assert.Equal(f.Model.Tokenizer.Decode(ids, skipSpecialTokens: false), (string?)back.Json!["prompt"]);
        Assert.Contains("Once upon a time", (string?)back.Json!["prompt"]);

        var bad = await Post("detokenize", """{"model": "llama-tiny", "tokens": [1, 999999]}""");
        Assert.Equal(HttpStatusCode.BadRequest, bad.Status);
        Assert.Contains("999999 is not a token id of the vocabulary", Message(bad));
        Assert.Equal(HttpStatusCode.NotFound, (await Post("tokenize", """{"model": "gpt-9", "prompt": "x"}""")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("tokenize", """{"model": "llama-tiny"}""")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("tokenize", "{not json")).Status);
    }

    // vLLM's chat rendering fields: add_generation_prompt false, continue_final_message (the prompt ends inside
    // the last message) and chat_template_kwargs (passed to the template; must be an object), on /tokenize and chat.
    [Fact]
    public async Task Chat_rendering_fields_shape_the_prompt()
    {
        const string messages = """[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Once upon"}]""";
        async Task<int[]> Ids(string fields) =>
            (await Post("tokenize", $$"""{"model": "llama-tiny", "messages": {{messages}}{{fields}}}""")).Json!["tokens"]!.AsArray().Select(t => (int)t!).ToArray();
        var msgs = JsonNode.Parse(messages)!.AsArray();
        var tpl = f.Model.Template!;
        Assert.Equal(f.Model.Encode(tpl.Render(msgs, addGenerationPrompt: true)), await Ids(""));
        Assert.Equal(f.Model.Encode(tpl.Render(msgs, addGenerationPrompt: false)), await Ids(""", "add_generation_prompt": false"""));
        string rendered = tpl.Render(msgs, addGenerationPrompt: false);
        var continued = await Ids(""", "add_generation_prompt": false, "continue_final_message": true, "chat_template_kwargs": {"enable_thinking": false}""");
        Assert.Equal(f.Model.Encode(rendered[..(rendered.LastIndexOf("Once upon", StringComparison.Ordinal) + "Once upon".Length)]), continued);
        Assert.EndsWith("Once upon", f.Model.Tokenizer.Decode(continued, skipSpecialTokens: false));

        var both = await Post("v1/chat/completions", $$"""{"model": "llama-tiny", "messages": {{messages}}, "continue_final_message": true, "max_tokens": 2}""");
        Assert.Equal(HttpStatusCode.BadRequest, both.Status);
        Assert.Contains("'continue_final_message' needs 'add_generation_prompt': false", Message(both));
        var badKwargs = await Post("v1/chat/completions", $$"""{"model": "llama-tiny", "messages": {{messages}}, "chat_template_kwargs": [1], "max_tokens": 2}""");
        Assert.Equal(HttpStatusCode.BadRequest, badKwargs.Status);
        Assert.Contains("'chat_template_kwargs' must be a JSON object", Message(badKwargs));
        var ok = await Post("v1/chat/completions", $$"""{"model": "llama-tiny", "messages": {{messages}}, "add_generation_prompt": false, "continue_final_message": true, "chat_template_kwargs": {"enable_thinking": false}, "max_tokens": 2}""");
        Assert.Equal(HttpStatusCode.OK, ok.Status);

        // In process: the IChatClient takes chat_template_kwargs in ChatOptions.AdditionalProperties (an object).
        using IChatClient local = new TemperChatClient(f.Model);
        var withKwargs = new ChatOptions { MaxOutputTokens = 2, AdditionalProperties = new() { ["chat_template_kwargs"] = new Dictionary<string, object?> { ["enable_thinking"] = false } } };
        Assert.Equal((await local.GetResponseAsync([new(ChatRole.User, "hi")], new ChatOptions { MaxOutputTokens = 2 }, Cancel)).Text,
            (await local.GetResponseAsync([new(ChatRole.User, "hi")], withKwargs, Cancel)).Text);
        var notAnObject = new ChatOptions { MaxOutputTokens = 2, AdditionalProperties = new() { ["chat_template_kwargs"] = 3 } };
        var e = await Assert.ThrowsAsync<Temper.Core.TemperException>(() => local.GetResponseAsync([new(ChatRole.User, "hi")], notAnObject, Cancel));
        Assert.Equal("chat_template_kwargs must be a JSON object of template variables", e.Message);
    }

    [Fact]
    public async Task Bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving()
    {
        var badJson = await Post("v1/chat/completions", "{\"model\": \"llama-tiny\", \"messages\": [");
        Assert.Equal(HttpStatusCode.BadRequest, badJson.Status);
        Assert.Contains("not valid JSON", Message(badJson));

        var unknown = await Post("v1/chat/completions", """{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}""");
        Assert.Equal(HttpStatusCode.NotFound, unknown.Status);
        Assert.Contains("'gpt-9' does not exist", Message(unknown));
        var ex = await Assert.ThrowsAsync<ClientResultException>(() => f.Client().GetChatClient("gpt-9").CompleteChatAsync([new UserChatMessage("hi")], cancellationToken: Cancel));
        Assert.Equal(404, ex.Status);

        var tooLong = await Post("v1/completions", """{"model": "llama-tiny", "prompt": "hi", "max_tokens": 5000}""");
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.Status);
        Assert.Contains("'max_tokens' or 'max_completion_tokens' is too large: 5000. This model's maximum context length is 200 tokens", Message(tooLong));

        var badField = await Post("v1/chat/completions", """{"model": "llama-tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}""");
        Assert.Equal(HttpStatusCode.BadRequest, badField.Status);
        Assert.Contains("'temperature' must be a number", Message(badField));

        foreach (var (route, extra, message) in new[]
        {
            ("v1/chat/completions", "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]", "tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set"),
            ("v1/chat/completions", "\"functions\": [{\"name\": \"f\"}]", "'functions' (the deprecated form) is not supported"),
            ("v1/chat/completions", "\"response_format\": {\"type\": \"yaml\"}", "'response_format' type 'yaml' is not supported"),
            ("v1/completions", "\"suffix\": \"end\"", "'suffix' (fill-in-the-middle) is not supported"),
            ("v1/completions", "\"best_of\": 3", "'best_of' > 1 is not supported"),
        })
        {
            string input = route.Contains("chat") ? "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]" : "\"prompt\": \"hi\"";
            var refused = await Post(route, $"{{\"model\": \"llama-tiny\", {input}, {extra}}}");
            Assert.Equal(HttpStatusCode.BadRequest, refused.Status);
            Assert.Contains(message, Message(refused));
        }
        Assert.Equal(HttpStatusCode.OK, (await Post("v1/chat/completions", """{"model": "llama-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "tools": [], "response_format": {"type": "text"}}""")).Status);

        var huge = await Post("v1/completions", new JsonObject { ["model"] = "llama-tiny", ["prompt"] = new string('x', 100_000) }.ToJsonString());
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, huge.Status);

        var ok = await f.Client().GetChatClient("llama-tiny").CompleteChatAsync([new UserChatMessage("still there?")], Greedy(3), Cancel);
        Assert.Equal(3, ok.Value.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task Runtime_lora_routes_answer_404_unless_allowed()
    {
        var body = new JsonObject { ["lora_name"] = "rt", ["lora_path"] = ServingFixtures.Adapter(2) };
        var load = await Post("v1/load_lora_adapter", body.ToJsonString());
        Assert.Equal(HttpStatusCode.NotFound, load.Status);
        Assert.Contains("--allow-runtime-lora", Message(load));
        Assert.Equal(HttpStatusCode.NotFound, (await Post("v1/unload_lora_adapter", """{"lora_name": "a0"}""")).Status);
        Assert.Equal(["llama-tiny", "a0", "a1"], f.Model.ModelIds);   // nothing changed
    }

    [Fact]
    public async Task Concurrent_streaming_clients_get_their_own_tokens()
    {
        const int clients = 8, tokens = 16;
        // Seeded sampling: the tiny random model's greedy answers are nearly all alike, sampled ones are not.
        static ChatCompletionOptions Sampled(int i) => new() { Temperature = 1, Seed = 100 + i, MaxOutputTokenCount = tokens };
        var prompts = Enumerable.Range(0, clients).Select(i => $"Request {i}: count to {i + 3} please").ToArray();
        // What each prompt gives alone, one after the other.
        var alone = new string[clients];
        for (int i = 0; i < clients; i++)
            alone[i] = (await f.Client().GetChatClient(i % 3 == 0 ? "a0" : "llama-tiny").CompleteChatAsync([new UserChatMessage(prompts[i])], Sampled(i), Cancel)).Value.Content.Single().Text;

        Assert.True(alone.Distinct().Count() >= clients / 2, "the prompts' answers are too alike to tell a mix-up"); // so a mix-up would show
        var clock = Stopwatch.StartNew();
        var runs = Enumerable.Range(0, clients).Select(async i =>
        {
            var chat = f.Client().GetChatClient(i % 3 == 0 ? "a0" : "llama-tiny");
            var text = new StringBuilder();
            var times = new List<double>();
            double start = clock.Elapsed.TotalMilliseconds;
            await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage(prompts[i])], Sampled(i), Cancel))
                foreach (var part in u.ContentUpdate)
                {
                    text.Append(part.Text);
                    times.Add(clock.Elapsed.TotalMilliseconds - start);
                }
            return (Text: text.ToString(), Times: times);
        }).ToArray();
        var results = await Task.WhenAll(runs);
        Assert.True(clock.Elapsed.TotalSeconds < 60, "the load test took over a minute");
        for (int i = 0; i < clients; i++) Assert.Equal(alone[i], results[i].Text);
        var ttft = results.Where(r => r.Times.Count > 0).Select(r => r.Times[0]).Order().ToArray();
        var itl = results.SelectMany(r => r.Times.Zip(r.Times.Skip(1), (a, b) => b - a)).Order().ToArray();
        TestContext.Current.SendDiagnosticMessage($"{clients} clients x {tokens} tokens in {clock.Elapsed.TotalMilliseconds:F0} ms; " +
            $"TTFT p50 {ttft[ttft.Length / 2]:F1} ms; inter-token p50 {itl[itl.Length / 2]:F2} ms, p99 {itl[(int)(itl.Length * 0.99)]:F2} ms");
    }

    private Task<Reply> Post(string path, string body) => f.Post(path, body, Cancel);

    private static string Message(Reply r) => r.Message;
}
