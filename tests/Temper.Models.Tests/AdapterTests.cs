// PEFT adapter loading: target matching as PEFT does it, refused options, and adapters that do not
// fit the model, each with a message naming the folder and the cause.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class AdapterTests
{
    internal static string CopyAdapter(Action<JsonObject>? editConfig = null, Func<string, Tensor, Tensor>? editTensor = null)
    {
        string src = Path.Combine(Fixtures.Hf("llama-tiny"), "adapter");
        string dir = Directory.CreateTempSubdirectory("temper-adapter-").FullName;
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "adapter_config.json")))!.AsObject();
        editConfig?.Invoke(cfg);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), cfg.ToJsonString());
        using var f = SafetensorsFile.Open(Path.Combine(src, "adapter_model.safetensors"));
        var tensors = f.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, editTensor?.Invoke(e.Name, f.Get(e.Name)) ?? f.Get(e.Name))).ToList();
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        return dir;
    }

    [Theory]
    [InlineData("modules_to_save", """["norm"]""", "modules_to_save")]
    public void Unsupported_peft_options_are_refused(string key, string json, string named)
    {
        string dir = CopyAdapter(c => c[key] = JsonNode.Parse(json));
        var m = Assert.Throws<TemperException>(() => LoraAdapter.Load(dir)).Message;
        Assert.Contains("adapter_config.json", m);
        Assert.Contains(named, m);
        Assert.Contains("not supported", m);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Adapter_whose_shapes_do_not_fit_is_refused()
    {
        string dir = CopyAdapter(editTensor: (name, t) => name.EndsWith("layers.1.mlp.up_proj.lora_A.weight", StringComparison.Ordinal)
            ? Tensor.FromFloats(new Shape(4, 32), new float[128], name) : t);
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend());
        var m = Assert.Throws<TemperException>(() => lm.AttachAdapter(dir, merge: false)).Message;
        Assert.Contains("model.layers.1.mlp.up_proj", m);
        Assert.Contains("[4,32]", m);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Adapter_for_a_module_the_model_lacks_is_refused()
    {
        string dir = CopyAdapter(editTensor: null);
        // Add a pair under a layer index the model does not have.
        string file = Path.Combine(dir, "adapter_model.safetensors");
        List<KeyValuePair<string, Tensor>> list;
        using (var f = SafetensorsFile.Open(file))
            list = f.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, Tensor.FromFloats(e.Shape, f.Get(e.Name).ToFloatArray()))).ToList();
        list.Add(new("base_model.model.model.layers.7.mlp.up_proj.lora_A.weight", Tensor.FromFloats(new Shape(4, 64), new float[256])));
        list.Add(new("base_model.model.model.layers.7.mlp.up_proj.lora_B.weight", Tensor.FromFloats(new Shape(160, 4), new float[640])));
        SafetensorsWriter.Write(file, list);
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend());
        var m = Assert.Throws<TemperException>(() => lm.AttachAdapter(dir, merge: false)).Message;
        Assert.Contains("model.layers.7.mlp.up_proj", m);
        Assert.Contains("does not exist", m);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Target_matching_follows_peft()
    {
        var list = new LoraConfig(4, 8, false, ["q_proj", "v_proj"], null, 0);
        Assert.True(list.Targets("model.layers.0.self_attn.q_proj"));
        Assert.False(list.Targets("model.layers.0.self_attn.qq_proj"));
        var regex = new LoraConfig(4, 8, false, null, @".*\.0\.self_attn\.(q|k)_proj", 0);
        Assert.True(regex.Targets("model.layers.0.self_attn.k_proj"));
        Assert.False(regex.Targets("model.layers.10.self_attn.k_proj"));
        Assert.Equal(2f, list.Scale);
        Assert.Equal(4f, (list with { UseRsLora = true }).Scale);
    }
}

// PEFT's rank_pattern and alpha_pattern: per-module ranks and alphas, matched on the end of the module name.
public class AdapterPatternTests
{
    private const string Q0 = "model.layers.0.self_attn.q_proj";

    // The fixture adapter with layer 0's q_proj cut to rank 2, rank_pattern naming it and alpha_pattern giving v_proj alpha 2.
    private static string PatternedAdapter() => AdapterTests.CopyAdapter(
        c =>
        {
            c["rank_pattern"] = new JsonObject { ["layers.0.self_attn.q_proj"] = 2 };
            c["alpha_pattern"] = new JsonObject { ["v_proj"] = 2 };
        },
        (name, t) => !name.Contains(Q0 + ".", StringComparison.Ordinal) ? t
            : name.Contains("lora_A", StringComparison.Ordinal)
                ? Tensor.FromFloats(new Shape(2, t.Shape[1]), t.ToFloatArray().Take(2 * t.Shape[1]).ToArray())
                : Tensor.FromFloats(new Shape(t.Shape[0], 2), Enumerable.Range(0, t.Shape[0]).SelectMany(i => t.ToFloatArray().Skip(i * t.Shape[1]).Take(2)).ToArray()));

    [Fact]
    public void Patterned_modules_take_their_own_rank_and_alpha()
    {
        string dir = PatternedAdapter();
        try
        {
            var cfg = LoraConfig.Load(dir);
            Assert.Equal(2, cfg.RankFor(Q0));
            Assert.Equal(4, cfg.RankFor("model.layers.1.self_attn.q_proj"));
            Assert.Equal(4f, cfg.ScaleFor(Q0));                             // alpha 8 / r 2
            Assert.Equal(0.5f, cfg.ScaleFor("model.layers.1.self_attn.v_proj")); // alpha 2 / r 4
            Assert.Equal(2f, cfg.ScaleFor("model.layers.1.mlp.up_proj"));       // alpha 8 / r 4
            Assert.False(new LoraConfig(4, 8, false, ["q_proj"], null, 0) { RankPattern = [("proj", 2)] }.RankFor(Q0) == 2, "a key matches whole name parts only");

            using var adapter = LoraAdapter.Load(dir);
            using var merged = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(), dir, mergeAdapter: true);
            using var baseFile = SafetensorsFile.Open(Path.Combine(Fixtures.Hf("llama-tiny"), "model.safetensors"));
            foreach (var p in merged.Weights.Projections)
            {
                var (a, b) = adapter.Modules[p.Name];
                var w = baseFile.Get(p.Name + ".weight").ToFloatArray();
                int r = a.Shape[0];
                double s = cfg.ScaleFor(p.Name), worst = 0;
                for (int i = 0; i < p.Out; i++)
                    for (int j = 0; j < p.In; j++)
                    {
                        double acc = 0;
                        for (int x = 0; x < r; x++) acc += (double)b.Floats[i * r + x] * a.Floats[x * p.In + j];
                        worst = Math.Max(worst, Math.Abs(w[i * p.In + j] + s * acc - p.Weight.Floats[i * p.In + j]));
                    }
                Assert.True(worst < 1e-5, $"{p.Name}: merged weight off by {worst:G3}");
            }
            // Unmerged, the per-module scales give the merged model's logits.
            using var unmerged = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(), dir);
            int[] ids = [5, 17, 99, 260, 31, 7];
            using var l1 = merged.Logits(ids, 1);
            using var l2 = unmerged.Logits(ids, 1);
            float max = l1.Floats.ToArray().Max(Math.Abs);
            for (int i = 0; i < l1.Elements; i++) Assert.True(Math.Abs(l1.Floats[i] - l2.Floats[i]) <= 1e-4f * max, $"logit {i}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void A_module_whose_rank_is_not_its_patterned_rank_is_refused()
    {
        string dir = AdapterTests.CopyAdapter(c => c["rank_pattern"] = new JsonObject { ["k_proj"] = 2 });
        try
        {
            var e = Assert.Throws<TemperException>(() => LoraAdapter.Load(dir));
            Assert.Matches("'model\\.layers\\.[01]\\.self_attn\\.k_proj' has A ", e.Message);
            Assert.Contains("do not match its r=2", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
