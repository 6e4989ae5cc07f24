// Step-0 parity of the preference trainers with TRL/torch (trainer_reference.json): LoRA from the
// fixture adapter, the whole file as one batch, reference = the base with the adapter off. The first
// metrics line carries the loss of the initial weights and the LoRA gradient norm before clipping.
using System.Text.Json.Nodes;
using Temper.Kernels.Cpu;
using Temper.Training.Losses;
using Temper.Training.Preference;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class PreferenceTrainerTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    private static JsonNode Reference(string model, string method) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Hf(model), "trainer", "trainer_reference.json")))![method]!;

    private static SftOptions Options(string model, string data, string outDir) => new()
    {
        ModelDir = Fixtures.Hf(model),
        DataPath = Path.Combine(Fixtures.Hf(model), "trainer", data),
        OutDir = outDir,
        InitAdapter = Path.Combine(Fixtures.Hf(model), "adapter"),
        BatchSize = 64,
        MaxSteps = 1,
    };

    private static JsonObject FirstLine(string dir) => RunMetrics.First(dir);

    private static void AssertStep0(JsonObject line, JsonNode reference)
    {
        double loss = reference["loss"]!.GetValue<double>(), norm = reference["grad_norm"]!.GetValue<double>();
        Assert.True(Math.Abs(line["loss"]!.GetValue<double>() - loss) <= 1e-4 * Math.Abs(loss), $"loss {line["loss"]} vs {loss}");
        Assert.True(Math.Abs(line["grad_norm"]!.GetValue<double>() - norm) <= 1e-3 * norm, $"grad_norm {line["grad_norm"]} vs {norm}");
    }

    [Theory, MemberData(nameof(Models))]
    public void Dpo_step0_matches_trl(string model)
    {
        string dir = Directory.CreateTempSubdirectory("temper-dpo-").FullName;
        new DpoTrainer(Options(model, "dpo.jsonl", dir), new PreferenceOptions { Beta = 0.1 }, new CpuBackend()).Run();
        var line = FirstLine(dir);
        var reference = Reference(model, "dpo");
        AssertStep0(line, reference);
        Assert.Equal(reference["reward_accuracy"]!.GetValue<double>(), line["reward_accuracy"]!.GetValue<double>(), 1e-9);
        Assert.True(File.Exists(Path.Combine(dir, "adapter_model.safetensors")));
        Directory.Delete(dir, true);
    }

    [Theory, MemberData(nameof(Models))]
    public void Dpo_with_precomputed_reference_gives_the_same_step(string model)
    {
        string dir = Directory.CreateTempSubdirectory("temper-dpo-").FullName;
        new DpoTrainer(Options(model, "dpo.jsonl", dir), new PreferenceOptions { Beta = 0.1, PrecomputeRef = true }, new CpuBackend()).Run();
        AssertStep0(FirstLine(dir), Reference(model, "dpo"));
        var cache = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "ref_logps.json")))!;
        var expect = Reference(model, "dpo")["ref_chosen_logps"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        var got = cache["chosen"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        for (int i = 0; i < expect.Length; i++) Assert.Equal(expect[i], got[i], 1e-3);
        Directory.Delete(dir, true);
    }

    [Theory, MemberData(nameof(Models))]
    public void Kto_step0_matches_trl(string model)
    {
        string dir = Directory.CreateTempSubdirectory("temper-kto-").FullName;
        new KtoTrainer(Options(model, "kto.jsonl", dir), new PreferenceOptions { Beta = 0.1 }, new CpuBackend()).Run();
        var line = FirstLine(dir);
        var reference = Reference(model, "kto");
        AssertStep0(line, reference);
        Assert.Equal(reference["z0"]!.GetValue<double>(), line["kl_z0"]!.GetValue<double>(), 1e-4);
        Directory.Delete(dir, true);
    }

    [Theory, MemberData(nameof(Models))]
    public void Kto_apo_zero_unpaired_step0_is_its_formula_on_trls_log_probs(string model)
    {
        // TRL's apo_zero_unpaired: no KL estimate; desirable 1 - s(beta r), undesirable s(beta r), r = policy - reference.
        string dir = Directory.CreateTempSubdirectory("temper-kto-apo-").FullName;
        new KtoTrainer(Options(model, "kto.jsonl", dir), new PreferenceOptions { Beta = 0.1, KtoLossType = "apo_zero_unpaired" }, new CpuBackend()).Run();
        var line = FirstLine(dir);
        var reference = Reference(model, "kto");
        var policy = reference["policy_logps"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        var refLogps = reference["ref_logps"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        var desirable = File.ReadAllLines(Path.Combine(Fixtures.Hf(model), "trainer", "kto.jsonl")).Where(l => l.Length > 0)
            .Select(l => JsonNode.Parse(l)!["label"]!.GetValue<bool>()).ToArray();
        double Sig(double x) => 1 / (1 + Math.Exp(-x));
        double want = policy.Select((p, i) => desirable[i] ? 1 - Sig(0.1 * (p - refLogps[i])) : Sig(0.1 * (p - refLogps[i]))).Average();
        Assert.Equal(want, line["loss"]!.GetValue<double>(), 1e-5);
        Assert.Equal(0, line["kl_z0"]!.GetValue<double>());
        Directory.Delete(dir, true);
    }

    [Theory, MemberData(nameof(Models))]
    public void Orpo_step0_matches_trl(string model)
    {
        string dir = Directory.CreateTempSubdirectory("temper-orpo-").FullName;
        new DpoTrainer(Options(model, "dpo.jsonl", dir), new PreferenceOptions { Beta = 0.1 }, new CpuBackend(), PreferenceMethod.Orpo).Run();
        var line = FirstLine(dir);
        var reference = Reference(model, "orpo");
        AssertStep0(line, reference);
        Assert.Equal(reference["nll"]!.GetValue<double>(), line["nll"]!.GetValue<double>(), 1e-4);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Dpo_training_raises_the_reward_margin()
    {
        string dir = Directory.CreateTempSubdirectory("temper-dpo-").FullName;
        var o = Options("llama-tiny", "dpo.jsonl", dir) with { MaxSteps = 15, LearningRate = 5e-3f, BatchSize = 4 };
        new DpoTrainer(o, new PreferenceOptions { Beta = 0.1, LossType = DpoLossType.Sigmoid }, new CpuBackend()).Run();
        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToArray();
        Assert.True(lines[^1]["reward_margin"]!.GetValue<double>() > lines[0]["reward_margin"]!.GetValue<double>() + 0.05);
        Assert.True(lines[^1]["loss"]!.GetValue<double>() < lines[0]["loss"]!.GetValue<double>());
        Directory.Delete(dir, true);
    }
}

public class DpoRawIdsTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    // DPO in the library on raw ids: reference.safetensors' dpo.chosen / dpo.rejected [2,24], the completion
    // is every token after the first prompt_len; the loss, the four log-prob vectors and dpo.grad.* as PEFT gives them.
    [Theory, MemberData(nameof(Models))]
    public void Dpo_on_raw_ids_matches_logps_loss_and_gradients(string model)
    {
        string dir = Fixtures.Hf(model);
        var refJson = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!["dpo"]!;
        int promptLen = refJson["prompt_len"]!.GetValue<int>();
        using var r = Temper.Core.SafeTensors.SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = Temper.Models.LanguageModel.Load(dir, new CpuBackend(), Path.Combine(dir, "adapter"));
        Temper.Training.Data.SftExample Row(string name, int i)
        {
            var t = r.Get(name);
            var ids = t.Span<int>().Slice(i * t.Shape[1], t.Shape[1]).ToArray();
            var labels = ids.Select((id, k) => k < promptLen ? -100 : id).ToArray();
            return new(ids, labels, i + 1);
        }
        var rows = new[] { Row("dpo.chosen", 0), Row("dpo.chosen", 1), Row("dpo.rejected", 0), Row("dpo.rejected", 1) };
        var bp = new Temper.Models.DecoderBackprop(lm.Decoder);
        var pol = SequenceLogps.Compute(bp, rows, 0).Sums;
        using var reference = ReferenceModel.AdapterOff(lm.Weights);
        var rf = reference.Logps(bp, rows, 0);
        double[] V(string k) => refJson[k]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        var want = V("policy_chosen_logps").Concat(V("policy_rejected_logps")).ToArray();
        var wantRef = V("ref_chosen_logps").Concat(V("ref_rejected_logps")).ToArray();
        double maxRef = want.Concat(wantRef).Max(Math.Abs);
        for (int i = 0; i < 4; i++)
        {
            Assert.True(Math.Abs(pol[i] - want[i]) <= 1e-4 * maxRef, $"policy logp {i}: {pol[i]} vs {want[i]}");
            Assert.True(Math.Abs(rf[i] - wantRef[i]) <= 1e-4 * maxRef, $"ref logp {i}: {rf[i]} vs {wantRef[i]}");
        }
        var loss = DpoLoss.Compute(pol.AsSpan(0, 2), pol.AsSpan(2), rf.AsSpan(0, 2), rf.AsSpan(2), refJson["beta"]!.GetValue<double>());
        Assert.Equal(refJson["loss"]!.GetValue<double>(), loss.Loss, 1e-4 * refJson["loss"]!.GetValue<double>());
        using var ps = Temper.Training.TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        var b = Temper.Training.Data.SftBatcher.Pad(rows, 0);
        double[] w = [-loss.DChosen[0], -loss.DChosen[1], -loss.DRejected[0], -loss.DRejected[1]];
        bp.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, ps.GradOf, SequenceLogps.RowScales(w, b.Length));
        foreach (var p in ps.All)
        {
            string key = "dpo.grad." + p.Name.Replace(".weight", ".default.weight", StringComparison.Ordinal);
            double err = GradientParityTests.RelativeL2(r.Get(key).Floats, p.Grad.Floats);
            Assert.True(err < 1e-3, $"{key}: relative L2 error {err:G3}");
        }
    }

    [Fact]
    public void Reference_model_with_another_tokenizer_is_refused()
    {
        string dir = Directory.CreateTempSubdirectory("temper-ref-").FullName;
        var o = new SftOptions
        {
            ModelDir = Fixtures.Hf("llama-tiny"), DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "dpo.jsonl"), OutDir = dir, MaxSteps = 1, LoraRank = 2,
        };
        string refModel = Path.Combine(dir, "ref");
        Directory.CreateDirectory(refModel);
        foreach (var f in Directory.GetFiles(Fixtures.Hf("llama-tiny"))) File.Copy(f, Path.Combine(refModel, Path.GetFileName(f)));
        File.Copy(Path.Combine(Fixtures.Tokenizer("tok-qwen2"), "tokenizer.json"), Path.Combine(refModel, "tokenizer.json"), overwrite: true);
        var e = Assert.Throws<Temper.Core.TemperException>(() => new DpoTrainer(o with { OutDir = Path.Combine(dir, "run") }, new PreferenceOptions { RefModel = refModel }, new CpuBackend()).Run());
        Assert.Contains("tokenizer differs", e.Message);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Identical_chosen_and_rejected_is_named()
    {
        string dir = Directory.CreateTempSubdirectory("temper-pref-").FullName;
        string data = Path.Combine(dir, "pairs.jsonl");
        File.WriteAllText(data, """{"prompt": "Q?", "chosen": " yes", "rejected": " yes"}""" + "\n");
        var tok = Temper.Models.Text.HfTokenizer.Load(Fixtures.Hf("llama-tiny"));
        var e = Assert.Throws<Temper.Core.TemperException>(() => Temper.Training.Data.PreferenceDataset.Load(data, tok, null, unpaired: false));
        Assert.Contains($"{data}:1: chosen and rejected are identical", e.Message);
        File.WriteAllText(data, """{"prompt": "Q?", "completion": " yes", "label": "maybe"}""" + "\n");
        e = Assert.Throws<Temper.Core.TemperException>(() => Temper.Training.Data.PreferenceDataset.Load(data, tok, null, unpaired: true));
        Assert.Contains($"{data}:1: \"label\" must be true or false", e.Message);
        Directory.Delete(dir, true);
    }
}

public class DpoLearningTests
{
    // DPO learns: on a synthetic preference set (the addition task's prompts; chosen = the required
    // "Answer: N" line, rejected = a chatty wrong-format reply), held-out reward accuracy rises above 0.9.
    [Fact]
    public void Dpo_reward_accuracy_on_held_out_pairs_exceeds_0_9()
    {
        string dir = Directory.CreateTempSubdirectory("temper-dpo-learn-").FullName;
        var task = new Temper.Training.Tasks.AdditionTask(0, 99);
        static string Line(Temper.Training.Tasks.TaskItem i) => new JsonObject
        {
            ["prompt"] = i.Prompt + "\n",
            ["chosen"] = i.Completion,
            ["rejected"] = $"I think it is {i.Answer + 1}, probably",
        }.ToJsonString();
        string train = Path.Combine(dir, "train.jsonl"), held = Path.Combine(dir, "held.jsonl");
        File.WriteAllLines(train, task.Train(256, seed: 1).Select(Line));
        File.WriteAllLines(held, task.HeldOut(64, seed: 2).Select(Line));
        var o = new SftOptions
        {
            ModelDir = Fixtures.Hf("llama-tiny"), DataPath = train, OutDir = Path.Combine(dir, "run"), LoraRank = 8, LoraAlpha = 16,
            LearningRate = 5e-3f, BatchSize = 16, MaxSteps = 40, Seed = 1, Scheduler = Temper.Training.Optim.ScheduleKind.Constant,
        };
        new DpoTrainer(o, new PreferenceOptions { Beta = 0.1 }, new CpuBackend()).Run();

        using var lm = Temper.Models.LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(), o.OutDir);
        var data = Temper.Training.Data.PreferenceDataset.Load(held, lm.RequireTokenizer(), lm.Template, unpaired: false);
        var bp = new Temper.Models.DecoderBackprop(lm.Decoder);
        var chosen = data.Pairs.Select(p => p.Chosen).ToList();
        var rejected = data.Pairs.Select(p => p.Rejected).ToList();
        var pc = SequenceLogps.Compute(bp, chosen, 0).Sums;
        var pr = SequenceLogps.Compute(bp, rejected, 0).Sums;
        using var reference = ReferenceModel.AdapterOff(lm.Weights);
        var rc = reference.Logps(bp, chosen, 0);
        var rr = reference.Logps(bp, rejected, 0);
        var r = DpoLoss.Compute(pc, pr, rc, rr, 0.1);
        Console.WriteLine($"dpo held-out reward accuracy {r.RewardAccuracy:F3}, margin {r.RewardMargin:F3}");
        Assert.True(r.RewardAccuracy > 0.9, $"held-out reward accuracy {r.RewardAccuracy:F3}");
        Directory.Delete(dir, true);
    }
}
