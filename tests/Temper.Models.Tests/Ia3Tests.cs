// PEFT (IA)^3 adapters (peft_type IA3) read by Ia3Adapter: a hand-built folder on qwen2-tiny (k/v biases, so the
// bias scaling shows) with PEFT's defaults for qwen2 (k_proj, v_proj scaled at the output, l [Out,1]; down_proj
// feedforward, scaled at the input, l [1,In]), applied unmerged and merged by LanguageModel.AttachAdapter, against
// a model whose weights this test scales itself (rows of W and the bias, or columns of W); and the folders it
// refuses in one line: wrong shapes, modules the model or target_modules lack, feedforward_modules outside
// target_modules, options it does not implement, and LoRA-only uses (serving, combine) of an IA3 folder.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class Ia3Tests
{
    private static string Model => Fixtures.Hf("qwen2-tiny");
    private static readonly int[] Ids = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 11];

    // l = 1 + 0.4 sin(3 i + k) per module k: far enough from ones that every vector shows.
    private static float[] Vector(int n, int k) => Enumerable.Range(0, n).Select(i => (float)(1 + 0.4 * Math.Sin(3 * i + k))).ToArray();

    /// <summary>A PEFT IA3 folder for the model's k/v/down projections; edit changes the config, shape the saved shape of one module's vector.</summary>
    internal static string Folder(Action<JsonObject>? edit = null, Func<string, Shape, Shape>? shape = null, Func<IEnumerable<KeyValuePair<string, Tensor>>, IEnumerable<KeyValuePair<string, Tensor>>>? tensors = null)
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend());
        string dir = Directory.CreateTempSubdirectory("temper-ia3-").FullName;
        var cfg = new JsonObject
        {
            ["peft_type"] = "IA3", ["task_type"] = "CAUSAL_LM", ["target_modules"] = new JsonArray("k_proj", "v_proj", "down_proj"),
            ["feedforward_modules"] = new JsonArray("down_proj"), ["fan_in_fan_out"] = false, ["init_ia3_weights"] = true, ["modules_to_save"] = null,
        };
        edit?.Invoke(cfg);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), cfg.ToJsonString());
        var list = new List<KeyValuePair<string, Tensor>>();
        int k = 0;
        foreach (var p in lm.Weights.Projections.Where(p => p.Name.EndsWith("k_proj", StringComparison.Ordinal) || p.Name.EndsWith("v_proj", StringComparison.Ordinal) || p.Name.EndsWith("down_proj", StringComparison.Ordinal)))
        {
            bool ff = p.Name.EndsWith("down_proj", StringComparison.Ordinal);
            var s = ff ? new Shape(1, p.In) : new Shape(p.Out, 1);
            s = shape?.Invoke(p.Name, s) ?? s;
            list.Add(new($"base_model.model.{p.Name}.ia3_l", Tensor.FromFloats(s, Vector((int)s.Elements, k++))));
        }
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors?.Invoke(list).ToList() ?? list);
        return dir;
    }

    /// <summary>The base model with each adapted projection's weight scaled here: rows and bias by l (k, v), columns by l (down).</summary>
    private static float[] ScaledByHand(string adapter)
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend());
        var be = lm.Decoder.Backend;
        using var f = SafetensorsFile.Open(Path.Combine(adapter, "adapter_model.safetensors"));
        foreach (var p in lm.Weights.Projections)
        {
            string key = $"base_model.model.{p.Name}.ia3_l";
            if (!f.Entries.Any(e => e.Name == key)) continue;
            var l = f.Get(key).ToFloatArray();
            bool ff = p.Name.EndsWith("down_proj", StringComparison.Ordinal);
            var w = p.WeightValues(be);
            for (int o = 0; o < p.Out; o++)
                for (int i = 0; i < p.In; i++) w[o * p.In + i] *= ff ? l[i] : l[o];
            p.ReplaceWeight(be, w);
            if (!ff && p.Bias != null) p.ReplaceBias(be, p.BiasValues(be).Select((b, o) => b * l[o]).ToArray());
        }
        using var logits = lm.Logits(Ids, 1);
        return logits.Floats.ToArray();
    }

    private static float[] Logits(string? adapter, bool merge)
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend(), adapter, merge);
        using var logits = lm.Logits(Ids, 1);
        return logits.Floats.ToArray();
    }

    [Fact]
    public void Applied_unmerged_and_merged_gives_the_logits_of_weights_scaled_by_hand()
    {
        string dir = Folder();
        var expected = ScaledByHand(dir);
        var baseLogits = Logits(null, false);
        double max = expected.Max(Math.Abs);
        Assert.True(expected.Zip(baseLogits).Max(t => Math.Abs(t.First - t.Second)) > 1e-2 * max, "the adapter should change the logits");
        foreach (bool merge in new[] { false, true })
        {
            var got = Logits(dir, merge);
            for (int i = 0; i < got.Length; i++)
                Assert.True(Math.Abs(got[i] - expected[i]) <= 1e-5 * max, $"{(merge ? "merged" : "unmerged")} logit {i}: {got[i]} vs {expected[i]}");
        }
        // Without the bias scaled (PEFT's forward scales base(x) including its bias), the k/v outputs would differ.
        using (var lm = LanguageModel.Load(Model, new CpuBackend()))
            Assert.Contains(lm.Weights.Layers[0].K.Bias!.Floats.ToArray(), b => b != 0);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void A_regex_for_targets_and_feedforward_matches_as_peft_s_fullmatch()
    {
        string dir = Folder(c =>
        {
            c["target_modules"] = @".*\.(k_proj|v_proj|down_proj)";
            c["feedforward_modules"] = @".*\.down_proj";
        });
        var expected = ScaledByHand(dir);
        var got = Logits(dir, merge: false);
        double max = expected.Max(Math.Abs);
        for (int i = 0; i < got.Length; i++) Assert.True(Math.Abs(got[i] - expected[i]) <= 1e-5 * max, $"logit {i}: {got[i]} vs {expected[i]}");
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData("shape", "layers.0.self_attn.k_proj.ia3_l' has shape")]  // saved as [1,Out] instead of [Out,1]
    [InlineData("ffshape", "a feedforward IA3 vector")]                    // down_proj saved as [In,1] instead of [1,In]
    [InlineData("subset", "must be a subset of target_modules")]
    [InlineData("unknown", "does not exist in the model")]
    [InlineData("untargeted", "which target_modules does not name")]
    [InlineData("missing", "has no tensor")]
    [InlineData("fan_in_fan_out", "fan_in_fan_out")]
    [InlineData("lm_head", "lm_head is not supported")]
    [InlineData("regex", "'target_modules' regex '(k_proj' is not a valid regular expression")]
    public void Bad_folders_are_refused_in_one_line_naming_the_file(string what, string expected)
    {
        string dir = what switch
        {
            "shape" => Folder(shape: (n, s) => n == "model.layers.0.self_attn.k_proj" ? new Shape(1, s[0]) : s),
            "ffshape" => Folder(shape: (n, s) => n == "model.layers.1.mlp.down_proj" ? new Shape(s[1], 1) : s),
            "subset" => Folder(c => c["feedforward_modules"] = new JsonArray("down_proj", "up_proj")),
            "unknown" => Folder(c => c["target_modules"] = new JsonArray("k_proj", "v_proj", "down_proj", "ghost_proj"),
                tensors: t => t.Append(new("base_model.model.model.layers.0.mlp.ghost_proj.ia3_l", Tensor.FromFloats(new Shape(4, 1), new float[4])))),
            "untargeted" => Folder(c => c["target_modules"] = new JsonArray("k_proj", "down_proj")),
            "missing" => Folder(tensors: t => t.Where(kv => !kv.Key.Contains("layers.1.self_attn.v_proj", StringComparison.Ordinal))),
            "fan_in_fan_out" => Folder(c => c["fan_in_fan_out"] = true),
            "regex" => Folder(c => c["target_modules"] = "(k_proj"),
            _ => Folder(c => c["target_modules"] = new JsonArray("k_proj", "v_proj", "down_proj", "lm_head"),
                tensors: t => t.Append(new("base_model.model.lm_head.ia3_l", Tensor.FromFloats(new Shape(512, 1), new float[512])))),
        };
        var m = Assert.Throws<TemperException>(() => Logits(dir, merge: false)).Message;
        Assert.Contains(expected, m);
        Assert.Contains("adapter_", m);
        Assert.DoesNotContain("\n", m);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Lora_only_uses_refuse_an_ia3_folder_in_one_line()
    {
        string dir = Folder();
        var m = Assert.Throws<TemperException>(() => LoraAdapter.Load(dir)).Message; // serving's adapter stack, combine, reference adapters
        Assert.Contains("IA3", m);
        Assert.Contains("adapter_config.json", m);
        Directory.Delete(dir, true);
    }
}
