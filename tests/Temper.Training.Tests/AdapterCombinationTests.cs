// Several adapters of one base: combined into one PEFT adapter as PEFT's add_weighted_adapter(combination_type
// "cat") combines them (its delta per module equals sum_i w_i s_i B_i A_i evaluated here in double, with a
// module only one adapter has, ranks 4 and 2, a negative weight), the combined adapter applied unmerged gives
// the logits of the base with both merged at their weights, and the cases that cannot combine are refused.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training.Lora;

namespace Temper.Tests;

public sealed class AdapterCombinationTests : IDisposable
{
    private static readonly string Model = Fixtures.Hf("llama-tiny");
    private readonly string _dir = Directory.CreateTempSubdirectory("temper-combine-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // A second adapter on the fixture: rank 2, alpha 3, on q_proj of both layers and gate_proj of layer 1 (random A and B).
    private string SecondAdapter()
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend(1));
        var rng = new Random(5);
        var modules = lm.Weights.Projections.Where(p => p.Name.EndsWith(".q_proj", StringComparison.Ordinal) || p.Name == "model.layers.1.mlp.gate_proj")
            .Select(p => (p.Name,
                Tensor.FromFloats(new Shape(2, p.In), Enumerable.Range(0, 2 * p.In).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), "a"),
                Tensor.FromFloats(new Shape(p.Out, 2), Enumerable.Range(0, 2 * p.Out).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), "b"),
                (Tensor?)null)).ToList();
        string dir = Path.Combine(_dir, "second");
        PeftAdapterWriter.Write(dir, modules, new LoraConfig(2, 3, false, ["q_proj", "gate_proj"], null, 0), "temper-fixtures/llama-tiny");
        return dir;
    }

    [Fact]
    public void The_combination_is_the_weighted_sum_of_the_deltas_and_serves_as_both_merged()
    {
        string first = Path.Combine(Model, "adapter"), second = SecondAdapter(), combined = Path.Combine(_dir, "combined");
        double[] weights = [0.7, -0.4];
        using var a = LoraAdapter.Load(first);
        using var b = LoraAdapter.Load(second);
        var cfg = AdapterCombination.Cat([(a, weights[0]), (b, weights[1])], combined, "temper-fixtures/llama-tiny");
        using var c = LoraAdapter.Load(combined);
        Assert.Equal(cfg.Rank, c.Config.Rank);
        Assert.Equal(1f, c.Config.ScaleFor("model.layers.0.self_attn.q_proj"));
        Assert.Equal(a.Modules.Keys.Union(b.Modules.Keys).Order(), c.Modules.Keys.Order());

        foreach (var (name, (ca, cb)) in c.Modules)
        {
            int rows = cb.Shape[0], cols = ca.Shape[1];
            var want = new double[rows * cols];
            foreach (var (adapter, w) in new[] { (a, weights[0]), (b, weights[1]) })
            {
                if (!adapter.Modules.TryGetValue(name, out var m)) continue;
                var (af, bf) = (m.A.ToFloatArray(), m.B.ToFloatArray());
                int r = m.A.Shape[0];
                double s = w * adapter.Config.ScaleFor(name);
                for (int i = 0; i < rows; i++)
                    for (int j = 0; j < cols; j++)
                        for (int x = 0; x < r; x++) want[i * cols + j] += s * bf[i * r + x] * af[x * cols + j];
            }
            var got = new double[rows * cols];
            var (gaf, gbf) = (ca.ToFloatArray(), cb.ToFloatArray());
            int rank = ca.Shape[0];
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++)
                    for (int x = 0; x < rank; x++) got[i * cols + j] += gbf[i * rank + x] * gaf[x * cols + j];
            double max = want.Max(Math.Abs);
            Assert.True(max > 0, name);
            for (int k = 0; k < want.Length; k++) Assert.True(Math.Abs(got[k] - want[k]) <= 1e-5 * max, $"{name}[{k}]: {got[k]} vs {want[k]}");
        }

        // The combined adapter unmerged = both merged at their weights, on the model's logits.
        int[] ids = [1, 40, 41, 42, 50, 51, 7, 9];
        using var unmerged = LanguageModel.Load(Model, new CpuBackend(1), combined);
        using var merged = LanguageModel.Load(Model, new CpuBackend(1));
        a.Merge(merged.Weights, merged.Decoder.Backend, weights[0]);
        b.Merge(merged.Weights, merged.Decoder.Backend, weights[1]);
        using var plain = LanguageModel.Load(Model, new CpuBackend(1));
        using var lu = unmerged.Logits(ids, 1);
        using var lm = merged.Logits(ids, 1);
        using var lp = plain.Logits(ids, 1);
        float scale = lm.Floats.ToArray().Max(Math.Abs);
        for (int k = 0; k < lu.Floats.Length; k++) Assert.True(Math.Abs(lu.Floats[k] - lm.Floats[k]) <= 1e-4 * scale, $"logit {k}: {lu.Floats[k]} vs {lm.Floats[k]}");
        Assert.True(lp.Floats.ToArray().Zip(lm.Floats.ToArray()).Max(t => Math.Abs(t.First - t.Second)) > 1e-3 * scale, "the adapters changed nothing");
    }

    [Fact]
    public void Adapters_that_cannot_combine_are_refused()
    {
        using var a = LoraAdapter.Load(Path.Combine(Model, "adapter"));
        string otherDir = Path.Combine(_dir, "other"); // q_proj of a model whose hidden size is 32, not 64
        PeftAdapterWriter.Write(otherDir, [("model.layers.0.self_attn.q_proj", Tensor.FromFloats(new Shape(2, 32), new float[64], "a"), Tensor.FromFloats(new Shape(32, 2), new float[64], "b"), null)],
            new LoraConfig(2, 2, false, ["q_proj"], null, 0), "another");
        using var other = LoraAdapter.Load(otherDir);
        var e = Assert.Throws<TemperException>(() => AdapterCombination.Cat([(a, 1), (other, 1)], Path.Combine(_dir, "x"), ""));
        Assert.Contains("the adapters are not of one base", e.Message);
        Assert.Equal("combining needs at least two adapters", Assert.Throws<TemperException>(() => AdapterCombination.Cat([(a, 1)], Path.Combine(_dir, "y"), "")).Message);
    }
}
