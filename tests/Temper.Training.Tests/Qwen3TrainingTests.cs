// The hand-written backward through Qwen3's head norms (q_norm, k_norm between the q/k projections and
// RoPE): full fine-tuning gradients of the mean cross-entropy against central differences of the
// float64 forward (Qwen3Tiny) on sampled entries of the head norms, the q/k projections, a layer norm and
// the tied embedding; the loss itself; gradient checkpointing giving the same gradients bit for bit; and
// a full model exported (as `temper merge` and full fine-tuning write it) keeping the head norms.
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Runs;

namespace Temper.Tests;

public class Qwen3TrainingTests
{
    private static readonly int[] Ids = TinyRows.Row12Ids, Labels = TinyRows.Row12Labels;

    private static (double Loss, Dictionary<string, float[]> Grads) Backprop(bool checkpointing)
    {
        using var lm = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        using var ps = TrainableParameters.Full(lm.Weights, lm.Decoder.Backend);
        int count = Labels.Skip(1).Count(l => l != -100);
        var bp = new DecoderBackprop(lm.Decoder) { GradientCheckpointing = checkpointing };
        var losses = bp.Run(Ids, Labels, [], 1, 1f / count, ps.GradOf);
        return (losses.Sum() / count, ps.All.ToDictionary(p => p.Name, p => p.Grad.Floats.ToArray()));
    }

    [Fact]
    public void Gradients_through_the_head_norms_match_central_differences_of_the_float64_forward()
    {
        var (loss, grads) = Backprop(checkpointing: false);
        Assert.Equal(Qwen3Tiny.Loss(Ids, Labels), loss, 1e-5 * loss);
        string[] names =
        [
            "model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.k_norm.weight",
            "model.layers.1.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight",
            "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
            "model.layers.1.input_layernorm.weight", "model.embed_tokens.weight",
        ];
        var rng = new Random(7);
        var weights = Qwen3Tiny.Weights.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        foreach (string name in names)
        {
            var w = weights[name];
            var g = grads[name];
            var entries = name.Contains("embed", StringComparison.Ordinal)
                ? Ids.Skip(3).Take(4).Select(id => id * Qwen3Tiny.Hidden + rng.Next(Qwen3Tiny.Hidden)).ToArray() // rows the loss reaches through both uses
                : Enumerable.Range(0, 6).Select(_ => rng.Next(w.Length)).ToArray();
            CentralDifferences.AssertMatches(name, w, entries, g, () => Qwen3Tiny.Loss(Ids, Labels, weights), tolerance: 1e-3, minRms: 1e-6);
        }
    }

    [Fact]
    public void Gradient_checkpointing_recomputes_the_head_norms_exactly()
    {
        var (loss, grads) = Backprop(checkpointing: false);
        var (loss2, grads2) = Backprop(checkpointing: true);
        Assert.Equal(loss, loss2);
        Assert.Contains("model.layers.1.self_attn.k_norm.weight", grads.Keys);
        foreach (var (name, g) in grads) Assert.Equal(g, grads2[name]);
    }

    [Fact]
    public void An_exported_model_keeps_the_head_norms()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"temper-qwen3-export-{Environment.ProcessId}");
        try
        {
            using (var lm = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend())) ModelExport.Save(dir, lm, lm.Decoder.Backend);
            using var back = LanguageModel.Load(dir, new CpuBackend());
            Assert.Equal(Qwen3Tiny.Weights["model.layers.1.self_attn.k_norm.weight"].Select(x => (float)x), back.Weights.Layers[1].KNorm!.Floats.ToArray());
            using var logits = back.Logits(Ids, 1);
            var reference = Qwen3Tiny.Logits(Ids);
            double maxRef = reference.Max(r => r.Max(Math.Abs));
            for (int i = 0; i < Ids.Length * Qwen3Tiny.Vocab; i++)
                Assert.True(Math.Abs(logits.Floats[i] - reference[i / Qwen3Tiny.Vocab][i % Qwen3Tiny.Vocab]) <= 1e-4 * maxRef, $"logit {i}");
        }
        finally
        {
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        }
    }
}
