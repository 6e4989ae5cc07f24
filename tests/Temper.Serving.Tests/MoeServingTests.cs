// Mixture-of-experts models (MoeTiny's Mixtral, and Qwen2-MoE with its dense layer 0 and gated shared expert) through the
// serving engine: a mixed batch (prefills chunked to 6 tokens in blocks of 4, a prompt whose first 8 tokens hit the
// prefix cache, requests on the base and on a LoRA adapter over the attention projections) gives every request the
// contiguous decoder's greedy tokens (teacher-forced, the adapter merged; near-ties excepted) and its log-probs, and
// n-gram speculation gives the plain run's tokens; on ILGPU's CPU accelerator the CPU backend's tokens (Qwen2-MoE). An
// adapter on a router or expert module is refused in one line naming its folder and the module: by the adapter
// stack, at the server's startup and as a 400 from /v1/load_lora_adapter, while the served model's IChatClient
// answers with the contiguous generator's greedy text.
using System.Net;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Models.Speculative;
using Temper.Serving.Http;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;
using Temper.Tests;

namespace Temper.Serving.Tests;

public sealed class MoeServingTests
{
    private static CancellationToken Cancel => TestContext.Current.CancellationToken;

    public static TheoryData<string> Variants => ["mixtral-tiny", "qwen2-moe-tiny"];

    private static MoeTiny Variant(string name) => MoeTiny.All.Single(m => m.Name == name);

    private static readonly int[] Warm = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150];

    /// <summary>The mixed batch after Warm: a prefix-cache hit, a short prompt, a repetitive one, Warm again on the adapter,
    /// and one prompt on the adapter and on the base.</summary>
    private static readonly (int[] Prompt, string? Adapter)[] Batch =
        [([.. Warm[..8], 42, 501, 77], null), ([300, 12], null), ([7, 8, 9, 7, 8, 9, 7, 8], null), (Warm, "attn"), ([9, 77, 123, 260, 31], "attn"), ([9, 77, 123, 260, 31], null)];

    /// <summary>A rank-2 PEFT LoRA adapter of m over <paramref name="modules"/> (HF module names), seeded.</summary>
    private static string WriteAdapter(string dir, MoeTiny m, IEnumerable<string> modules, int seed)
    {
        Directory.CreateDirectory(dir);
        using var lm = LanguageModel.Load(m.Folder, new CpuBackend(1));
        var byName = lm.Weights.Projections.ToDictionary(p => p.Name);
        var rng = new Random(seed);
        float[] Uniform(int count, float bound) => Enumerable.Range(0, count).Select(_ => (float)(rng.NextDouble() * 2 - 1) * bound).ToArray();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (string name in modules)
        {
            var p = byName[name];
            tensors.Add(new($"base_model.model.{name}.lora_A.weight", Tensor.FromFloats(new Shape(2, p.In), Uniform(2 * p.In, 1f / MathF.Sqrt(p.In)))));
            tensors.Add(new($"base_model.model.{name}.lora_B.weight", Tensor.FromFloats(new Shape(p.Out, 2), Uniform(2 * p.Out, 0.5f))));
        }
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        var targets = modules.Select(n => n[(n.LastIndexOf('.') + 1)..]).Distinct().ToArray();
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"),
            JsonSerializer.Serialize(new Dictionary<string, object> { ["peft_type"] = "LORA", ["r"] = 2, ["lora_alpha"] = 4, ["target_modules"] = targets }));
        return dir;
    }

    private static readonly Dictionary<string, string> _attention = [];

    /// <summary>m's adapter over every layer's q/k/v/o_proj (written once per process).</summary>
    private static string AttentionAdapter(MoeTiny m)
    {
        lock (_attention)
        {
            if (!_attention.TryGetValue(m.Name, out var dir))
                _attention[m.Name] = dir = WriteAdapter(TempFolder.Create("temper-moe-lora-" + m.Name), m,
                    Enumerable.Range(0, m.Layers).SelectMany(l => new[] { "q_proj", "k_proj", "v_proj", "o_proj" }.Select(p => $"model.layers.{l}.self_attn.{p}")), 31);
            return dir;
        }
    }

    /// <summary>An adapter over layer 1's q_proj and its expert 1's gate projection (w1 / gate_proj).</summary>
    private static (string Dir, string Module) ExpertAdapter(MoeTiny m)
    {
        string module = $"model.layers.1.{m.Module}.experts.1.{m.ExpertNames.Gate}";
        return (WriteAdapter(TempFolder.Create("temper-moe-expert-lora-" + m.Name), m, ["model.layers.1.self_attn.q_proj", module], 32), module);
    }

    private static ServingRequest Greedy(int[] prompt, string? adapter, int tokens = 6) =>
        new() { PromptIds = prompt, MaxNewTokens = tokens, IgnoreEos = true, TopLogprobs = 0, Adapter = adapter };

    /// <summary>Serves Warm, then the batch at once (prefills chunked to 6 tokens); the results in Batch's order and the engine's counters.
    /// brief: no Warm, Batch's requests 1 and 3 (base and adapter) for 3 tokens each in one batch of up to 64 tokens.</summary>
    private static async Task<(List<ChoiceResult> Results, ServingStats Stats)> Serve(IBackend be, MoeTiny m, SpeculativeOptions? spec = null, bool brief = false)
    {
        using var lm = LanguageModel.Load(m.Folder, be);
        using var stack = new AdapterStack(lm.Weights, be);
        stack.Add("attn", LoraAdapter.Load(AttentionAdapter(m)));
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = brief ? 64 : 6, Speculative = spec }, stack);
        e.Start();
        if (!brief) await e.Submit(Greedy(Warm, null, 2)).CollectAsync(Cancel);
        (int[] Prompt, string? Adapter)[] batch = brief ? [Batch[1], Batch[3]] : Batch;
        var handles = batch.Select(b => e.Submit(Greedy(b.Prompt, b.Adapter, brief ? 3 : 6))).ToList();
        var results = new List<ChoiceResult>();
        foreach (var h in handles) results.Add(Assert.Single(await h.CollectAsync(Cancel)));
        return (results, e.Stats);
    }

    [Theory, MemberData(nameof(Variants))]
    public async Task A_mixed_batch_serves_the_contiguous_decoders_greedy_tokens_plain_and_speculative(string name)
    {
        var m = Variant(name);
        using var be = new CpuBackend(1);
        var (results, stats) = await Serve(be, m);
        Assert.True(stats.CachedPrefixTokens >= 8, $"no prefix-cache hit: {stats}");
        for (int i = 0; i < Batch.Length; i++)
        {
            Assert.Equal(6, results[i].Tokens.Count);
            ServingFixtures.AssertMatchesReference(Batch[i].Prompt, results[i], Batch[i].Adapter == null ? null : AttentionAdapter(m), $"{name} request {i}", m.Folder);
        }
        Assert.NotEqual(results[5].Tokens, results[4].Tokens);   // the adapter changes the answer
        var (spec, specStats) = await Serve(be, m, new SpeculativeOptions { NumTokens = 3, NgramMax = 2, NgramMin = 1 });
        Assert.True(specStats.SpecDraftTokens > 0, $"nothing proposed: {specStats}");
        for (int i = 0; i < Batch.Length; i++) Assert.Equal(results[i].Tokens, spec[i].Tokens);
    }

    [Fact]
    public async Task The_ilgpu_backend_serves_the_cpu_backends_tokens()
    {
        var m = MoeTiny.Qwen2Moe;
        // Kept brief (each kernel launch on the CPU accelerator is slow): a base and an adapter request in one batch, 3 steps.
        using var cpuBackend = new CpuBackend(1);
        var (cpu, _) = await Serve(cpuBackend, m, brief: true);
        using var ilgpuBackend = IlgpuBackend.Create("ilgpu-cpu");
        var (ilgpu, _) = await Serve(ilgpuBackend, m, brief: true);
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(3, cpu[i].Tokens.Count);
            Assert.Equal(cpu[i].Tokens, ilgpu[i].Tokens);
            Assert.All(cpu[i].Logprobs.Zip(ilgpu[i].Logprobs), p => Assert.Equal(p.First, p.Second, 3));
        }
    }

    [Fact]
    public async Task An_adapter_on_an_expert_is_refused_naming_its_folder_and_module_at_startup_and_at_run_time()
    {
        var m = MoeTiny.Mixtral;
        var (dir, module) = ExpertAdapter(m);
        using var lm = LanguageModel.Load(m.Folder, new CpuBackend(1));
        using (var stack = new AdapterStack(lm.Weights, lm.Decoder.Backend))
        {
            var e = Assert.Throws<TemperException>(() => stack.Add("x", LoraAdapter.Load(dir)));
            AssertRefusal(e.Message, dir, module);
            Assert.Equal(0, stack.Count);
        }
        var options = new ServingOptions { BlockSize = 4, Blocks = 32 };
        var startup = Assert.Throws<TemperException>(() => new ServedModel(lm, [("x", dir)], options));
        AssertRefusal(startup.Message, dir, module);

        using var served = new ServedModel(lm, [("attn", AttentionAdapter(m))], options);
        await using var host = await ServingHost.StartAsync(served, "127.0.0.1", 0, maxBodyBytes: 64 << 10, allowRuntimeLora: true);
        using var http = new HttpClient();
        using var body = new StringContent(new JsonObject { ["lora_name"] = "x", ["lora_path"] = dir }.ToJsonString(), System.Text.Encoding.UTF8, "application/json");
        using var reply = await http.PostAsync(new Uri(host.Address, "v1/load_lora_adapter"), body, Cancel);
        Assert.Equal(HttpStatusCode.BadRequest, reply.StatusCode);
        AssertRefusal((string)JsonNode.Parse(await reply.Content.ReadAsStringAsync(Cancel))!["error"]!["message"]!, dir, module);
        Assert.Equal(["attn"], served.Engine.AdapterNames);

        // The base and the attention adapter still answer, through the IChatClient, with the contiguous generator's greedy text.
        using IChatClient chat = new TemperChatClient(served);
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "What is 2+2?" });
        var prompt = lm.RequireTokenizer().Encode(lm.RequireTemplate().Render(messages, addGenerationPrompt: true)).ToArray();
        foreach (string? adapter in new[] { null, "attn" })
        {
            using var reference = LanguageModel.Load(m.Folder, new CpuBackend(1), adapter == null ? null : AttentionAdapter(m), mergeAdapter: adapter != null);
            var ids = new Generator(reference.Decoder).Generate([prompt], new GenerationOptions { MaxNewTokens = 6, EosIds = reference.EosIds() })[0].GeneratedIds;
            var answer = await chat.GetResponseAsync([new Microsoft.Extensions.AI.ChatMessage(ChatRole.User, "What is 2+2?")],
                new ChatOptions { ModelId = adapter, Temperature = 0, MaxOutputTokens = 6 }, Cancel);
            Assert.Equal(reference.RequireTokenizer().Decode(ids.Where(t => !reference.EosIds().Contains(t)).ToArray(), skipSpecialTokens: true), answer.Text);
        }
    }

    private static void AssertRefusal(string message, string dir, string module)
    {
        Assert.DoesNotContain('\n', message);
        Assert.StartsWith(dir, message);
        Assert.Contains($"'{module}'", message);
        Assert.Contains("mixture-of-experts", message);
    }
}
