// Mixture-of-experts models (MoeTiny's Mixtral; Qwen3-MoE with q/k head norms, norm_topk_prob false and a layer in
// mlp_only_layers, and with decoder_sparse_step 2; Qwen2-MoE with its dense layer 0 and gated shared expert) through the
// serving engine: a mixed batch (prefills chunked to 6 tokens in blocks of 4, a prompt whose first 8 tokens hit the
// prefix cache, requests on the base, on a LoRA adapter over the attention projections and on one over every router,
// expert and shared expert (and its gate), unmerged) gives every request the contiguous decoder's greedy tokens
// (teacher-forced, its adapter merged; near-ties excepted) and its log-probs, and n-gram speculation gives the plain
// run's tokens; the expert adapter's device blocks count its expert modules' bytes; on ILGPU's CPU accelerator the CPU
// backend's tokens (Qwen2-MoE). An adapter on an expert the model does not have is refused in one line naming its folder
// and the module: by the adapter stack, at the server's startup and as a 400 from /v1/load_lora_adapter; the expert
// adapter loaded through /v1/load_lora_adapter answers, as the base does, through the IChatClient with the contiguous
// generator's greedy text (the adapter merged there).
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

    public static TheoryData<string> Variants => ["mixtral-tiny", "qwen3-moe-tiny", "qwen3-moe-step-tiny", "qwen2-moe-tiny"];

    private static MoeTiny Variant(string name) => MoeTiny.All.Single(m => m.Name == name);

    private static readonly int[] Warm = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150];

    /// <summary>The mixed batch after Warm: a prefix-cache hit, a short prompt, a repetitive one, Warm again on each adapter,
    /// and one prompt on each adapter and on the base.</summary>
    private static readonly (int[] Prompt, string? Adapter)[] Batch =
        [([.. Warm[..8], 42, 501, 77], null), ([300, 12], null), ([7, 8, 9, 7, 8, 9, 7, 8], null), (Warm, "attn"), ([9, 77, 123, 260, 31], "attn"), ([9, 77, 123, 260, 31], null),
         ([9, 77, 123, 260, 31], "moe"), (Warm, "moe")];

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

    private static readonly Dictionary<string, string> _experts = [];

    /// <summary>m's adapter over every sparse layer's router, experts, and shared expert and its gate (written once per process).</summary>
    private static string ExpertAdapter(MoeTiny m)
    {
        lock (_experts)
        {
            if (!_experts.TryGetValue(m.Name, out var dir))
            {
                using var lm = LanguageModel.Load(m.Folder, new CpuBackend(1));
                var modules = lm.Weights.Layers.Where(l => l.Moe != null).SelectMany(l => l.Moe!.Projections).Select(p => p.Name).ToArray();
                _experts[m.Name] = dir = WriteAdapter(TempFolder.Create("temper-moe-expert-lora-" + m.Name), m, modules, 33);
            }
            return dir;
        }
    }

    private static string Adapter(MoeTiny m, string? name) => name switch { null => "", "attn" => AttentionAdapter(m), _ => ExpertAdapter(m) };

    private static ServingRequest Greedy(int[] prompt, string? adapter, int tokens = 6) =>
        new() { PromptIds = prompt, MaxNewTokens = tokens, IgnoreEos = true, TopLogprobs = 0, Adapter = adapter };

    /// <summary>Serves Warm, then the batch at once (prefills chunked to 6 tokens); the results in Batch's order and the engine's counters.
    /// brief: no Warm, Batch's requests 1, 3 and 6 (base and each adapter) for 3 tokens each in one batch of up to 64 tokens.</summary>
    private static async Task<(List<ChoiceResult> Results, ServingStats Stats)> Serve(IBackend be, MoeTiny m, SpeculativeOptions? spec = null, bool brief = false)
    {
        using var lm = LanguageModel.Load(m.Folder, be);
        using var stack = new AdapterStack(lm.Weights, be);
        stack.Add("attn", LoraAdapter.Load(AttentionAdapter(m)));
        stack.Add("moe", LoraAdapter.Load(ExpertAdapter(m)));
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = brief ? 64 : 6, Speculative = spec }, stack);
        e.Start();
        if (!brief) await e.Submit(Greedy(Warm, null, 2)).CollectAsync(Cancel);
        (int[] Prompt, string? Adapter)[] batch = brief ? [Batch[1], Batch[3], Batch[6]] : Batch;
        var handles = batch.Select(b => e.Submit(Greedy(b.Prompt, b.Adapter, brief ? 3 : 6))).ToList();
        var results = new List<ChoiceResult>();
        foreach (var h in handles) results.Add(Assert.Single(await h.CollectAsync(Cancel)));
        // The expert adapter holds its rank-2 A [2,In] and B [Out,2] of every router, expert and shared expert in whole KV blocks.
        long bytes = lm.Weights.Layers.Where(l => l.Moe != null).SelectMany(l => l.Moe!.Projections).Sum(p => 2L * (p.In + p.Out) * sizeof(float));
        Assert.Equal((bytes + e.Cache.BlockBytes - 1) / e.Cache.BlockBytes, stack.BlocksOf(stack.IndexOf("moe")));
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
            ServingFixtures.AssertMatchesReference(Batch[i].Prompt, results[i], Batch[i].Adapter == null ? null : Adapter(m, Batch[i].Adapter), $"{name} request {i}", m.Folder);
        }
        // Each adapter changes the answer: its tokens, or (qwen3-moe-step-tiny's attention adapter keeps the repeated greedy token) their log-probs.
        static bool Differs(ChoiceResult a, ChoiceResult b) =>
            !a.Tokens.SequenceEqual(b.Tokens) || a.Logprobs.Zip(b.Logprobs).Any(p => MathF.Abs(p.First - p.Second) > 1e-3f);
        Assert.True(Differs(results[5], results[4]), $"{name}: the attention adapter changes nothing");
        Assert.True(Differs(results[5], results[6]), $"{name}: the expert adapter changes nothing");
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
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(3, cpu[i].Tokens.Count);
            Assert.Equal(cpu[i].Tokens, ilgpu[i].Tokens);
            Assert.All(cpu[i].Logprobs.Zip(ilgpu[i].Logprobs), p => Assert.Equal(p.First, p.Second, 3));
        }
    }

    [Fact]
    public async Task An_adapter_on_a_missing_expert_is_refused_and_an_expert_adapter_loads_at_run_time_and_answers()
    {
        var m = MoeTiny.Mixtral;
        string module = $"model.layers.1.{m.Module}.experts.{m.Experts}.{m.ExpertNames.Gate}";   // one past the last expert
        string present = $"model.layers.1.{m.Module}.experts.1.{m.ExpertNames.Gate}";
        string dir = WriteAdapter(TempFolder.Create("temper-moe-missing-expert-lora"), m, [present], 34);
        RenameModule(dir, present, module);
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
        async Task<HttpResponseMessage> Load(string name, string folder)
        {
            using var body = new StringContent(new JsonObject { ["lora_name"] = name, ["lora_path"] = folder }.ToJsonString(), System.Text.Encoding.UTF8, "application/json");
            return await http.PostAsync(new Uri(host.Address, "v1/load_lora_adapter"), body, Cancel);
        }
        using (var reply = await Load("x", dir))
        {
            Assert.Equal(HttpStatusCode.BadRequest, reply.StatusCode);
            AssertRefusal((string)JsonNode.Parse(await reply.Content.ReadAsStringAsync(Cancel))!["error"]!["message"]!, dir, module);
        }
        using (var reply = await Load("moe", ExpertAdapter(m))) Assert.Equal(HttpStatusCode.OK, reply.StatusCode);
        Assert.Equal(["attn", "moe"], served.Engine.AdapterNames);

        // The base and the expert adapter answer, through the IChatClient, with the contiguous generator's greedy text.
        using IChatClient chat = new TemperChatClient(served);
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "What is 2+2?" });
        var prompt = lm.RequireTokenizer().Encode(lm.RequireTemplate().Render(messages, addGenerationPrompt: true)).ToArray();
        var answers = new List<string>();
        foreach (string? adapter in new[] { null, "moe" })
        {
            using var reference = LanguageModel.Load(m.Folder, new CpuBackend(1), adapter == null ? null : ExpertAdapter(m), mergeAdapter: adapter != null);
            var ids = new Generator(reference.Decoder).Generate([prompt], new GenerationOptions { MaxNewTokens = 6, EosIds = reference.EosIds() })[0].GeneratedIds;
            var answer = await chat.GetResponseAsync([new Microsoft.Extensions.AI.ChatMessage(ChatRole.User, "What is 2+2?")],
                new ChatOptions { ModelId = adapter, Temperature = 0, MaxOutputTokens = 6 }, Cancel);
            Assert.Equal(reference.RequireTokenizer().Decode(ids.Where(t => !reference.EosIds().Contains(t)).ToArray(), skipSpecialTokens: true), answer.Text);
            answers.Add(answer.Text);
        }
        Assert.NotEqual(answers[0], answers[1]);
    }

    /// <summary>Rewrites dir's adapter_model.safetensors with module <paramref name="from"/>'s A and B under <paramref name="to"/>.</summary>
    private static void RenameModule(string dir, string from, string to)
    {
        string file = Path.Combine(dir, "adapter_model.safetensors");
        List<KeyValuePair<string, Tensor>> tensors;
        using (var src = SafetensorsFile.Open(file))
            tensors = src.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name.Replace(from + ".", to + ".", StringComparison.Ordinal),
                Tensor.FromFloats(src.Get(e.Name).Shape, src.Get(e.Name).ToFloatArray()))).ToList();
        Assert.Contains(tensors, t => t.Key.Contains(to + ".", StringComparison.Ordinal));
        SafetensorsWriter.Write(file, tensors);
    }

    private static void AssertRefusal(string message, string dir, string module)
    {
        Assert.DoesNotContain('\n', message);
        Assert.StartsWith(dir, message);
        Assert.Contains($"'{module}'", message);
        Assert.Contains("does not exist", message);
    }
}
