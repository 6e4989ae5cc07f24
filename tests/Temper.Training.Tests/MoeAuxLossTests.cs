// transformers' router load-balancing loss (output_router_logits, router_aux_loss_coef) in mixture-of-experts training:
// DecoderBackprop's aux loss of a right-padded batch of two sequences against MoeTiny's float64 load_balancing_loss_func over
// their real tokens (Mixtral; Qwen2-MoE with a dense layer and its shared expert); router and attention LoRA A/B and
// embedding gradients against central differences of the float64 CE + coef x aux (the aux term changing the router's
// gradients measurably), the same with gradient checkpointing bit for bit; an SFT run over a config with
// output_router_logits true logging aux_loss, its first step's loss = the plain run's + coef x the sum of its
// micro-batches' aux losses (TRL's per-forward addition under gradient accumulation), and with router_aux_loss_coef 0 the
// plain loss with aux_loss still logged; bad router_aux_loss_coef values
// and verbs that do not add the loss (reward-model here) refused in one line naming config.json and the field.
// The preference verbs' aux loss is MoePreferenceAuxLossTests'.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using Temper.Training.Reward;
using Temper.Training.Trainers;

namespace Temper.Tests;

public sealed class MoeAuxLossTests
{
    // two sequences, the second right-padded with id 0 (mask 0, label -100) to the first's length
    private static readonly int[][] Seqs = [[5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501], [9, 300, 64, 12, 77, 200, 140]];
    private static readonly int[][] SeqLabels = [[-100, -100, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501], [-100, 300, 64, 12, 77, 200, 140]];
    private const int Rank = 2;
    private const double Alpha = 4, Coef = 0.5; // a coefficient large enough that the aux term shows in the router's gradients

    public static TheoryData<string> Variants => ["mixtral-tiny", "qwen2-moe-tiny"];

    internal static (int[] Ids, int[] Labels, int[] Mask) Padded()
    {
        int t = Seqs.Max(s => s.Length);
        var ids = new int[Seqs.Length * t];
        var labels = Enumerable.Repeat(-100, ids.Length).ToArray();
        var mask = new int[ids.Length];
        for (int b = 0; b < Seqs.Length; b++)
            for (int i = 0; i < Seqs[b].Length; i++)
            {
                ids[b * t + i] = Seqs[b][i];
                labels[b * t + i] = SeqLabels[b][i];
                mask[b * t + i] = 1;
            }
        return (ids, labels, mask);
    }

    [Theory, MemberData(nameof(Variants))]
    public void Aux_loss_and_its_gradients_match_the_float64_load_balancing_loss(string name)
    {
        var m = MoeTiny.All.Single(v => v.Name == name);
        using var lm = LanguageModel.Load(m.Folder, new CpuBackend());
        var cfg = new LoraConfig(Rank, Alpha, false, m.Qwen ? ["q_proj", "gate", "shared_expert_gate"] : ["q_proj", "gate"], null, 0);
        LoraInit.Attach(lm.Weights, cfg, lm.Decoder.Backend, seed: 3);
        var rng = new Random(5);
        foreach (var p in lm.Weights.Projections)
            if (p.Lora is { } l)
                foreach (ref float b in l.B.Floats) b = (float)(rng.NextDouble() - 0.5) * 0.4f;
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend, [("model.embed_tokens.weight", lm.Weights.Embed)]);
        var (ids, labels, mask) = Padded();
        int count = SeqLabels.Sum(l => l.Skip(1).Count(x => x != -100));

        (double Total, double Aux, Dictionary<string, float[]> Grads) Backward(double coef, bool checkpointing)
        {
            ps.ZeroGrads();
            var bp = new DecoderBackprop(lm.Decoder) { RouterAuxLossCoef = coef, GradientCheckpointing = checkpointing };
            double ce = bp.Run(ids, labels, mask, Seqs.Length, 1f / count, ps.GradOf).Sum(x => (double)x) / count;
            return (ce + coef * bp.RouterAuxLoss, bp.RouterAuxLoss, ps.All.ToDictionary(p => p.Name, p => p.Grad.Floats.ToArray()));
        }

        var (total, aux, grads) = Backward(Coef, checkpointing: false);
        var lora = lm.Weights.Projections.Where(p => p.Lora != null)
            .ToDictionary(p => p.Name, p => (A: p.Lora!.A.Floats.ToArray().Select(x => (double)x).ToArray(), B: p.Lora.B.Floats.ToArray().Select(x => (double)x).ToArray()));
        var weights = m.Weights.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
        (double Total, double Aux) Reference() => m.LossWithRouterAux(Seqs, SeqLabels, Coef, m.WithLora(lora, Rank, cfg.Scale, weights));
        var (refTotal, refAux) = Reference();
        Assert.True(refAux > 0.5, $"aux {refAux}");
        Assert.True(Math.Abs(aux - refAux) <= 1e-5 * refAux, $"aux loss {aux:R}, float64 {refAux:R}");
        Assert.True(Math.Abs(total - refTotal) <= 1e-5 * refTotal, $"loss {total:R}, float64 {refTotal:R}");

        // the aux term moves the router's gradients, and the whole gradient is that of CE + coef x aux
        var (_, _, plain) = Backward(0, checkpointing: false);
        string router = $"model.layers.1.{m.Module}.gate";
        double change = GradientParityTests.RelativeL2(grads[router + ".lora_A.weight"], plain[router + ".lora_A.weight"]);
        Assert.True(change > 0.02, $"the aux term changed the router's LoRA A gradient by only {change:G3} (relative L2)");
        foreach (var (module, (a, b)) in lora)
            foreach (var (suffix, values) in new[] { (".lora_A.weight", a), (".lora_B.weight", b) })
            {
                var entries = Enumerable.Range(0, 3).Select(_ => rng.Next(values.Length)).ToArray();
                CentralDifferences.AssertMatches(module + suffix, values, entries, grads[module + suffix], () => Reference().Total, tolerance: 2e-3, minRms: 1e-7);
            }
        var embed = weights["model.embed_tokens.weight"];
        var rows = Seqs.SelectMany(s => s.Take(4)).Select(id => id * MoeTiny.Hidden + rng.Next(MoeTiny.Hidden)).ToArray();
        CentralDifferences.AssertMatches("embed_tokens", embed, rows, grads["model.embed_tokens.weight"], () => Reference().Total, tolerance: 2e-3, minRms: 1e-7);

        // gradient checkpointing recomputes each layer's routing: the same loss and gradients bit for bit
        var (total2, aux2, grads2) = Backward(Coef, checkpointing: true);
        Assert.Equal(aux, aux2);
        Assert.Equal(total, total2);
        foreach (var (key, g) in grads) Assert.Equal(g, grads2[key]);
    }

    internal static string AuxFolder(Action<JsonObject> edit)
    {
        var root = JsonNode.Parse(MoeTiny.Mixtral.ConfigJson())!.AsObject();
        root["output_router_logits"] = true;
        edit(root);
        string dir = MoeTiny.Mixtral.Write(TempFolder.Create("temper-moe-aux"));
        File.WriteAllText(Path.Combine(dir, "config.json"), root.ToJsonString());
        return dir;
    }

    [Fact]
    public void Sft_with_output_router_logits_logs_aux_loss_and_adds_coef_times_each_micro_batchs_aux()
    {
        string data = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl"), root = TempFolder.Create("temper-moe-aux-sft");
        SftOptions Options(string model, string outDir, int steps) => new()
        {
            ModelDir = model, DataPath = data, OutDir = outDir, LoraTargets = ["q_proj", "w1", "w2", "w3", "gate"], LoraRank = 4, LoraAlpha = 8,
            LearningRate = 1e-2f, BatchSize = 2, GradAccum = 2, MaxSteps = steps, WarmupSteps = 0,
        };
        string auxOut = Path.Combine(root, "aux"), plainOut = Path.Combine(root, "plain");
        new SftTrainer(Options(AuxFolder(_ => { }), auxOut, 3), new CpuBackend()).Run();
        new SftTrainer(Options(MoeTiny.Mixtral.Folder, plainOut, 1), new CpuBackend()).Run();
        var lines = RunMetrics.Read(auxOut);
        Assert.Equal(3, lines.Length);
        foreach (var line in lines)
        {
            double a = line["aux_loss"]!.GetValue<double>();
            Assert.True(a > 0.5 && a <= MoeTiny.Mixtral.Experts, line.ToJsonString()); // E sum f P: k when balanced, at most E
        }
        var plain = RunMetrics.First(plainOut);
        Assert.Null(plain["aux_loss"]);
        // the same weights at step 1: the aux run's loss is the plain one + 0.02 (config.json's coefficient) x the sum of the
        // two micro-batches' aux losses, which is 2 x their logged mean
        double expected = plain["loss"]!.GetValue<double>() + 0.02 * 2 * lines[0]["aux_loss"]!.GetValue<double>();
        Assert.Equal(expected, lines[0]["loss"]!.GetValue<double>(), 1e-9);

        // router_aux_loss_coef 0: the plain loss, and aux_loss still logged (the same batches and weights: the aux run's first)
        string zeroOut = Path.Combine(root, "zero");
        new SftTrainer(Options(AuxFolder(r => r["router_aux_loss_coef"] = 0.0), zeroOut, 1), new CpuBackend()).Run();
        var zero = RunMetrics.First(zeroOut);
        Assert.Equal(plain["loss"]!.GetValue<double>(), zero["loss"]!.GetValue<double>(), 1e-12);
        Assert.Equal(lines[0]["aux_loss"]!.GetValue<double>(), zero["aux_loss"]!.GetValue<double>(), 1e-9);
    }

    [Fact]
    public void Bad_coefficients_and_verbs_without_the_aux_loss_are_refused_in_one_line()
    {
        foreach (var (value, why) in new (JsonNode, string)[] { (-0.5, "must be a finite number >= 0"), ("much", "must be a number") })
        {
            string dir = AuxFolder(r => r["router_aux_loss_coef"] = value.DeepClone());
            var e = Assert.Throws<TemperException>(() => ModelConfig.Load(dir));
            Assert.DoesNotContain('\n', e.Message);
            Assert.Contains($"config.json: field 'router_aux_loss_coef' {why}", e.Message);
        }
        // TRL's reward trainer adds no aux loss (nor do its GRPO and GKD trainers): reward-model refuses the field
        string aux = AuxFolder(_ => { }), outDir = Path.Combine(TempFolder.Create("temper-moe-aux-reward"), "out");
        var o = new SftOptions { ModelDir = aux, DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "dpo.jsonl"), OutDir = outDir, MaxSteps = 1 };
        var reward = Assert.Throws<TemperException>(() => new RewardTrainer(o, new RewardOptions(), new CpuBackend(1)).Run());
        Assert.DoesNotContain('\n', reward.Message);
        Assert.Contains("config.json: field 'output_router_logits' is true", reward.Message);
        Assert.Contains("sft, pretrain, dpo, kto, orpo and cpo", reward.Message);
        Assert.False(Directory.Exists(outDir));
        using var lm = LanguageModel.Load(aux, new CpuBackend(1));
        var (ids, labels, mask) = Padded();
        var bp = Assert.Throws<TemperException>(() => new DecoderBackprop(lm.Decoder).Run(ids, labels, mask, 2, 1f, _ => null));
        Assert.Contains("'output_router_logits'", bp.Message);
    }
}
