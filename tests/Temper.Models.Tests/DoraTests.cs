// DoRA adapters (PEFT use_dora: a magnitude m [Out] per module beside A and B), which Temper runs merged as
// PEFT merges them: W' = m / ||W + s B A||_row * (W + s B A). The fixture adapter made DoRA here (the
// magnitudes of PEFT's initialisation, ||W + s B A||, perturbed so the rescaling shows) merges to the weights
// a float64 evaluation of that formula gives, and generation with --adapter runs those merged weights;
// uses that would need the adapter unmerged (serving, reference models, training from it) refuse it in one
// line, as do a module without its magnitude and a magnitude of the wrong length. PEFT's own logits for a
// DoRA adapter are owed (tests/reference/make_dora_reference.py; that test is skipped until they exist).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class DoraTests
{
    private static string Model => Fixtures.Hf("llama-tiny");

    // Base weights by module name, from model.safetensors (f32).
    private static Dictionary<string, float[]> BaseWeights()
    {
        using var f = SafetensorsFile.Open(Path.Combine(Model, "model.safetensors"));
        return f.Entries.Where(e => e.Name.EndsWith("_proj.weight", StringComparison.Ordinal))
            .ToDictionary(e => e.Name[..^".weight".Length], e => f.Get(e.Name).ToFloatArray());
    }

    // The fixture adapter as a DoRA one: magnitudes ||W + s B A||_row * (1 + 0.3 sin(row + module)), under PEFT's saved
    // name base_model.model.<module>.lora_magnitude_vector; drop names one module whose magnitude is left out.
    private static string DoraAdapter(Func<string, int, int>? length = null, string? drop = null)
    {
        var w = BaseWeights();
        var cfg = LoraConfig.Load(Path.Combine(Model, "adapter"));
        using var src = SafetensorsFile.Open(Path.Combine(Model, "adapter", "adapter_model.safetensors"));
        string dir = AdapterTests.CopyAdapter(c => c["use_dora"] = true);
        var tensors = src.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, src.Get(e.Name))).ToList();
        int k = 0;
        foreach (var (module, weight) in w)
        {
            k++;
            if (module == drop) continue;
            var merged = Merged(weight, src, module, cfg.Scale, null);
            int rows = merged.Length / RowLength(src, module);
            int n = length?.Invoke(module, rows) ?? rows;
            var m = new float[n];
            for (int i = 0; i < n; i++) m[i] = (float)(RowNorm(merged, i % rows, RowLength(src, module)) * (1 + 0.3 * Math.Sin(i + k)));
            tensors.Add(new($"base_model.model.{module}.lora_magnitude_vector", Tensor.FromFloats(new Shape(n), m)));
        }
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        return dir;
    }

    private static int RowLength(SafetensorsFile adapter, string module) => adapter.Get($"base_model.model.{module}.lora_A.weight").Shape[1];

    private static double RowNorm(double[] w, int row, int k)
    {
        double sum = 0;
        for (int j = 0; j < k; j++) sum += w[row * k + j] * w[row * k + j];
        return Math.Sqrt(sum);
    }

    // float64: W + s B A, then (when magnitudes are given) each row scaled to m / ||row||.
    private static double[] Merged(float[] w, SafetensorsFile adapter, string module, double s, float[]? magnitude)
    {
        var a = adapter.Get($"base_model.model.{module}.lora_A.weight").ToFloatArray();
        var b = adapter.Get($"base_model.model.{module}.lora_B.weight").ToFloatArray();
        int k = adapter.Get($"base_model.model.{module}.lora_A.weight").Shape[1], r = a.Length / k, rows = w.Length / k;
        var y = new double[w.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < k; j++)
            {
                double acc = 0;
                for (int x = 0; x < r; x++) acc += (double)b[i * r + x] * a[x * k + j];
                y[i * k + j] = w[i * k + j] + s * acc;
            }
        if (magnitude != null)
            for (int i = 0; i < rows; i++)
            {
                double f = magnitude[i] / RowNorm(y, i, k);
                for (int j = 0; j < k; j++) y[i * k + j] *= f;
            }
        return y;
    }

    [Fact]
    public void A_dora_adapter_merges_as_peft_merges_it()
    {
        string dir = DoraAdapter();
        try
        {
            using var adapter = LoraAdapter.Load(dir, allowDora: true);
            Assert.True(adapter.Config.UseDora);
            Assert.Equal(adapter.Modules.Count, adapter.Magnitudes.Count);
            using var lm = LanguageModel.Load(Model, new CpuBackend(), dir); // --adapter: a DoRA adapter is merged
            using var src = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
            var baseWeights = BaseWeights();
            double worst = 0;
            foreach (var p in lm.Weights.Projections)
            {
                Assert.Null(p.Lora);
                var want = Merged(baseWeights[p.Name], src, p.Name, adapter.Config.Scale, adapter.Magnitudes[p.Name].ToFloatArray());
                var plain = Merged(baseWeights[p.Name], src, p.Name, adapter.Config.Scale, null);
                var got = p.Weight.Floats;
                double maxRef = want.Max(Math.Abs), rescaled = 0;
                for (int i = 0; i < want.Length; i++)
                {
                    worst = Math.Max(worst, Math.Abs(got[i] - want[i]) / maxRef);
                    rescaled = Math.Max(rescaled, Math.Abs(want[i] - plain[i]) / maxRef);
                }
                Assert.True(rescaled > 1e-2, $"{p.Name}: the magnitudes do not change the merged weight; the check would prove nothing");
            }
            Assert.True(worst < 1e-6, $"merged weights differ from the float64 DoRA merge by {worst:G3} of their largest magnitude");
            using var logits = lm.Logits([5, 17, 99, 260], 1);
            Assert.All(logits.Floats.ToArray(), x => Assert.True(float.IsFinite(x)));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Uses_that_need_the_adapter_unmerged_refuse_it()
    {
        string dir = DoraAdapter();
        try
        {
            var e = Assert.Throws<TemperException>(() => LoraAdapter.Load(dir));
            Assert.Contains("a DoRA adapter (use_dora) runs merged in Temper", e.Message);
            Assert.Contains("adapter_config.json", e.Message);
            using var adapter = LoraAdapter.Load(dir, allowDora: true);
            using var lm = LanguageModel.Load(Model, new CpuBackend());
            e = Assert.Throws<TemperException>(() => adapter.Apply(lm.Weights, lm.Decoder.Backend));
            Assert.Contains("merge it (temper merge)", e.Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Missing_or_misshapen_magnitudes_are_refused()
    {
        string missing = DoraAdapter(drop: "model.layers.1.mlp.up_proj");
        string shortOne = DoraAdapter(length: (module, rows) => module == "model.layers.0.self_attn.k_proj" ? rows - 1 : rows);
        try
        {
            var e = Assert.Throws<TemperException>(() => LoraAdapter.Load(missing, allowDora: true));
            Assert.Contains("DoRA module 'model.layers.1.mlp.up_proj' has no lora_magnitude_vector", e.Message);
            e = Assert.Throws<TemperException>(() => LanguageModel.Load(Model, new CpuBackend(), shortOne));
            Assert.Contains("adapter module 'model.layers.0.self_attn.k_proj' has a magnitude of", e.Message);
        }
        finally
        {
            Directory.Delete(missing, true);
            Directory.Delete(shortOne, true);
        }
    }

    // PEFT's own DoRA forward (unmerged) and merge on the fixture model, where tests/fixtures/hf/llama-tiny-dora exists.
    [Fact]
    public void Logits_match_peft_dora()
    {
        string dir = Fixtures.Hf("llama-tiny-dora");
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(Model, new CpuBackend(), dir);
        var ids = r.Get("input_ids");
        using var logits = lm.Logits(ids.Span<int>().ToArray(), ids.Shape[0]);
        foreach (string key in new[] { "logits", "merged.logits" })
        {
            var want = r.Get(key).Floats;
            float maxRef = 0, maxErr = 0;
            for (int i = 0; i < want.Length; i++)
            {
                maxRef = Math.Max(maxRef, Math.Abs(want[i]));
                maxErr = Math.Max(maxErr, Math.Abs(want[i] - logits.Floats[i]));
            }
            Assert.True(maxErr <= 1e-4 * maxRef, $"{key}: max abs error {maxErr:G4} exceeds 1e-4 x max|ref|");
        }
    }
}
