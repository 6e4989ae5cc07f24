// The router load-balancing loss (output_router_logits) in the preference verbs, as TRL's DPO, KTO, ORPO and CPO trainers
// add it (trl 0.24: coef x the aux loss of the policy's gradient forward added to each micro-batch's mean loss, the
// Trainer dividing each micro-batch by the accumulation steps). On MoeTiny's Mixtral (config.json's coefficient 0.02),
// 4 DPO pairs as 2 micro-batches of 2: the first step's loss = the run without the flag + coef x the logged aux_loss, which
// is the mean over the two micro-batches of the float64 load_balancing_loss_func over each one's chosen and rejected rows'
// real tokens; the field absent = the config classes' 0.001 (TRL reads the attribute the config class always sets), 0.0
// = the plain loss with aux_loss still logged; KTO, ORPO and CPO the plain loss + coef x their logged aux; and in one DPO
// micro-batch the gradient the term adds (the router's LoRA moved) = share x coef x the aux loss's own gradient.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Data;
using Temper.Training.Lora;
using Temper.Training.Preference;
using Temper.Training.Trainers;

namespace Temper.Tests;

public sealed class MoePreferenceAuxLossTests
{
    private static string Data(string name) => Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", name);

    private static SftOptions Options(string model, string data, string outDir) => new()
    {
        ModelDir = model, DataPath = data, OutDir = outDir, LoraTargets = ["q_proj", "gate"], LoraRank = 4, LoraAlpha = 8,
        BatchSize = 2, GradAccum = 2, MaxSteps = 1, WarmupSteps = 0,
    };

    private static JsonObject DpoRun(string model, PreferenceMethod method = PreferenceMethod.Dpo)
    {
        string outDir = Path.Combine(TempFolder.Create("temper-moe-aux-pref"), "out");
        new DpoTrainer(Options(model, Data("dpo.jsonl"), outDir), new PreferenceOptions(), new CpuBackend(1), method).Run();
        return RunMetrics.First(outDir);
    }

    private static double Loss(JsonObject line) => line["loss"]!.GetValue<double>();
    private static double Aux(JsonObject line) => line["aux_loss"]!.GetValue<double>();

    [Fact]
    public void Dpo_adds_coef_times_the_policy_forwards_aux_per_micro_batch_divided_by_the_accumulation_steps()
    {
        var plain = DpoRun(MoeTiny.Mixtral.Folder);
        Assert.Null(plain["aux_loss"]);
        var aux = DpoRun(MoeAuxLossTests.AuxFolder(_ => { }));

        // the float64 aux of each micro-batch's rows [chosen...; rejected...] (the step's pairs as the run's batcher draws them)
        using var lm = LanguageModel.Load(MoeTiny.Mixtral.Folder, new CpuBackend(1));
        var o = Options(MoeTiny.Mixtral.Folder, Data("dpo.jsonl"), "unused");
        var pairs = PreferenceDataset.Load(o.DataPath, lm.RequireTokenizer(), lm.Template, unpaired: false, o.MaxLength).Pairs;
        var cursor = new BatchCursor(0, 0);
        var micro = new SftBatcher(pairs.Select(x => x.Chosen).ToList(), o.BatchSize, 0, (ulong)o.Seed).StepBatches(ref cursor, o.GradAccum);
        Assert.Equal(2, micro.Count);
        double expected = 0;
        foreach (var mb in micro)
        {
            var rows = mb.ExampleIndices.Select(i => pairs[i].Chosen).Concat(mb.ExampleIndices.Select(i => pairs[i].Rejected)).ToList();
            double a = MoeTiny.Mixtral.LossWithRouterAux(rows.Select(r => r.Ids).ToArray(), rows.Select(r => r.Labels).ToArray(), 0).Aux;
            expected += a * mb.ExampleIndices.Length / pairs.Count; // TRL: each micro-batch's (loss + coef aux) / 2 accumulation steps
        }
        Assert.True(expected > 0.5, $"aux {expected}");
        Assert.True(Math.Abs(Aux(aux) - expected) <= 1e-5 * expected, $"logged aux_loss {Aux(aux):R}, float64 {expected:R}");
        Assert.Equal(Loss(plain) + 0.02 * Aux(aux), Loss(aux), 1e-9);
        Assert.NotEqual(plain["grad_norm"]!.GetValue<double>(), aux["grad_norm"]!.GetValue<double>());

        // router_aux_loss_coef absent: MixtralConfig's default 0.001 (TRL's getattr finds it set); 0.0: the plain loss, aux still logged
        var absent = DpoRun(MoeAuxLossTests.AuxFolder(r => r.Remove("router_aux_loss_coef")));
        Assert.Equal(Aux(aux), Aux(absent));
        Assert.Equal(Loss(plain) + 0.001 * Aux(absent), Loss(absent), 1e-9);
        var zero = DpoRun(MoeAuxLossTests.AuxFolder(r => r["router_aux_loss_coef"] = 0.0));
        Assert.Equal(Aux(aux), Aux(zero));
        Assert.Equal(Loss(plain), Loss(zero), 1e-12);
        Assert.Equal(plain["grad_norm"]!.GetValue<double>(), zero["grad_norm"]!.GetValue<double>(), 1e-9);
    }

    [Theory]
    [InlineData("kto"), InlineData("orpo"), InlineData("cpo")]
    public void Kto_orpo_and_cpo_add_coef_times_their_logged_aux(string verb)
    {
        JsonObject Run(string model)
        {
            string outDir = Path.Combine(TempFolder.Create("temper-moe-aux-" + verb), "out");
            if (verb == "kto") new KtoTrainer(Options(model, Data("kto.jsonl"), outDir), new PreferenceOptions(), new CpuBackend(1)).Run();
            else return DpoRun(model, verb == "orpo" ? PreferenceMethod.Orpo : PreferenceMethod.Cpo);
            return RunMetrics.First(outDir);
        }
        var plain = Run(MoeTiny.Mixtral.Folder);
        var aux = Run(MoeAuxLossTests.AuxFolder(_ => { }));
        Assert.Null(plain["aux_loss"]);
        Assert.True(Aux(aux) > 0.5 && Aux(aux) <= MoeTiny.Mixtral.Experts, aux.ToJsonString()); // E sum f P: k when balanced, at most E
        Assert.Equal(Loss(plain) + 0.02 * Aux(aux), Loss(aux), 1e-9);
    }

    [Fact]
    public void A_dpo_micro_batchs_aux_gradient_is_share_times_coef_times_the_aux_losss_own()
    {
        using var lm = LanguageModel.Load(MoeAuxLossTests.AuxFolder(_ => { }), new CpuBackend(1));
        LoraInit.Attach(lm.Weights, new LoraConfig(2, 4, false, ["q_proj", "gate"], null, 0), lm.Decoder.Backend, seed: 3);
        var rng = new Random(7);
        foreach (var p in lm.Weights.Projections)
            if (p.Lora is { } l)
                foreach (ref float v in l.B.Floats) v = (float)(rng.NextDouble() - 0.5) * 0.4f;
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        using var reference = ReferenceModel.AdapterOff(lm.Weights);
        var pairs = PreferenceDataset.Load(Data("dpo.jsonl"), lm.RequireTokenizer(), lm.Template, unpaired: false).Pairs.Take(2).ToList();
        var bp = new DecoderBackprop(lm.Decoder);
        const double coef = 0.5, share = 0.5;
        Dictionary<string, float[]> Grads(Action pass)
        {
            ps.ZeroGrads();
            pass();
            return ps.All.ToDictionary(p => p.Name, p => p.Grad.Floats.ToArray());
        }
        var withAux = Grads(() => DpoMicroBatch.Run(bp, ps.GradOf, pairs, share, new PreferenceOptions(), 0, reference, routerAuxCoef: coef));
        var without = Grads(() => DpoMicroBatch.Run(bp, ps.GradOf, pairs, share, new PreferenceOptions(), 0, reference, routerAuxCoef: 0));
        Assert.Null(bp.RouterAuxLossCoef); // restored after each gradient pass
        // the aux loss's own gradient: a pass over the same rows with the cross-entropy weighted 0
        var b = SftBatcher.Pad(pairs.Select(x => x.Chosen).Concat(pairs.Select(x => x.Rejected)).ToList(), 0);
        var own = Grads(() => new DecoderBackprop(lm.Decoder) { RouterAuxLossCoef = 1 }.Run(b.Ids, b.Labels, b.Mask, b.Batch, 0f, ps.GradOf));
        string router = $"model.layers.1.{MoeTiny.Mixtral.Module}.gate.lora_B.weight";
        double moved = GradientParityTests.RelativeL2(withAux[router], without[router]);
        Assert.True(moved > 0.02, $"the aux term changed the router's LoRA B gradient by only {moved:G3} (relative L2)");
        foreach (var (name, g) in withAux)
        {
            var added = g.Zip(without[name], (x, y) => x - y).ToArray();
            var want = own[name].Select(x => (float)(share * coef * x)).ToArray();
            if (want.All(x => x == 0)) continue;
            double err = GradientParityTests.RelativeL2(added, want);
            Assert.True(err < 1e-3, $"{name}: the added gradient is {err:G3} (relative L2) from share x coef x d aux");
        }
    }
}
