// Mixture-of-experts training (Mixtral, Qwen2-MoE's gated shared expert) through DecoderBackprop's MoE backward:
// LoRA A/B gradients of attention, expert, shared-expert and router projections, and full gradients of the embedding (the
// input path, router included), a router and an expert weight, against central differences of the float64 forward
// (MoeTiny, LoRA merged in float64); gradient checkpointing (with LoRA dropout, and DoRA) giving the same gradients bit for bit;
// an SFT LoRA run over experts and router whose loss falls, saved with PEFT's names, loading back (LanguageModel's adapter
// path) with the float64 logits of the saved A/B, and merged (temper merge's Merge + ModelExport) to the same logits;
// one DPO step; and --qlora (NF4 routers and experts) giving the dequantised model's loss and LoRA gradients
// (the router load-balancing loss: MoeAuxLossTests).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using Temper.Training.Preference;
using Temper.Training.Runs;
using Temper.Training.Trainers;

namespace Temper.Tests;

public sealed class MoeTrainingTests
{
    private static readonly int[] Ids = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501];
    private static readonly int[] Labels = [-100, -100, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501];
    private const int Rank = 2;
    private const double Alpha = 4;

    public static TheoryData<string> Variants => ["mixtral-tiny", "qwen2-moe-tiny"];

    private static MoeTiny Variant(string name) => MoeTiny.All.Single(m => m.Name == name);

    private static string[] Targets(MoeTiny m) => m.Qwen
        ? ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj", "gate", "shared_expert_gate"]
        : ["q_proj", "v_proj", "w1", "w2", "w3", "gate"];

    // The model with LoRA on Targets (B drawn non-zero, so A has a gradient), and the base tensors trained fully beside it.
    private static (LanguageModel Lm, LoraConfig Cfg) WithLora(MoeTiny m, bool dora = false) => WithLora(m, LanguageModel.Load(m.Folder, new CpuBackend()), dora);

    private static (LanguageModel Lm, LoraConfig Cfg) WithLora(MoeTiny m, LanguageModel lm, bool dora = false)
    {
        var cfg = new LoraConfig(Rank, Alpha, false, Targets(m), null, 0) { UseDora = dora };
        LoraInit.Attach(lm.Weights, cfg, lm.Decoder.Backend, seed: 3);
        var rng = new Random(5);
        foreach (var p in lm.Weights.Projections)
            if (p.Lora is { } l)
                foreach (ref float b in l.B.Floats) b = (float)(rng.NextDouble() - 0.5) * 0.4f;
        return (lm, cfg);
    }

    private static string[] FullyTrained(MoeTiny m) =>
        ["model.embed_tokens.weight", $"model.layers.1.{m.Module}.gate.weight", $"model.layers.1.{m.Module}.experts.2.{m.ExpertNames.Down}.weight"];

    private static (double Loss, Dictionary<string, float[]> Grads) Backprop(LanguageModel lm, MoeTiny m, bool checkpointing, float dropout = 0, bool full = true)
    {
        var w = lm.Weights;
        var byName = w.Projections.ToDictionary(p => p.Name + ".weight", p => p.Weight);
        var extra = FullyTrained(m).Where(_ => full).Select(n => (n, n.Contains("embed", StringComparison.Ordinal) ? w.Embed : byName[n]));
        using var ps = TrainableParameters.Lora(w, lm.Decoder.Backend, extra);
        int count = Labels.Skip(1).Count(l => l != -100);
        var bp = new DecoderBackprop(lm.Decoder) { GradientCheckpointing = checkpointing, LoraDropout = dropout, DropoutSeed = 11 };
        var losses = bp.Run(Ids, Labels, [], 1, 1f / count, ps.GradOf);
        return (losses.Sum() / count, ps.All.ToDictionary(p => p.Name, p => p.Grad.Floats.ToArray()));
    }

    [Theory, MemberData(nameof(Variants))]
    public void Lora_and_input_gradients_match_central_differences_of_the_float64_forward(string name)
    {
        var m = Variant(name);
        var (lm, cfg) = WithLora(m);
        using var _ = lm;
        var (loss, grads) = Backprop(lm, m, checkpointing: false);
        var lora = lm.Weights.Projections.Where(p => p.Lora != null)
            .ToDictionary(p => p.Name, p => (A: p.Lora!.A.Floats.ToArray().Select(x => (double)x).ToArray(), B: p.Lora.B.Floats.ToArray().Select(x => (double)x).ToArray()));
        var weights = m.Weights.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        double Loss() => m.Loss(Ids, Labels, m.WithLora(lora, Rank, cfg.Scale, weights));
        Assert.Equal(Loss(), loss, 1e-5 * loss);
        var rng = new Random(7);
        int checkedExperts = 0, kinds = 0;
        foreach (var (module, (a, b)) in lora)
            foreach (var (suffix, values) in new[] { (".lora_A.weight", a), (".lora_B.weight", b) })
            {
                var g = grads[module + suffix];
                bool expert = module.Contains(".experts.", StringComparison.Ordinal);
                if (expert)
                {
                    if (g.All(x => x == 0)) continue; // an expert no token of the sequence is routed to
                    checkedExperts++;
                }
                var entries = Enumerable.Range(0, expert ? 2 : 3).Select(_ => rng.Next(values.Length)).ToArray();
                CentralDifferences.AssertMatches(module + suffix, values, entries, g, Loss, tolerance: 2e-3, minRms: 1e-7);
                kinds++;
            }
        Assert.True(checkedExperts >= 8, $"only {checkedExperts} expert LoRA tensors had tokens routed to them");
        foreach (string full in FullyTrained(m))
        {
            var entries = full.Contains("embed", StringComparison.Ordinal)
                ? Ids.Take(6).Select(id => id * MoeTiny.Hidden + rng.Next(MoeTiny.Hidden)).ToArray()
                : Enumerable.Range(0, 4).Select(_ => rng.Next(weights[full].Length)).ToArray();
            CentralDifferences.AssertMatches(full, weights[full], entries, grads[full], Loss, tolerance: 2e-3, minRms: 1e-7);
        }
        Assert.True(kinds > 20);
    }

    [Theory]
    [InlineData("mixtral-tiny", false)]
    [InlineData("qwen2-moe-tiny", false)]
    [InlineData("mixtral-tiny", true)]
    public void Gradient_checkpointing_recomputes_the_experts_exactly(string name, bool dora)
    {
        var m = Variant(name);
        var (lm, _) = WithLora(m, dora);
        using var __ = lm;
        var (loss, grads) = Backprop(lm, m, checkpointing: false, dropout: 0.1f, full: !dora); // DoRA's base stays frozen
        var (loss2, grads2) = Backprop(lm, m, checkpointing: true, dropout: 0.1f, full: !dora);
        Assert.Equal(dora, grads.Keys.Any(k => k.EndsWith("experts.2.w2.lora_magnitude_vector", StringComparison.Ordinal)));
        Assert.Equal(loss, loss2);
        foreach (var (key, g) in grads) Assert.Equal(g, grads2[key]);
    }

    [Fact]
    public void Sft_lora_over_experts_and_router_learns_saves_peft_names_loads_back_and_merges()
    {
        var m = MoeTiny.Mixtral;
        string root = TempFolder.Create("temper-moe-sft"), outDir = Path.Combine(root, "out");
        var o = new SftOptions
        {
            ModelDir = m.Folder, DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl"), OutDir = outDir,
            LoraTargets = ["q_proj", "v_proj", "w1", "w2", "w3", "gate"], LoraRank = 4, LoraAlpha = 8, LearningRate = 1e-2f,
            BatchSize = 6, MaxSteps = 12, WarmupSteps = 0,
        };
        new SftTrainer(o, new CpuBackend()).Run();
        var metrics = RunMetrics.Read(outDir);
        double first = metrics[0]["loss"]!.GetValue<double>(), last = metrics[^1]["loss"]!.GetValue<double>();
        Assert.True(last < 0.8 * first, $"loss went from {first:G4} to {last:G4}");

        using var file = SafetensorsFile.Open(Path.Combine(outDir, "adapter_model.safetensors"));
        var keys = file.Entries.Select(e => e.Name).ToHashSet();
        Assert.Contains("base_model.model.model.layers.0.block_sparse_moe.experts.1.w1.lora_A.weight", keys);
        Assert.Contains("base_model.model.model.layers.1.block_sparse_moe.experts.3.w2.lora_B.weight", keys);
        Assert.Contains("base_model.model.model.layers.1.block_sparse_moe.gate.lora_A.weight", keys);
        Assert.Equal(2 * 2 * (2 + 1 + 4 * 3), keys.Count);

        // loaded back unmerged: the float64 forward of the base with the saved A, B merged
        using var adapter = LoraAdapter.Load(outDir);
        var lora = adapter.Modules.ToDictionary(kv => kv.Key, kv => (kv.Value.A.ToFloatArray().Select(x => (double)x).ToArray(), kv.Value.B.ToFloatArray().Select(x => (double)x).ToArray()));
        var reference = m.Logits(Ids, m.WithLora(lora, 4, adapter.Config.Scale));
        float[] unmerged;
        using (var lm = LanguageModel.Load(m.Folder, new CpuBackend(), outDir))
        {
            Assert.NotNull(lm.Weights.Layers[0].Moe!.Experts[1].Gate.Lora);
            using var logits = lm.Logits(Ids, 1);
            unmerged = logits.ToFloatArray();
        }
        AssertClose(reference, unmerged);

        // temper merge: Merge into the MoE weights, export, load the folder: the same logits
        string merged = Path.Combine(root, "merged");
        using (var lm = LanguageModel.Load(m.Folder, new CpuBackend()))
        {
            adapter.Merge(lm.Weights, lm.Decoder.Backend);
            ModelExport.Save(merged, lm, lm.Decoder.Backend);
        }
        using (var lm = LanguageModel.Load(merged, new CpuBackend()))
        {
            using var logits = lm.Logits(Ids, 1);
            AssertClose(reference, logits.ToFloatArray());
        }
    }

    private static void AssertClose(double[][] reference, float[] actual)
    {
        double maxRef = reference.Max(r => r.Max(Math.Abs)), maxErr = 0;
        for (int t = 0; t < reference.Length; t++)
            for (int v = 0; v < MoeTiny.Vocab; v++) maxErr = Math.Max(maxErr, Math.Abs(reference[t][v] - actual[t * MoeTiny.Vocab + v]));
        Assert.True(maxErr <= 1e-4 * maxRef, $"max abs error {maxErr:G4} exceeds 1e-4 x max|ref| = {1e-4 * maxRef:G4}");
    }

    [Fact]
    public void A_dpo_step_runs_on_a_qwen2_moe_model()
    {
        string dir = Path.Combine(TempFolder.Create("temper-moe-dpo"), "out");
        var o = new SftOptions
        {
            ModelDir = MoeTiny.Qwen2Moe.Folder, DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "dpo.jsonl"), OutDir = dir,
            LoraTargets = ["q_proj", "gate_proj", "up_proj", "down_proj", "gate"], BatchSize = 2, MaxSteps = 1,
        };
        new DpoTrainer(o, new PreferenceOptions { Beta = 0.1 }, new CpuBackend()).Run();
        var line = RunMetrics.First(dir);
        Assert.True(double.IsFinite(line["loss"]!.GetValue<double>()) && line["grad_norm"]!.GetValue<double>() > 0, line.ToJsonString());
        Assert.True(File.Exists(Path.Combine(dir, "adapter_model.safetensors")));
    }

    [Theory, MemberData(nameof(Variants))]
    public void Qlora_loss_and_gradients_equal_the_dequantized_models(string name)
    {
        // --qlora: routers, experts (and Qwen2-MoE's shared expert and its gate) in NF4; the same LoRA over the model
        // written from their dequantised weights gives the same loss and LoRA gradients
        var m = Variant(name);
        string dir = m.Write(TempFolder.Create("temper-moe-qlora"));
        var (q, _) = WithLora(m, LanguageModel.Load(dir, new CpuBackend(), qlora: true));
        using var _q = q;
        Assert.All(q.Weights.Projections, p => Assert.NotNull(p.Nf4));
        var (plain, _) = WithLora(m, LanguageModel.Load(DequantizedModel.Copy(dir, q), new CpuBackend()));
        using var _p = plain;
        var (lossQ, gradsQ) = Backprop(q, m, checkpointing: false, full: false);
        var (lossP, gradsP) = Backprop(plain, m, checkpointing: false, full: false);
        Assert.True(Math.Abs(lossQ - lossP) <= 1e-5 * Math.Abs(lossP), $"QLoRA loss {lossQ:R}, dequantised model {lossP:R}");
        Assert.Equal(gradsP.Keys.Order(), gradsQ.Keys.Order());
        Assert.True(gradsP.Keys.Count(k => k.Contains(".experts.", StringComparison.Ordinal)) >= 8);
        foreach (var (key, g) in gradsP)
        {
            if (g.All(x => x == 0)) continue; // an expert no token is routed to
            double err = GradientParityTests.RelativeL2(g, gradsQ[key]);
            Assert.True(err < 1e-4, $"{key}: relative L2 error {err:G3}");
        }
    }
}
