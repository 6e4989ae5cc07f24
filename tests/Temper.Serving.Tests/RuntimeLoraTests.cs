// Runtime LoRA updating (vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter, temper serve
// --allow-runtime-lora). In the engine, stepped by hand: unloading an adapter while requests run on it
// and on a later adapter (whose index shifts down), then loading another that takes the freed index,
// ends the unloaded adapter's request with an error after tokens that are its own, and gives the other
// request exactly its own adapter's tokens; a name loaded again finds none of the old adapter's K/V in
// the prefix cache. Over HTTP: a loaded adapter is listed and answers as the same folder served from
// startup, an unloaded one is gone (404 for requests and for a second unload), bad loads are 400s naming
// the folder and change nothing, and a stream on an adapter being unloaded ends with an error chunk.
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using OpenAI.Chat;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class RuntimeLoraServerFixture : ServerFixture
{
    protected override bool AllowRuntimeLora => true;
}

public sealed class RuntimeLoraTests(RuntimeLoraServerFixture f) : IClassFixture<RuntimeLoraServerFixture>
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    private static ServingRequest Greedy(int[] prompt, int tokens, string adapter) =>
        new() { PromptIds = prompt, MaxNewTokens = tokens, IgnoreEos = true, TopLogprobs = 0, Adapter = adapter };

    private static string Load(string name, string dir) => new JsonObject { ["lora_name"] = name, ["lora_path"] = dir }.ToJsonString();

    private static string Unload(string name) => new JsonObject { ["lora_name"] = name, ["lora_int_id"] = 7 }.ToJsonString();

    [Fact]
    public async Task Unloading_mid_stream_ends_that_adapters_requests_and_keeps_the_others_on_their_own()
    {
        var be = new CpuBackend(1);
        using var lm = LanguageModel.Load(ServingFixtures.Model, be);
        using var stack = new AdapterStack(lm.Weights, be);
        stack.Add("a0", LoraAdapter.Load(ServingFixtures.Adapter(0)));
        stack.Add("x", LoraAdapter.Load(ServingFixtures.Adapter(2)));
        stack.Add("z", LoraAdapter.Load(ServingFixtures.Adapter(3)));
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 96, MaxBatchTokens = 32 }, stack);
        var rng = new Random(11);
        var prompt = Enumerable.Range(0, 9).Select(_ => rng.Next(3, 512)).ToArray();
        var onX = e.Submit(Greedy(prompt, 12, "x"));
        var onZ = e.Submit(Greedy(prompt, 12, "z"));
        for (int i = 0; i < 4; i++) Assert.True(e.Step());      // the prompts (and a first token), then 3 tokens each
        // x (index 1) goes; z shifts from index 2 to 1; y comes in at index 2, z's old index.
        e.RemoveAdapter("x");
        var y = LoraAdapter.Load(ServingFixtures.Adapter(1));
        e.AddAdapter("y", y);
        Assert.Equal(["a0", "z", "y"], e.AdapterNames);
        Assert.Throws<TemperException>(() => e.Submit(Greedy(prompt, 4, "x")));
        var onY = e.Submit(Greedy(prompt, 6, "y"));
        while (e.Step()) { }

        var xTokens = new List<int>();
        var xLogprobs = new List<float>();
        StreamEvent? last = null;
        await foreach (var ev in onX.Events.ReadAllAsync(Cancel))
        {
            if (ev.Token >= 0)
            {
                xTokens.Add(ev.Token);
                xLogprobs.Add(ev.Logprob);
            }
            last = ev;
        }
        Assert.Equal(ServingFinish.Error, last!.Finish);
        Assert.Contains("'x' was unloaded", last.Error);
        Assert.Equal(4, xTokens.Count);                          // the prompt step samples the first
        ServingFixtures.AssertMatchesReference(prompt, new ChoiceResult(0, xTokens, xLogprobs, ServingFinish.Error), ServingFixtures.Adapter(2), "x before its unload");
        var z = Assert.Single(await onZ.CollectAsync(Cancel));
        Assert.Equal(12, z.Tokens.Count);
        ServingFixtures.AssertMatchesReference(prompt, z, ServingFixtures.Adapter(3), "z across the unload");
        var yResult = Assert.Single(await onY.CollectAsync(Cancel));
        ServingFixtures.AssertMatchesReference(prompt, yResult, ServingFixtures.Adapter(1), "y loaded at run time");
        Assert.NotEqual(z.Logprobs[0], yResult.Logprobs[0]);    // y and z really differ

        // The name x loaded again is another adapter: the old x's cached prompt block is not its K/V.
        e.AddAdapter("x", LoraAdapter.Load(ServingFixtures.Adapter(1)));
        long cached = e.Stats.CachedPrefixTokens;
        var again = e.Submit(Greedy(prompt, 4, "x"));
        while (e.Step()) { }
        ServingFixtures.AssertMatchesReference(prompt, Assert.Single(await again.CollectAsync(Cancel)), ServingFixtures.Adapter(1), "x reloaded");
        Assert.Equal(cached, e.Stats.CachedPrefixTokens);
        var zAgain = e.Submit(Greedy(prompt, 1, "z"));                   // while z's own prompt block is found
        while (e.Step()) { }
        await zAgain.CollectAsync(Cancel);
        Assert.True(e.Stats.CachedPrefixTokens > cached, "the prefix cache found nothing at all");
    }

    [Fact]
    public async Task A_loaded_adapter_answers_as_the_same_folder_served_from_startup_and_goes_on_unload()
    {
        var load = await f.Post("v1/load_lora_adapter", Load("rt0", ServingFixtures.Adapter(0)), Cancel);
        Assert.True(load.Status == HttpStatusCode.OK, load.Text);
        Assert.Contains("'rt0' added", load.Text);
        var models = await f.Client().GetOpenAIModelClient().GetModelsAsync(Cancel);
        Assert.Equal(["llama-tiny", "a0", "a1", "rt0"], models.Value.Select(m => m.Id));

        OpenAI.Chat.ChatMessage[] messages = [new UserChatMessage("Name three colours.")];
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 10, IncludeLogProbabilities = true };
        var startup = (await f.Client().GetChatClient("a0").CompleteChatAsync(messages, options, Cancel)).Value.ContentTokenLogProbabilities;
        var runtime = (await f.Client().GetChatClient("rt0").CompleteChatAsync(messages, options, Cancel)).Value.ContentTokenLogProbabilities;
        var other = (await f.Client().GetChatClient("a1").CompleteChatAsync(messages, options, Cancel)).Value.ContentTokenLogProbabilities;
        Assert.Equal(startup.Select(t => t.Token), runtime.Select(t => t.Token));
        Assert.All(startup.Zip(runtime), p => Assert.Equal(p.First.LogProbability, p.Second.LogProbability, 4));
        Assert.NotEqual(startup[0].LogProbability, other[0].LogProbability, 4);   // an adapter does change the answer

        var unload = await f.Post("v1/unload_lora_adapter", Unload("rt0"), Cancel);
        Assert.True(unload.Status == HttpStatusCode.OK, unload.Text);
        models = await f.Client().GetOpenAIModelClient().GetModelsAsync(Cancel);
        Assert.Equal(["llama-tiny", "a0", "a1"], models.Value.Select(m => m.Id));
        var gone = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => f.Client().GetChatClient("rt0").CompleteChatAsync(messages, options, Cancel));
        Assert.Equal(404, gone.Status);
        var again = await f.Post("v1/unload_lora_adapter", Unload("rt0"), Cancel);
        Assert.Equal(HttpStatusCode.NotFound, again.Status);
        Assert.Contains("'rt0' cannot be found", again.Message);
    }

    [Fact]
    public async Task Bad_loads_are_400s_naming_the_folder_and_change_nothing()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"temper-no-such-adapter-{Environment.ProcessId}");
        string wrongShapes = WrongShapesAdapter();
        foreach (var (body, expected) in new (string, string)[]
        {
            (Load("a0", ServingFixtures.Adapter(2)), "'a0' has already been loaded"),
            (Load("llama-tiny", ServingFixtures.Adapter(2)), "the base model's name"),
            (Load("rt", missing), $"'{missing}': folder not found"),
            (Load("rt", ServingFixtures.Model), ServingFixtures.Model),            // a model folder, no adapter_config.json
            (Load("rt", wrongShapes), wrongShapes),
            ("""{"lora_name": "rt"}""", "'lora_path' (a non-empty string) is required"),
            ("""{"lora_path": "/tmp"}""", "'lora_name' (a non-empty string) is required"),
            ("{not json", "not valid JSON"),
        })
        {
            var r = await f.Post("v1/load_lora_adapter", body, Cancel);
            Assert.True(r.Status == HttpStatusCode.BadRequest, $"{body}: {r.Status} {r.Text}");
            Assert.Contains(expected, r.Message);
        }
        var shapes = await f.Post("v1/load_lora_adapter", Load("rt", wrongShapes), Cancel);
        Assert.Contains("the model's weight is", shapes.Message);
        Assert.Equal(HttpStatusCode.BadRequest, (await f.Post("v1/unload_lora_adapter", "{}", Cancel)).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await f.Post("v1/unload_lora_adapter", Unload("nope"), Cancel)).Status);
        Assert.Equal(["llama-tiny", "a0", "a1"], f.Model.ModelIds);
        var ok = await f.Client().GetChatClient("a0").CompleteChatAsync([new UserChatMessage("still there?")], new ChatCompletionOptions { MaxOutputTokenCount = 3 }, Cancel);
        Assert.Equal(3, ok.Value.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task A_stream_on_an_adapter_being_unloaded_ends_with_an_error_after_its_own_text()
    {
        const string prompt = "Once upon a time there was";
        var request = new JsonObject { ["model"] = "a0", ["prompt"] = prompt, ["max_tokens"] = 120, ["temperature"] = 0 };
        var whole = await f.Post("v1/completions", request.ToJsonString(), Cancel);
        Assert.Equal("length", (string?)whole.Json!["choices"]![0]!["finish_reason"]);       // long enough to unload under
        string expected = (string)whole.Json["choices"]![0]!["text"]!;

        // The unload races the stream: on an idle machine the tiny model can finish all its tokens before the unload lands
        // (finish_reason "length", no error). Such a run shows nothing either way, so it is tried again (at most 5 times);
        // the adapters are put back as they were whatever happens, so the fixture's other tests see only a0 and a1.
        for (int attempt = 1; ; attempt++)
        {
            var (text, error, finish) = await StreamWhileUnloading(f, request, Cancel);
            TestContext.Current.SendDiagnosticMessage($"attempt {attempt}: the stream ended after {text.Length} of {expected.Length} characters ({finish ?? "error"})");
            if (finish != null && error == null && attempt < 5) continue;
            Assert.Null(finish);
            Assert.Contains("'rtx' was unloaded", error);
            Assert.StartsWith(text, expected);
            Assert.True(text.Length < expected.Length);
            break;
        }
    }

    // Loads rtx, streams the request on it while four busy clients keep the engine stepping, unloads rtx after the first
    // chunk and loads rty in its place; then unloads rty and waits for the busy clients (all must succeed).
    private static async Task<(string Text, string? Error, string? Finish)> StreamWhileUnloading(RuntimeLoraServerFixture f, JsonObject request, CancellationToken cancel)
    {
        Assert.Equal(HttpStatusCode.OK, (await f.Post("v1/load_lora_adapter", Load("rtx", ServingFixtures.Adapter(0)), cancel)).Status);
        bool unloaded = false;
        try
        {
            // Other clients keep the engine busy (the tiny model alone would finish the stream before the unload lands).
            var busy = Enumerable.Range(0, 4).Select(i => f.Post("v1/completions",
                new JsonObject { ["model"] = "a1", ["prompt"] = $"busy {i}", ["max_tokens"] = 120, ["n"] = 8, ["temperature"] = 0 }.ToJsonString(), cancel)).ToArray();
            var streamed = request.DeepClone().AsObject();
            streamed["model"] = "rtx";
            streamed["stream"] = true;
            using var send = new HttpRequestMessage(HttpMethod.Post, new Uri(f.Host.Address, "v1/completions")) { Content = new StringContent(streamed.ToJsonString(), Encoding.UTF8, "application/json") };
            using var response = await f.Http.SendAsync(send, HttpCompletionOption.ResponseHeadersRead, cancel);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancel));
            var text = new StringBuilder();
            string? error = null, finish = null;
            while (await reader.ReadLineAsync(cancel) is string line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal) || line == "data: [DONE]") continue;
                var chunk = JsonNode.Parse(line[6..])!;
                if (chunk["error"] is { } err) error = (string?)err["message"];
                else
                {
                    text.Append((string?)chunk["choices"]![0]!["text"]);
                    finish ??= (string?)chunk["choices"]![0]!["finish_reason"];
                }
                if (unloaded) continue;
                unloaded = true;          // after the first chunk: unload rtx, and load another folder in its place
                Assert.Equal(HttpStatusCode.OK, (await f.Post("v1/unload_lora_adapter", Unload("rtx"), cancel)).Status);
                Assert.Equal(HttpStatusCode.OK, (await f.Post("v1/load_lora_adapter", Load("rty", ServingFixtures.Adapter(1)), cancel)).Status);
            }
            Assert.All(await Task.WhenAll(busy), r => Assert.Equal(HttpStatusCode.OK, r.Status));
            return (text.ToString(), error, finish);
        }
        finally
        {
            if (f.Model.ModelIds.Contains("rty")) await f.Post("v1/unload_lora_adapter", Unload("rty"), cancel);
            if (f.Model.ModelIds.Contains("rtx")) await f.Post("v1/unload_lora_adapter", Unload("rtx"), cancel);
        }
    }

    // The fixture adapter with every A one column wider than the model's projections take.
    private static string WrongShapesAdapter()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"temper-wrong-shapes-adapter-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(ServingFixtures.FixtureAdapter, "adapter_config.json"), Path.Combine(dir, "adapter_config.json"), overwrite: true);
        using var src = SafetensorsFile.Open(Path.Combine(ServingFixtures.FixtureAdapter, "adapter_model.safetensors"));
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var entry in src.Entries)
        {
            var t = src.Get(entry.Name);
            bool isA = entry.Name.Contains(".lora_A", StringComparison.Ordinal);
            var shape = isA ? new Shape(t.Shape[0], t.Shape[1] + 1) : t.Shape;
            tensors.Add(new(entry.Name, Tensor.FromFloats(shape, new float[shape.Elements])));
        }
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        return dir;
    }
}
