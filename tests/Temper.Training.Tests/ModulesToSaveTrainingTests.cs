// --modules-to-save on the llama-tiny fixture (tied embeddings): the trained copies of the embedding and LM head are
// two parameters apart from each other and from the base (PEFT's untying), their gradients are the loss's (a
// directional derivative against central differences), a run saves them in PEFT's layout, which loads back to the
// same logits, learns, resumes bit for bit, continues from its folder, and is planned for; a DPO reference with the
// adapter off reads the base's own embedding and head (step 0 at ln 2; a frozen copy of the adapter as reference too);
// refusals; step 0's loss and gradients against PEFT's (a fixture owed until tests/reference/make_modules_to_save_reference.py runs).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Preference;
using Temper.Training.Trainers;
using static Temper.Tests.TinyRows;

namespace Temper.Tests;

public sealed class ModulesToSaveTrainingTests
{
    private static JsonObject[] Metrics(string dir) => RunMetrics.Read(dir);

    private static SftOptions Sft(string outDir) => ShortSft(outDir) with { ModulesToSave = ["embed_tokens", "lm_head"], LoraRank = 4, LoraAlpha = 8, LearningRate = 0.01f };

    // The copies (and every LoRA B) moved off the base, as training would.
    private static void Perturb(TrainableParameters ps, int seed)
    {
        var rng = new Random(seed);
        foreach (var p in ps.All.Where(p => !p.Name.Contains(".lora_A.", StringComparison.Ordinal)))
            foreach (ref float x in p.Value.Floats) x += (float)(0.02 * (rng.NextDouble() - 0.5));
    }

    [Fact]
    public void The_copies_are_separate_parameters_whose_gradients_are_the_loss_s()
    {
        using var run = TrainingRun.Open(Sft(TempFolder.Create("temper-mts-grad")), new CpuBackend(1), setsDropoutSeed: true);
        var w = run.Model.Weights;
        var embed = run.Params.All.Single(p => p.Name == "model.embed_tokens.weight");
        var head = run.Params.All.Single(p => p.Name == "lm_head.weight");
        Assert.NotSame(embed.Value, head.Value); // tied in the base, two copies trained apart (PEFT's ModulesToSaveWrapper deep-copies each)
        Assert.Same(w.BaseEmbed, w.LmHead.BaseWeight);
        Assert.Equal(w.BaseEmbed.Floats.ToArray(), embed.Value.Floats.ToArray());
        Perturb(run.Params, 5);
        var bp = run.Backprop;
        double Loss() => bp.Run(Ids, Labels, [], 2, 1f, null).Sum(x => (double)x);
        run.Params.ZeroGrads();
        double trained = bp.Run(Ids, Labels, [], 2, 1f, run.Params.GradOf).Sum(x => (double)x);
        Assert.Equal(Loss(), trained, 1e-6 * trained);
        Assert.Contains(embed.Grad.Floats.ToArray(), g => g != 0);
        Assert.Contains(head.Grad.Floats.ToArray(), g => g != 0);
        Assert.All(embed.Grad.Floats.ToArray().Chunk(w.BaseEmbed.Shape[1]).Where((_, row) => !Ids.Contains(row)), r => Assert.All(r, g => Assert.Equal(0f, g)));
        AlongTheGradient.AssertMatches(run.Params, Loss);
    }

    [Fact]
    public void The_saved_folder_loads_back_to_the_same_logits_and_the_reference_is_the_base()
    {
        string dir = TempFolder.Create("temper-mts-save");
        using var run = TrainingRun.Open(Sft(dir), new CpuBackend(1), setsDropoutSeed: true);
        Perturb(run.Params, 7);
        using var trained = run.Model.Logits(Ids, 2);
        run.SaveResult();
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        Assert.Equal(["embed_tokens", "lm_head"], cfg["modules_to_save"]!.AsArray().Select(x => x!.GetValue<string>()));
        using (var f = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            Assert.Equal(run.Model.Weights.LmHead.Weight.Floats.ToArray(), f.Get("base_model.model.lm_head.weight").ToFloatArray());
        using (var loaded = LanguageModel.Load(Model, new CpuBackend(1), dir))
        using (var logits = loaded.Logits(Ids, 2))
            Assert.Equal(trained.Floats.ToArray(), logits.Floats.ToArray());

        // temper merge's path: the copies replace the weights, and the tied fixture is written untied.
        string merged = TempFolder.Create("temper-mts-merged");
        using (var lm = LanguageModel.Load(Model, new CpuBackend(1), dir, mergeAdapter: true))
            Temper.Training.Runs.ModelExport.Save(merged, lm, lm.Decoder.Backend);
        Assert.False(JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "config.json")))!["tie_word_embeddings"]!.GetValue<bool>());
        using (var exported = LanguageModel.Load(merged, new CpuBackend(1)))
        using (var logits = exported.Logits(Ids, 2))
        {
            double worst = trained.Floats.ToArray().Zip(logits.Floats.ToArray()).Max(p => Math.Abs(p.First - p.Second));
            Assert.True(worst < 1e-4, $"the merged model's logits differ by up to {worst:G3}");
        }

        // The reference (adapter off) computes the base's loss, not the copies'.
        double Loss(DecoderBackprop bp) => bp.Run(Ids, Labels, [], 2, 1f, null).Sum(x => (double)x);
        using var plain = LanguageModel.Load(Model, new CpuBackend(1));
        double baseLoss = Loss(new DecoderBackprop(plain.Decoder)), policy = Loss(run.Backprop), reference = 0;
        using var off = ReferenceModel.AdapterOff(run.Model.Weights);
        off.WithReference(run.Backprop, () => reference = Loss(run.Backprop));
        Assert.True(Math.Abs(policy - baseLoss) > 1e-3, "the policy equals the base; the check would prove nothing");
        Assert.Equal(baseLoss, reference, 1e-9 * baseLoss);
        Assert.Equal(policy, Loss(run.Backprop)); // and the policy's copies are back afterwards
    }

    [Fact]
    public void An_sft_run_learns_resumes_bit_for_bit_continues_and_predicts_its_memory()
    {
        string learn = TempFolder.Create("temper-mts-learn");
        new SftTrainer(Sft(learn) with { EvalData = Path.Combine(Model, "trainer", "sft.jsonl"), EvalEvery = 1 }, new CpuBackend(1)).Run();
        var eval = Metrics(learn).Select(x => x["eval_loss"]!.GetValue<double>()).ToArray();
        Assert.True(eval[^1] < eval[0] - 0.01, $"loss on the training data: {string.Join(", ", eval)}");
        using (var lm = LanguageModel.Load(Model, new CpuBackend(1)))
        {
            var cfg = lm.Config;
            var lora = new LoraConfig(4, 8, false, Sft("").LoraTargets, null, 0);
            var (with, without) = (MemoryPlan.For(cfg, new MemoryPlanOptions(3, 64, Lora: lora) { ModulesToSave = 2 }), MemoryPlan.For(cfg, new MemoryPlanOptions(3, 64, Lora: lora)));
            Assert.Equal(2L * 8 * cfg.VocabSize * cfg.HiddenSize, with.Adapters - without.Adapters);
            Assert.Equal(2L * 8 * cfg.VocabSize * cfg.HiddenSize, with.Optimizer - without.Optimizer);
        }

        string straight = TempFolder.Create("temper-mts-a"), split = TempFolder.Create("temper-mts-b");
        var memory = new SftTrainer(Sft(straight), new CpuBackend(1)).Run().Memory!;
        double ratio = (double)memory.MeasuredPeak!.Value / memory.Predicted.Total;
        Assert.True(ratio is > 0.85 and < 1.15, $"measured peak {memory.MeasuredPeak} against the plan's {memory.Predicted.Total}");
        using var cancel = new CancellationTokenSource();
        var first = new SftTrainer(Sft(split), new CpuBackend(1)) { OnStep = s => { if (s.Step == 3) cancel.Cancel(); } };
        Assert.True(first.Run(cancel.Token).Interrupted);
        new SftTrainer(Sft(split) with { Resume = true }, new CpuBackend(1)).Run();
        var (s, q) = (Metrics(straight), Metrics(split));
        for (int i = 0; i < 6; i++)
            foreach (var key in new[] { "loss", "grad_norm" })
                Assert.Equal(s[i][key]!.ToJsonString(), q[i][key]!.ToJsonString());
        using (var a = SafetensorsFile.Open(Path.Combine(straight, "adapter_model.safetensors")))
        using (var b = SafetensorsFile.Open(Path.Combine(split, "adapter_model.safetensors")))
            Assert.Equal(a.Get("base_model.model.model.embed_tokens.weight").ToFloatArray(), b.Get("base_model.model.model.embed_tokens.weight").ToFloatArray());

        // --init-adapter continues the folder, copies included: its first step starts where the run ended.
        string more = TempFolder.Create("temper-mts-more");
        new SftTrainer(Sft(more) with { InitAdapter = straight, ModulesToSave = [], MaxSteps = 1 }, new CpuBackend(1)).Run();
        Assert.True(Metrics(more)[0]["loss"]!.GetValue<double>() < s[0]["loss"]!.GetValue<double>() - 0.01);
        Assert.Equal(2, LoraConfig.Load(more).ModulesToSave.Count);
    }

    [Fact]
    public void Dpo_starts_at_ln_2_fresh_and_against_a_frozen_copy_of_its_adapter()
    {
        var dpo = Sft("") with { DataPath = Path.Combine(Model, "trainer", "dpo.jsonl"), MaxSteps = 1 };
        string fresh = TempFolder.Create("temper-mts-dpo");
        new DpoTrainer(dpo with { OutDir = fresh }, new PreferenceOptions(), new CpuBackend(1)).Run();
        Assert.Equal(Math.Log(2), Metrics(fresh)[0]["loss"]!.GetValue<double>(), 1e-6);

        string sft = TempFolder.Create("temper-mts-dpo-sft");
        new SftTrainer(Sft(sft) with { MaxSteps = 3, LearningRate = 0.05f }, new CpuBackend(1)).Run();
        string frozen = TempFolder.Create("temper-mts-dpo-frozen"), off = TempFolder.Create("temper-mts-dpo-off");
        new DpoTrainer(dpo with { OutDir = frozen, InitAdapter = sft, ModulesToSave = [] }, new PreferenceOptions { RefAdapter = sft }, new CpuBackend(1)).Run();
        Assert.Equal(Math.Log(2), Metrics(frozen)[0]["loss"]!.GetValue<double>(), 1e-5);
        new DpoTrainer(dpo with { OutDir = off, InitAdapter = sft, ModulesToSave = [] }, new PreferenceOptions(), new CpuBackend(1)).Run();
        Assert.True(Math.Abs(Metrics(off)[0]["loss"]!.GetValue<double>() - Math.Log(2)) > 1e-4, "the trained adapter equals the base; the check would prove nothing");
    }

    [Fact]
    public void Over_an_nf4_base_the_copies_train_unquantised()
    {
        string dir = TempFolder.Create("temper-mts-qlora");
        new SftTrainer(Sft(dir) with { ModelDir = QLoraParityTests.CopyModel("llama-tiny"), QLora = true, MaxSteps = 2 }, new CpuBackend(1)).Run();
        using var f = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
        Assert.Equal(new Shape(512, 64), f.Get("base_model.model.lm_head.weight").Shape);
        Assert.NotEqual(f.Get("base_model.model.lm_head.weight").ToFloatArray(), f.Get("base_model.model.model.embed_tokens.weight").ToFloatArray());
    }

    [Fact]
    public void Inapplicable_combinations_are_refused_in_one_line()
    {
        string Refusal(SftOptions o) => Assert.Throws<TemperException>(() => new SftTrainer(o, new CpuBackend(1)).Run()).Message;
        var o = Sft(TempFolder.Create("temper-mts-refused"));
        Assert.Contains("'norm' is not supported", Refusal(o with { ModulesToSave = ["norm"] }));
        Assert.Contains("--full", Refusal(o with { Full = true }));
        Assert.Contains("--modules-to-save", Refusal(o with { PromptTuningTokens = 2 }));
        Assert.Contains("--modules-to-save", Refusal(o with { PrefixTuningTokens = 2 }));
        Assert.Contains("lm_head is also in --lora-targets", Refusal(o with { LoraTargets = ["q_proj", "lm_head"] }));
        Assert.Contains("continues it as it is", Refusal(o with { InitAdapter = Path.Combine(Model, "adapter") }));
    }

    [Fact]
    public void Step0_loss_and_gradients_match_peft()
    {
        string dir = Fixtures.Hf("llama-tiny-modules-to-save");
        using var lm = LanguageModel.Load(Model, new CpuBackend());
        lm.AttachAdapter(Path.Combine(dir, "adapter"), merge: false, doraUnmerged: true, trainable: true);
        PeftStep0.AssertMatches(dir, lm);
    }
}
