// Mixture-of-experts models (Mixtral, Qwen3-MoE, Qwen2-MoE) against the float64 forward written from transformers'
// modeling_mixtral / modeling_qwen3_moe / modeling_qwen2_moe (MoeTiny): logits of a padded batch, greedy generation
// through the KV cache equal to repeated full forwards, to the float64 argmax (a chat-rendered prompt too) and to the
// same prompt left-padded in a batch,
// norm_topk_prob false, mlp_only_layers, decoder_sparse_step and Qwen2-MoE's gated shared expert; the routing rule (softmax, top-k, ties to the lower index,
// renormalisation); malformed expert tensors and config fields refused in one line naming them; the refusals of
// the CUDA graph decoder (4-bit models: MoeNf4Tests; training: Temper.Training.Tests' MoeTrainingTests). transformers' own logits are owed
// (tests/reference/make_moe_fixtures.py): MoeParity_* skip until mixtral-tiny / qwen3-moe-tiny / qwen2-moe-tiny exist.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class MoeTests
{
    private static readonly int[] A = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501], B = [300, 12, 9, 77, 123];

    public static TheoryData<string> Variants => [.. MoeTiny.All.Select(m => m.Name)];

    private static MoeTiny Variant(string name) => MoeTiny.All.Single(m => m.Name == name);

    private static void AssertClose(double[][] reference, ReadOnlySpan<float> actual, int row0 = 0)
    {
        double maxRef = reference.Max(r => r.Max(Math.Abs)), maxErr = 0;
        for (int t = 0; t < reference.Length; t++)
            for (int v = 0; v < MoeTiny.Vocab; v++) maxErr = Math.Max(maxErr, Math.Abs(reference[t][v] - actual[(row0 + t) * MoeTiny.Vocab + v]));
        Assert.True(maxErr <= 1e-4 * maxRef, $"max abs error {maxErr:G4} exceeds 1e-4 x max|ref| = {1e-4 * maxRef:G4}");
    }

    private static string SingleLine(Exception e)
    {
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void Config_reads_the_expert_fields_of_each_family()
    {
        var mixtral = ModelConfig.Load(MoeTiny.Mixtral.Folder);
        Assert.Equal((4, 2, 24, true), (mixtral.Moe!.Experts, mixtral.Moe.TopK, mixtral.Moe.ExpertIntermediateSize, mixtral.Moe.NormTopKProb));
        Assert.All(mixtral.Moe.SparseLayers, Assert.True);
        Assert.False(mixtral.QkNorm);
        var qwen = ModelConfig.Load(MoeTiny.Qwen3Moe.Folder);
        Assert.Equal((5, 2, 16, false, 40), (qwen.Moe!.Experts, qwen.Moe.TopK, qwen.Moe.ExpertIntermediateSize, qwen.Moe.NormTopKProb, qwen.IntermediateSize));
        Assert.Equal([true, false, true], qwen.Moe.SparseLayers);
        Assert.True(qwen.QkNorm);
        Assert.Equal([false, true, false, true], ModelConfig.Load(MoeTiny.Qwen3MoeStep.Folder).Moe!.SparseLayers);
        var qwen2 = ModelConfig.Load(MoeTiny.Qwen2Moe.Folder);
        Assert.Equal((20, false, true, false), (qwen2.Moe!.SharedExpertIntermediateSize, qwen2.Moe.NormTopKProb, qwen2.AttentionBias, qwen2.OutputBias));
        Assert.Equal([false, true], qwen2.Moe.SparseLayers);
        Assert.Null(qwen2.SlidingWindow);
        Assert.Null(ModelConfig.Load(Fixtures.Hf("qwen2-tiny")).Moe);
    }

    [Theory, MemberData(nameof(Variants))]
    public void Logits_of_a_padded_batch_match_the_float64_forward(string name)
    {
        var m = Variant(name);
        using var lm = LanguageModel.Load(m.Folder, new CpuBackend());
        Assert.Equal(m.IsSparse(1), lm.Weights.Layers[1].Moe != null);
        int t = A.Length;
        var ids = A.Concat(B).Concat(Enumerable.Repeat(0, t - B.Length)).ToArray();
        var mask = Enumerable.Repeat(1, t + B.Length).Concat(Enumerable.Repeat(0, t - B.Length)).ToArray();
        using var logits = lm.Logits(ids, 2, mask);
        AssertClose(m.Logits(A), logits.Floats);
        AssertClose(m.Logits(B), logits.Floats, row0: t);
        using var alone = lm.Logits(A, 1);
        AssertClose(m.Logits(A), alone.Floats);
    }

    [Theory, MemberData(nameof(Variants))]
    public void Greedy_generation_through_the_cache_equals_repeated_full_forwards_and_the_float64_argmax(string name)
    {
        var m = Variant(name);
        using var lm = LanguageModel.Load(m.Folder, new CpuBackend());
        var generated = new Generator(lm.Decoder).Generate([B], new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true })[0].GeneratedIds;
        Assert.Equal(10, generated.Count);
        var reference = m.Logits([.. B, .. generated]);
        // B again, left-padded beside the longer A in one batch: its padding rows are routed too, yet change nothing.
        var batched = new Generator(lm.Decoder).Generate([A, B], new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true })[1].GeneratedIds;
        for (int i = 0; i < generated.Count; i++)
        {
            var gapRow = reference[B.Length - 1 + i].OrderDescending().Take(2).ToArray();
            if (gapRow[0] - gapRow[1] < 1e-3) break; // past a near-tie the runs may part
            Assert.Equal(generated[i], batched[i]);
        }
        for (int i = 0; i < generated.Count; i++)
        {
            int[] prefix = [.. B, .. generated.Take(i)];
            using var full = lm.Logits(prefix, 1);
            var last = full.Floats.Slice((prefix.Length - 1) * MoeTiny.Vocab, MoeTiny.Vocab).ToArray();
            var top = last.OrderDescending().Take(2).ToArray();
            if (top[0] - top[1] >= 1e-4f) Assert.Equal(Array.IndexOf(last, top[0]), generated[i]);
            var row = reference[B.Length - 1 + i];
            var refTop = row.OrderDescending().Take(2).ToArray();
            if (refTop[0] - refTop[1] >= 1e-3) Assert.Equal(Array.IndexOf(row, refTop[0]), generated[i]);
        }
    }

    [Fact]
    public void A_chat_rendered_prompt_generates_the_float64_argmax()
    {
        var m = MoeTiny.Qwen3Moe;
        using var lm = LanguageModel.Load(m.Folder, new CpuBackend());
        var messages = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "What is 2+2?" });
        var prompt = lm.RequireTokenizer().Encode(lm.RequireTemplate().Render(messages, addGenerationPrompt: true)).ToArray();
        var generated = new Generator(lm.Decoder).Generate([prompt], new GenerationOptions { MaxNewTokens = 6, IgnoreEos = true })[0].GeneratedIds;
        var reference = m.Logits([.. prompt, .. generated]);
        for (int i = 0; i < generated.Count; i++)
        {
            var row = reference[prompt.Length - 1 + i];
            var top = row.OrderDescending().Take(2).ToArray();
            if (top[0] - top[1] >= 1e-3) Assert.Equal(Array.IndexOf(row, top[0]), generated[i]);
        }
    }

    [Fact]
    public void Routing_takes_the_softmax_top_k_ties_to_the_lower_index_and_renormalises_when_asked()
    {
        float[] logits = [1, 3, 3, 0, /* row 2 */ 2, 2, 2, 2];
        var (chosen, weights) = MoeBlock.Route(logits, 2, 4, 3, normTopKProb: false);
        Assert.Equal([1, 2, 0, 0, 1, 2], chosen);
        double z = Math.Exp(1) + 2 * Math.Exp(3) + 1;
        Assert.Equal(Math.Exp(3) / z, weights[0], 1e-6);
        Assert.Equal(Math.Exp(1) / z, weights[2], 1e-6);
        Assert.All(weights[3..], w => Assert.Equal(0.25, w, 1e-6));
        var (_, normed) = MoeBlock.Route(logits, 2, 4, 3, normTopKProb: true);
        Assert.Equal(1.0, normed[0] + normed[1] + normed[2], 1e-6);
        Assert.Equal(Math.Exp(3) / (2 * Math.Exp(3) + Math.Exp(1)), normed[0], 1e-6);
        Assert.All(normed[3..], w => Assert.Equal(1 / 3.0, w, 1e-6));
    }

    public static TheoryData<string, string> BadTensors => new()
    {
        { "missing", "tensor 'model.layers.1.block_sparse_moe.experts.3.w3.weight' missing" },
        { "misshapen", "tensor 'model.layers.0.block_sparse_moe.experts.1.w2.weight' has shape [24,32], config.json implies [32,24]" },
        { "router", "tensor 'model.layers.1.block_sparse_moe.gate.weight' has shape [3,32], config.json implies [4,32]" },
        { "extra", "tensor 'model.layers.0.block_sparse_moe.experts.4.w1.weight' is an expert past config.json's num_local_experts 4" },
        { "fused", "tensor 'model.layers.0.block_sparse_moe.experts.gate_up_proj' holds the experts fused" },
    };

    [Theory, MemberData(nameof(BadTensors))]
    public void A_malformed_expert_or_router_tensor_is_refused_naming_it(string kind, string expected)
    {
        var m = MoeTiny.Mixtral;
        string dir = m.Write(TempFolder.Create("temper-moe-bad"), tensors => kind switch
        {
            "missing" => tensors.Where(t => t.Name != "model.layers.1.block_sparse_moe.experts.3.w3.weight"),
            "misshapen" => tensors.Select(t => t.Name == "model.layers.0.block_sparse_moe.experts.1.w2.weight" ? (t.Name, new[] { 24, 32 }, t.Values) : t),
            "router" => tensors.Select(t => t.Name == "model.layers.1.block_sparse_moe.gate.weight" ? (t.Name, new[] { 3, 32 }, t.Values[..96]) : t),
            "extra" => tensors.Append(("model.layers.0.block_sparse_moe.experts.4.w1.weight", [24, 32], new float[24 * 32])),
            _ => tensors.Append(("model.layers.0.block_sparse_moe.experts.gate_up_proj", [4, 48, 32], new float[4 * 48 * 32])),
        });
        var e = Assert.Throws<TemperException>(() => LanguageModel.Load(dir, new CpuBackend()));
        Assert.Contains(expected, SingleLine(e));
    }

    public static TheoryData<string, string, string> BadFields => new()
    {
        { "mixtral", """{"num_experts_per_tok": 0}""", "field 'num_experts_per_tok' must be between 1 and num_local_experts 4 (got 0)" },
        { "mixtral", """{"num_experts_per_tok": 5}""", "field 'num_experts_per_tok' must be between 1 and num_local_experts 4 (got 5)" },
        { "mixtral", """{"num_local_experts": null}""", "missing field 'num_local_experts'" },
        { "qwen3_moe", """{"num_experts": 0}""", "field 'num_experts' must be >= 1 (got 0)" },
        { "qwen3_moe", """{"mlp_only_layers": [3]}""", "field 'mlp_only_layers' names layer 3, outside the model's 3 layers" },
        { "qwen3_moe", """{"decoder_sparse_step": 0}""", "field 'decoder_sparse_step' must be >= 1 (got 0)" },
        { "qwen3_moe", """{"moe_intermediate_size": "wide"}""", "field 'moe_intermediate_size' must be an integer" },
        { "qwen2_moe", """{"shared_expert_intermediate_size": 0}""", "field 'shared_expert_intermediate_size' must be >= 1 (got 0)" },
        { "qwen2_moe", """{"shared_expert_intermediate_size": null}""", "missing field 'shared_expert_intermediate_size'" },
    };

    [Theory, MemberData(nameof(BadFields))]
    public void A_bad_expert_field_is_refused_naming_config_json_and_the_field(string type, string patch, string expected)
    {
        var m = type == "mixtral" ? MoeTiny.Mixtral : type == "qwen2_moe" ? MoeTiny.Qwen2Moe : MoeTiny.Qwen3Moe;
        var root = JsonNode.Parse(m.ConfigJson())!.AsObject();
        foreach (var (key, value) in JsonNode.Parse(patch)!.AsObject())
            if (value == null) root.Remove(key);
            else root[key] = value.DeepClone();
        string dir = TempFolder.Create("temper-moe-config");
        File.WriteAllText(Path.Combine(dir, "config.json"), root.ToJsonString());
        var e = Assert.Throws<TemperException>(() => ModelConfig.Load(dir));
        Assert.Contains("config.json: " + expected, SingleLine(e));
    }

    [Fact]
    public void The_graph_decoder_refuses_an_moe_model_in_one_line()
    {
        using var lm = LanguageModel.Load(MoeTiny.Mixtral.Folder, new CpuBackend());
        var e = Assert.Throws<TemperException>(() => GraphDecoding.Validate(lm.Config, rows: 1, capacity: 8));
        Assert.Contains("the CUDA graph decoder", SingleLine(e));
        e = Assert.Throws<TemperException>(() => lm.Weights.Layers[0].Gate);
        Assert.Contains("model.layers.0.mlp.gate_proj: this layer has a mixture-of-experts MLP", SingleLine(e));
    }

    [Theory]
    [InlineData("qwen3-moe-tiny")]
    [InlineData("qwen2-moe-tiny")]
    public void The_expert_weights_are_the_files_tensors_and_merge_export_names(string name)
    {
        var m = Variant(name);
        using var lm = LanguageModel.Load(m.Folder, new CpuBackend());
        var names = lm.Weights.Projections.Select(p => p.Name + ".weight").ToHashSet();
        var expected = m.Shapes().Select(s => s.Name).Where(n => n.Contains("_proj.weight", StringComparison.Ordinal) || n.EndsWith("gate.weight", StringComparison.Ordinal)).ToHashSet();
        Assert.Equal(expected.Order(), names.Order());
        using var file = SafetensorsModel.Open(m.Folder);
        var expert = lm.Weights.Layers[^1].Moe!.Experts[^1].Down;
        Assert.Equal(file.Get(expert.Name + ".weight").ToFloatArray(), expert.WeightValues(lm.Decoder.Backend));
    }

    // ---- transformers parity (owed: tests/reference/make_moe_fixtures.py) ----

    public static TheoryData<string> FixtureModels => new() { "mixtral-tiny", "qwen3-moe-tiny", "qwen2-moe-tiny" };

    [Theory, MemberData(nameof(FixtureModels))]
    public void MoeParity_logits_plain_and_masked_match_transformers(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        Assert.NotNull(lm.Config.Moe);
        var ids = r.Get("input_ids");
        int b = ids.Shape[0];
        using var logits = lm.Logits(ids.Span<int>().ToArray(), b);
        LogitParity.AssertClose(r.Get("logits").Floats, logits.Floats);
        var mask = r.Get("attention_mask").Span<int>().ToArray();
        Assert.Contains(0, mask);
        using var masked = lm.Logits(ids.Span<int>().ToArray(), b, mask);
        LogitParity.AssertClose(r.Get("masked_logits").Floats, masked.Floats, i => mask[i / lm.Config.VocabSize] == 1);
    }

    [Theory, MemberData(nameof(FixtureModels))]
    public void MoeParity_greedy_ids_match_transformers(string name)
    {
        string dir = Fixtures.Hf(name);
        var info = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!["greedy"]!;
        var prompt = info["prompt_ids"]!.AsArray().Select(x => (int)x!).ToArray();
        var expected = info["output_ids"]!.AsArray().Select(x => (int)x!).ToArray();
        var gaps = info["top2_gaps"]!.AsArray().Select(x => (double)x!).ToArray();
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        var generated = new Generator(lm.Decoder).Generate([prompt], new GenerationOptions { MaxNewTokens = expected.Length - prompt.Length, IgnoreEos = true })[0].GeneratedIds;
        for (int i = 0; i < generated.Count; i++)
        {
            if (gaps[i] < 1e-3) break; // past a near-tie the two runs may part
            Assert.Equal(expected[prompt.Length + i], generated[i]);
        }
    }
}
