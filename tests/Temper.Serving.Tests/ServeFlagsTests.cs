// vLLM's `vllm serve` flags as `temper serve` takes them, on a server driven by the official OpenAI client and raw HTTP:
// --served-model-name (every name selects the base; answers report the first, /v1/models lists them all, as vLLM's),
// --max-model-len (prompt + max_tokens over it is a 400 in vLLM's words; above max_position_embeddings, the KV pool
// or a sliding window refused at startup), --max-num-seqs (the engine never runs more sequences at once, a request's n choices counted, and
// every request still gets the reference's tokens; n above it served as single-choice sequences with the tokens each
// choice's seed gives when all fit), --chat-template (an inline template replacing the model's, escapes
// decoded; a file; one that does not parse or is neither refused), --seed (sampled requests without a seed repeat, over
// HTTP and through the IChatClient) and --max-logprobs (more logprobs / top_logprobs is a 400 naming the field); and the
// IChatClient taking generation_config.json's request defaults as the server does.
using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Text;
using Temper.Serving.Http;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class ServeFlagsServer : IAsyncLifetime
{
    /// <summary>An inline template as a shell passes it: its \n is two characters, which vLLM decodes to a newline.</summary>
    public const string InlineTemplate = @"{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}";

    public LanguageModel Lm { get; private set; } = null!;
    /// <summary>Names tiny and tiny-alias, adapter a0, max model len 48 (of a 256-position pool), max logprobs 3, seed 7, the inline template.</summary>
    public ServedModel Model { get; private set; } = null!;
    public ServingHost Host { get; private set; } = null!;
    public HttpClient Http { get; } = new() { Timeout = TimeSpan.FromSeconds(60) };

    public async ValueTask InitializeAsync()
    {
        Lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(2));
        Lm.Template = ChatTemplate.LoadFromModelDir(ServingFixtures.Model, InlineTemplate);
        Model = new ServedModel(Lm, [("a0", ServingFixtures.Adapter(0))], new ServingOptions { BlockSize = 8, Blocks = 32, MaxSequenceLength = 48, MaxLogprobs = 3 },
            ["tiny", "tiny-alias"]) { DefaultSeed = 7 };
        Host = await ServingHost.StartAsync(Model, "127.0.0.1", 0);
    }

    public Task<Reply> Post(string path, JsonObject body, CancellationToken cancel) => LoopbackServer.Post(Http, Host, path, body.ToJsonString(), cancel);

    public ChatClient Chat(string model) => LoopbackServer.OpenAi(Host).GetChatClient(model);

    public async ValueTask DisposeAsync()
    {
        await Host.DisposeAsync();
        Model.Dispose();
        Lm.Dispose();
        Http.Dispose();
    }
}

public sealed class ServeFlagsTests(ServeFlagsServer f) : IClassFixture<ServeFlagsServer>
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;
    private static readonly List<OpenAI.Chat.ChatMessage> Hi = [new UserChatMessage("hi")];

    private static JsonObject Completion(JsonNode prompt, int maxTokens, float temperature = 0) => new()
    {
        ["model"] = "tiny", ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["temperature"] = temperature, ["ignore_eos"] = true,
    };

    private static JsonArray Ids(int n) => new([.. Enumerable.Range(0, n).Select(i => (JsonNode)(3 + i * 7 % 500))]);

    [Fact]
    public async Task Every_served_name_selects_the_base_and_answers_report_the_first()
    {
        var raw = JsonNode.Parse(await f.Http.GetStringAsync(new Uri(f.Host.Address, "v1/models"), Cancel))!["data"]!.AsArray();
        Assert.Equal(["tiny", "tiny-alias", "a0"], raw.Select(x => (string?)x!["id"]));
        Assert.Equal([null, null, "tiny"], raw.Select(x => (string?)x!["parent"]));
        var greedy = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 4 };
        var byFirst = (await f.Chat("tiny").CompleteChatAsync(Hi, greedy, Cancel)).Value;
        var byAlias = (await f.Chat("tiny-alias").CompleteChatAsync(Hi, greedy, Cancel)).Value;
        Assert.Equal(("tiny", "tiny"), (byFirst.Model, byAlias.Model));
        Assert.Equal(byFirst.Content[0].Text, byAlias.Content[0].Text);
        await foreach (var u in f.Chat("tiny-alias").CompleteChatStreamingAsync(Hi, greedy, Cancel)) Assert.Equal("tiny", u.Model);
        var adapter = (await f.Chat("a0").CompleteChatAsync(Hi, greedy, Cancel)).Value;
        Assert.Equal("a0", adapter.Model);
        using IChatClient local = new TemperChatClient(f.Model);
        var inProcess = await local.GetResponseAsync([new(ChatRole.User, "hi")], new ChatOptions { ModelId = "tiny-alias", MaxOutputTokens = 4 }, Cancel);
        Assert.Equal(("tiny", byFirst.Content[0].Text), (inProcess.ModelId, inProcess.Text));

        var options = new ServingOptions { BlockSize = 8, Blocks = 8 };
        Assert.Equal("--adapter tiny-alias: the name is the base model's",
            Assert.Throws<TemperException>(() => new ServedModel(f.Lm, [("tiny-alias", ServingFixtures.Adapter(0))], options, ["tiny", "tiny-alias"])).Message);
        Assert.Equal("--served-model-name: 'x' is given twice", Assert.Throws<TemperException>(() => new ServedModel(f.Lm, [], options, ["x", "y", "x"])).Message);
    }

    [Fact]
    public async Task Max_model_len_bounds_prompt_plus_max_tokens_with_vllms_message()
    {
        var raw = JsonNode.Parse(await f.Http.GetStringAsync(new Uri(f.Host.Address, "v1/models"), Cancel))!["data"]!.AsArray();
        Assert.All(raw, x => Assert.Equal(48, (int)x!["max_model_len"]!));
        var fits = await f.Post("v1/completions", Completion(Ids(40), 8), Cancel);
        Assert.True(fits.Status == HttpStatusCode.OK, fits.Text);
        Assert.Equal(8, (int)fits.Json!["usage"]!["completion_tokens"]!);
        var over = await f.Post("v1/completions", Completion(Ids(40), 9), Cancel);
        Assert.Equal(HttpStatusCode.BadRequest, over.Status);
        Assert.Equal("'max_tokens' or 'max_completion_tokens' is too large: 9. This model's maximum context length is 48 tokens and your request has 40 input tokens (9 > 48 - 40).", over.Message);
        var longPrompt = await f.Post("v1/completions", Completion(Ids(49), 1), Cancel);
        Assert.Equal(HttpStatusCode.BadRequest, longPrompt.Status);
        Assert.Equal("This model's maximum context length is 48 tokens. However, your request has 49 input tokens. Please reduce the length of the input messages.", longPrompt.Message);
        var chat = await Assert.ThrowsAsync<ClientResultException>(() => f.Chat("tiny").CompleteChatAsync(Hi, new ChatCompletionOptions { MaxOutputTokenCount = 100 }, Cancel));
        Assert.Equal(400, chat.Status);
        Assert.Contains("is too large: 100. This model's maximum context length is 48 tokens", chat.Message);

        // At startup: above the model's 256 positions, or above what the KV pool holds; left out, the model's, within the pool (as before).
        Assert.Equal($"--max-model-len 257 is greater than the model's max_position_embeddings 256 ({Path.Combine(ServingFixtures.Model, "config.json")})",
            Assert.Throws<TemperException>(() => new ServedModel(f.Lm, [], new ServingOptions { BlockSize = 8, Blocks = 64, MaxSequenceLength = 257 })).Message);
        Assert.Equal("--max-model-len 200 is more than the KV cache holds: 128 positions (16 blocks of 8); raise --kv-blocks or lower --max-model-len",
            Assert.Throws<TemperException>(() => new ServedModel(f.Lm, [], new ServingOptions { BlockSize = 8, Blocks = 16, MaxSequenceLength = 200 })).Message);
        using var byDefault = new ServedModel(f.Lm, [], new ServingOptions { BlockSize = 8, Blocks = 16 });
        Assert.Equal(128, byDefault.Engine.MaxSequenceLength);

        // A sliding window the paged cache does not slide bounds it too (the same model with a 32-token window).
        string dir = Path.Combine(Path.GetTempPath(), $"temper-window-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            foreach (var name in new[] { "model.safetensors", "tokenizer.json", "tokenizer_config.json" }) File.Copy(Path.Combine(ServingFixtures.Model, name), Path.Combine(dir, name));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(ServingFixtures.Model, "config.json")))!.AsObject();
            (config["use_sliding_window"], config["sliding_window"]) = (true, 32);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            using var windowed = LanguageModel.Load(dir, new CpuBackend(1));
            Assert.Equal($"--max-model-len 48 is greater than the model's sliding_window 32 ({Path.Combine(dir, "config.json")}), which the paged KV cache does not slide",
                Assert.Throws<TemperException>(() => new ServedModel(windowed, [], new ServingOptions { BlockSize = 8, Blocks = 16, MaxSequenceLength = 48 })).Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task The_default_seed_repeats_sampled_requests_that_give_none()
    {
        async Task<string> Sample(int? seed)
        {
            var body = Completion("Once upon a time", 10, temperature: 1);
            if (seed != null) body["seed"] = seed;
            var r = await f.Post("v1/completions", body, Cancel);
            Assert.True(r.Status == HttpStatusCode.OK, r.Text);
            return (string)r.Json!["choices"]![0]!["text"]!;
        }
        string first = await Sample(null);
        Assert.Equal(first, await Sample(null));
        Assert.Equal(first, await Sample(7));     // the server's --seed
        Assert.NotEqual(first, await Sample(8));  // a request's own seed still rules

        // The IChatClient samples with the same default seed: the server's chat answer.
        var server = (await f.Chat("tiny").CompleteChatAsync(Hi, new ChatCompletionOptions { Temperature = 1, MaxOutputTokenCount = 10 }, Cancel)).Value.Content[0].Text;
        using IChatClient local = new TemperChatClient(f.Model);
        var inProcess = await local.GetResponseAsync([new(ChatRole.User, "hi")], new ChatOptions { Temperature = 1, MaxOutputTokens = 10 }, Cancel);
        Assert.Equal(server, inProcess.Text);
    }

    [Fact]
    public async Task Max_logprobs_refuses_more_alternatives_naming_the_field()
    {
        var three = Completion("Once upon a time", 2);
        three["logprobs"] = 3;
        var ok = await f.Post("v1/completions", three, Cancel);
        Assert.True(ok.Status == HttpStatusCode.OK, ok.Text);
        Assert.Equal(3, ok.Json!["choices"]![0]!["logprobs"]!["top_logprobs"]![0]!.AsObject().Count);
        three["logprobs"] = 4;
        var over = await f.Post("v1/completions", three, Cancel);
        Assert.Equal(HttpStatusCode.BadRequest, over.Status);
        Assert.Equal("'logprobs': requested sample logprobs of 4, which is greater than max allowed: 3", over.Message);
        var chat = await Assert.ThrowsAsync<ClientResultException>(() => f.Chat("tiny").CompleteChatAsync(Hi,
            new ChatCompletionOptions { MaxOutputTokenCount = 2, IncludeLogProbabilities = true, TopLogProbabilityCount = 4 }, Cancel));
        Assert.Equal(400, chat.Status);
        Assert.Contains("'top_logprobs': requested sample logprobs of 4, which is greater than max allowed: 3", chat.Message);

        // The engine takes the limit, not a fixed 20: more than 20 when asked for, and -1 is the vocabulary.
        using var wide = new ServingEngine(f.Lm.Decoder, new ServingOptions { BlockSize = 8, Blocks = 8, MaxLogprobs = 25 });
        Assert.Equal("Requested prompt logprobs of 26, which is greater than max allowed: 25",
            Assert.Throws<TemperException>(() => wide.Submit(new ServingRequest { PromptIds = [5, 6], MaxNewTokens = 1, PromptLogprobs = 26 })).Message);
        var h = wide.Submit(new ServingRequest { PromptIds = [5, 6], MaxNewTokens = 1, TopLogprobs = 25 });
        Assert.True(wide.Step());
        Assert.True(h.Events.TryRead(out var e));
        Assert.Equal(25, e.Top!.Count);
        using var vocab = new ServingEngine(f.Lm.Decoder, new ServingOptions { BlockSize = 8, Blocks = 8, MaxLogprobs = -1 });
        Assert.Equal(512, vocab.MaxLogprobs);
    }

    [Fact]
    public void Max_num_seqs_bounds_the_running_batch_and_every_request_still_finishes()
    {
        // Five requests, the first of n = 3 choices: seven sequences, which a step's budget could all take at once (under
        // max_num_seqs 2 the first is fanned out into three sequences of one choice each).
        var prompts = Enumerable.Range(0, 5).Select(i => Enumerable.Range(0, 4 + i).Select(j => 3 + (i * 31 + j * 17) % 500).ToArray()).ToArray();
        (int MostAtOnce, List<ChoiceResult>[] Results) Run(int maxRunning)
        {
            using var e = new ServingEngine(f.Lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = 64, MaxRunning = maxRunning });
            var handles = prompts.Select((p, i) => e.Submit(new ServingRequest { PromptIds = p, MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0, N = i == 0 ? 3 : 1 })).ToArray();
            var tokens = handles.Select(h => new Dictionary<int, (List<int> Ids, List<float> Logprobs, ServingFinish Finish)>()).ToArray();
            int most = 0;
            for (int step = 0; handles.Any(h => !h.Events.Completion.IsCompleted); step++)
            {
                Assert.True(step < 200, "the engine stopped making progress");
                e.Step();
                int emitting = 0; // the sequences that made a token this step, beside those still running after it
                for (int i = 0; i < handles.Length; i++)
                    while (handles[i].Events.TryRead(out var ev))
                    {
                        if (!tokens[i].TryGetValue(ev.Choice, out var c)) tokens[i][ev.Choice] = c = ([], [], ServingFinish.Length);
                        if (ev.Token >= 0)
                        {
                            c.Ids.Add(ev.Token);
                            c.Logprobs.Add(ev.Logprob);
                            emitting++;
                        }
                        if (ev.Finish is { } fin) tokens[i][ev.Choice] = (c.Ids, c.Logprobs, fin);
                    }
                most = Math.Max(most, Math.Max(emitting, e.Stats.Running));
            }
            return (most, tokens.Select(t => t.OrderBy(kv => kv.Key).Select(kv => new ChoiceResult(kv.Key, kv.Value.Ids, kv.Value.Logprobs, kv.Value.Finish)).ToList()).ToArray());
        }
        Assert.True(Run(64).MostAtOnce > 2, "without the limit the batch never held more than 2: the check below could not fail");
        var (mostAtOnce, results) = Run(2);
        Assert.Equal(2, mostAtOnce);
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(i == 0 ? 3 : 1, results[i].Count);
            foreach (var c in results[i])
            {
                Assert.Equal((6, ServingFinish.Length), (c.Tokens.Count, c.Finish));
                ServingFixtures.AssertMatchesReference(prompts[i], c, what: $"request {i} choice {c.Choice}");
            }
        }
    }

    [Fact]
    public async Task More_choices_than_max_num_seqs_are_served_with_the_tokens_their_seed_gives_when_they_fit()
    {
        // n = 5 sampled choices (and a greedy request beside them): under max_num_seqs 2 the choices run as sequences of one
        // choice each, admitted as seats free; each keeps its choice's seed stream, so it gives the tokens it gives when
        // all five fit (forked after one prefill).
        int[] prompt = [17, 99, 260, 31, 7, 400, 3];
        async Task<(List<ChoiceResult> Sampled, List<ChoiceResult> Greedy, int MostAtOnce)> Run(int maxRunning)
        {
            using var e = new ServingEngine(f.Lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = 64, MaxRunning = maxRunning });
            var sampled = e.Submit(new ServingRequest
            {
                PromptIds = prompt, MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0, N = 5,
                Sampling = new SamplingOptions { Greedy = false, Temperature = 1.5f, Seed = 11 },
            });
            var greedy = e.Submit(new ServingRequest { PromptIds = prompt[..4], MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0 });
            int most = 0;
            for (int step = 0; e.Step(); step++)
            {
                Assert.True(step < 200, "the engine stopped making progress");
                most = Math.Max(most, e.Stats.Running);
            }
            return ([.. (await sampled.CollectAsync(Cancel)).OrderBy(c => c.Choice)], [.. await greedy.CollectAsync(Cancel)], most);
        }
        var (wide, wideGreedy, wideMost) = await Run(64);
        Assert.Equal(6, wideMost);
        var (narrow, narrowGreedy, narrowMost) = await Run(2);
        Assert.True(narrowMost <= 2, $"{narrowMost} sequences ran at once under max_num_seqs 2");
        Assert.Equal(5, narrow.Count);
        Assert.True(wide.Select(c => string.Join(",", c.Tokens)).Distinct().Count() >= 4, "the choices' seed streams do not differ: the check below could not fail");
        for (int c = 0; c < 5; c++)
        {
            Assert.Equal(c, narrow[c].Choice);
            Assert.Equal(wide[c].Tokens, narrow[c].Tokens);
            Assert.Equal(ServingFinish.Length, narrow[c].Finish);
        }
        Assert.Equal(wideGreedy[0].Tokens, narrowGreedy[0].Tokens);
        ServingFixtures.AssertMatchesReference(prompt[..4], narrowGreedy[0], what: "the greedy request beside the fanned-out one");
    }

    [Fact]
    public async Task A_chat_template_replaces_the_models_and_one_that_does_not_parse_is_refused()
    {
        var body = new JsonObject { ["model"] = "tiny", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }) };
        var r = await f.Post("tokenize", body, Cancel);
        Assert.True(r.Status == HttpStatusCode.OK, r.Text);
        Assert.Equal(f.Model.Encode("[user] hi\n[assistant]"), r.Json!["tokens"]!.AsArray().Select(t => (int)t!));

        string dir = ServingFixtures.Model, file = Path.Combine(Path.GetTempPath(), $"temper-template-{Guid.NewGuid():N}.jinja");
        try
        {
            File.WriteAllText(file, "{{ bos_token }}{% for m in messages %}{{ m.content }}|{% endfor %}");
            var fromFile = ChatTemplate.LoadFromModelDir(dir, file)!;
            Assert.Equal("<|im_start|>a|b|", fromFile.Render(new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "a" }, new JsonObject { ["role"] = "assistant", ["content"] = "b" })));
            File.WriteAllText(file, "{% for m in messages %}\n{{ m.content }\n{% endfor %}");
            Assert.StartsWith(file + ":2: ", Assert.Throws<TemperException>(() => ChatTemplate.LoadFromModelDir(dir, file)).Message);
        }
        finally
        {
            File.Delete(file);
        }
        Assert.StartsWith("--chat-template:1: ", Assert.Throws<TemperException>(() => ChatTemplate.LoadFromModelDir(dir, "{% if %}")).Message);
        Assert.Equal("--chat-template 'missing.jinja': no such file, and no inline template either (it has no '{{' or '{%')",
            Assert.Throws<TemperException>(() => ChatTemplate.LoadFromModelDir(dir, "missing.jinja")).Message);
    }

    [Fact]
    public async Task The_IChatClient_takes_generation_config_defaults_as_the_server_does()
    {
        var qwenLike = new GenerationConfig { DoSample = true, Temperature = 0.7f, TopP = 0.8f, TopK = 20, RepetitionPenalty = 1.05f, MaxNewTokens = 9 };
        using var served = new ServedModel(f.Lm, [], new ServingOptions { BlockSize = 8, Blocks = 32 }) { GenerationDefaults = qwenLike, DefaultSeed = 3 };
        await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0);
        using IChatClient local = new TemperChatClient(served);
        var unset = await local.GetResponseAsync([new(ChatRole.User, "hi")], cancellationToken: Cancel);
        Assert.Equal(9, unset.Usage!.OutputTokenCount);   // max_new_tokens, not the 256 of a client without defaults
        // The file's sampling fields, given explicitly, give the same answer; the greedy one differs.
        var explicitOptions = new ChatOptions { Temperature = 0.7f, TopP = 0.8f, TopK = 20, MaxOutputTokens = 9, Seed = 3 };
        Assert.Equal(unset.Text, (await local.GetResponseAsync([new(ChatRole.User, "hi")], explicitOptions, Cancel)).Text);
        Assert.NotEqual(unset.Text, (await local.GetResponseAsync([new(ChatRole.User, "hi")], new ChatOptions { Temperature = 0, MaxOutputTokens = 9 }, Cancel)).Text);
        // And the server, given no fields either, answers the same.
        var client = LoopbackServer.OpenAi(host).GetChatClient(served.BaseName);
        Assert.Equal(unset.Text, (await client.CompleteChatAsync(Hi, cancellationToken: Cancel)).Value.Content[0].Text);
    }
}
