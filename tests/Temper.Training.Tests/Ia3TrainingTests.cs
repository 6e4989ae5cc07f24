// (IA)^3 training (PEFT IA3, --ia3): per targeted projection a vector l, y = (x W^T + b) * l (k_proj, v_proj) or,
// feedforward, y = (x * l) W^T + b (down_proj). On the tiny Qwen3 model (Qwen3Tiny, its float64 forward beside it):
// a fresh run's vectors are ones and its step-0 model is the base, bit for bit; the gradients of perturbed vectors
// against central differences of a float64 forward scaled here, and gradient checkpointing bit for bit; on demo/base
// a short SFT on the addition task learns, saves a PEFT IA3 folder (PEFT's keys and shapes) that AttachAdapter reads
// back unmerged and merged with one set of logits, resumes bit for bit and continues through --init-adapter; DPO
// with --ia3 starts at ln 2 (the reference is the base); IA3 over an NF4 base equals IA3 over the dequantised model;
// the options it refuses; and step-0 parity with PEFT once tests/reference/make_ia3_reference.py has run.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Optim;
using Temper.Training.Preference;
using Temper.Training.Tasks;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class Ia3TrainingTests
{
    private static readonly int[] Ids = TinyRows.Row12Ids, Labels = TinyRows.Row12Labels;
    private static int Count => Labels.Skip(1).Count(l => l != -100);

    private static SftOptions Options(string model, string outDir) => new()
    {
        ModelDir = model, DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl"), OutDir = outDir, Ia3 = true, MaxSteps = 1, Threads = 1,
    };

    private static (double Loss, Dictionary<string, float[]> Grads) Backprop(LanguageModel lm, bool checkpointing)
    {
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        var losses = new DecoderBackprop(lm.Decoder) { GradientCheckpointing = checkpointing }.Run(Ids, Labels, [], 1, 1f / Count, ps.GradOf);
        return (losses.Sum() / Count, ps.All.ToDictionary(p => p.Name, p => p.Grad.Floats.ToArray()));
    }

    [Fact]
    public void A_fresh_run_starts_at_ones_on_peft_s_default_modules_and_step0_is_the_base()
    {
        string dir = TempFolder.Create("temper-ia3-init");
        using var run = TrainingRun.Open(Options(Qwen3Tiny.Folder, dir), new CpuBackend(1));
        var adapted = run.Model.Weights.Projections.Where(p => p.Ia3 != null).ToArray();
        Assert.Equal(3 * Qwen3Tiny.Layers, adapted.Length);
        foreach (var p in adapted)
        {
            bool ff = p.Name.EndsWith("mlp.down_proj", StringComparison.Ordinal);
            Assert.True(p.Name.EndsWith("k_proj", StringComparison.Ordinal) || p.Name.EndsWith("v_proj", StringComparison.Ordinal) || ff, p.Name);
            Assert.Equal(ff, p.Ia3!.Feedforward);
            Assert.Equal(ff ? p.In : p.Out, p.Ia3.Vector.Elements);
            Assert.All(p.Ia3.Vector.Floats.ToArray(), v => Assert.Equal(1f, v));
        }
        Assert.Equal(adapted.Sum(p => p.Ia3!.Vector.Elements), run.Params.Count);
        using var base_ = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        using (var a = run.Model.Logits(Ids, 1))
        using (var b = base_.Logits(Ids, 1))
            Assert.Equal(b.Floats.ToArray(), a.Floats.ToArray());
        var (loss, grads) = Backprop(run.Model, checkpointing: false);
        Assert.Equal(Qwen3Tiny.Loss(Ids, Labels), loss, 1e-5 * loss);
        Assert.All(grads, g => Assert.Contains(g.Value, x => x != 0));
    }

    // l = 1 + 0.3 sin(...) on every adapted projection, so each shows in the output and the gradients.
    private static void Perturb(LanguageModel lm)
    {
        int k = 0;
        foreach (var p in lm.Weights.Projections.Where(p => p.Ia3 != null))
        {
            var v = p.Ia3!.Vector.Floats;
            k++;
            for (int i = 0; i < v.Length; i++) v[i] = (float)(1 + 0.3 * Math.Sin(2 * i + k));
        }
    }

    [Fact]
    public void Gradients_of_the_vectors_match_central_differences_of_a_float64_forward()
    {
        string dir = TempFolder.Create("temper-ia3-grad");
        using var run = TrainingRun.Open(Options(Qwen3Tiny.Folder, dir), new CpuBackend(1));
        Perturb(run.Model);
        var (loss, grads) = Backprop(run.Model, checkpointing: false);
        var vectors = run.Model.Weights.Projections.Where(p => p.Ia3 != null)
            .ToDictionary(p => p.Name, p => (L: p.Ia3!.Vector.Floats.ToArray().Select(x => (double)x).ToArray(), p.Ia3.Feedforward, p.Out));
        // y = W x * l (k, v: output scaling) or W (x * l) (down: feedforward), W x the float64 forward's own product.
        double[]? Project(string module, int t, double[] x)
        {
            if (!vectors.TryGetValue(module, out var v)) return null;
            var w = Qwen3Tiny.Weights[module + ".weight"];
            if (v.Feedforward) return Qwen3Tiny.MatVec(w, x.Select((xi, i) => xi * v.L[i]).ToArray(), v.Out);
            return Qwen3Tiny.MatVec(w, x, v.Out).Select((y, o) => y * v.L[o]).ToArray();
        }
        double Loss() => Qwen3Tiny.Loss(Ids, Labels, null, Project);
        Assert.Equal(Loss(), loss, 1e-5 * loss);
        Assert.True(Math.Abs(Qwen3Tiny.Loss(Ids, Labels) - loss) > 1e-4, "the vectors should change the loss");
        var rng = new Random(7);
        foreach (string module in new[] { "model.layers.0.self_attn.k_proj", "model.layers.1.self_attn.v_proj", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj" })
        {
            var values = vectors[module].L;
            var entries = Enumerable.Range(0, 5).Select(_ => rng.Next(values.Length)).ToArray();
            CentralDifferences.AssertMatches(module + ".ia3_l", values, entries, grads[module + ".ia3_l"], Loss, tolerance: 2e-3, minRms: 1e-7);
        }
        var (loss2, grads2) = Backprop(run.Model, checkpointing: true);
        Assert.Equal(loss, loss2);
        foreach (var (name, g) in grads) Assert.Equal(g, grads2[name]);
    }

    private static JsonObject[] Metrics(string dir) =>
        File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!.AsObject()).ToArray();

    private static SftOptions AdditionSft(string data) => new()
    {
        ModelDir = Path.Combine(Fixtures.RepoRoot, "demo", "base"), DataPath = data, OutDir = "", Ia3 = true,
        BatchSize = 16, MaxSteps = 12, LearningRate = 3e-2f, Scheduler = ScheduleKind.Constant, MaxLength = 64, Seed = 4, Threads = 1,
    };

    [Fact]
    public void Ia3_sft_learns_saves_a_peft_folder_that_reads_back_resumes_exactly_and_continues()
    {
        string root = TempFolder.Create("temper-ia3-sft");
        string data = Path.Combine(root, "train.jsonl");
        AdditionTask.ToSftJsonl(new AdditionTask(10, 49).Train(64, 9), data, conversational: false);
        var o = AdditionSft(data);
        string straight = Path.Combine(root, "straight"), split = Path.Combine(root, "split"), more = Path.Combine(root, "more");
        var reports = new SftTrainer(o with { OutDir = straight }, new CpuBackend(1)).Run().Reports;
        double first = reports.Take(2).Average(r => r.Loss), last = reports.TakeLast(2).Average(r => r.Loss);
        Assert.True(last < 0.9 * first, $"IA3 SFT loss {first:F3} over the first two steps, {last:F3} over the last two");

        // PEFT's folder: peft_type IA3, its fields, ia3_l [Out,1] (k, v) and [1,In] (down).
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(straight, "adapter_config.json")))!;
        Assert.Equal("IA3", cfg["peft_type"]!.GetValue<string>());
        Assert.Equal(["k_proj", "v_proj", "down_proj"], cfg["target_modules"]!.AsArray().Select(x => x!.GetValue<string>()));
        Assert.Equal(["down_proj"], cfg["feedforward_modules"]!.AsArray().Select(x => x!.GetValue<string>()));
        Assert.False(cfg["fan_in_fan_out"]!.GetValue<bool>());
        Assert.True(cfg["init_ia3_weights"]!.GetValue<bool>());
        using var base_ = LanguageModel.Load(o.ModelDir, new CpuBackend());
        var k0 = base_.Weights.Layers[0].K;
        var down0 = base_.Weights.Layers[0].Down;
        using (var f = SafetensorsFile.Open(Path.Combine(straight, "adapter_model.safetensors")))
        {
            Assert.Equal(new Shape(k0.Out, 1), f.Get("base_model.model.model.layers.0.self_attn.k_proj.ia3_l").Shape);
            Assert.Equal(new Shape(1, down0.In), f.Get("base_model.model.model.layers.0.mlp.down_proj.ia3_l").Shape);
            Assert.Equal(3 * base_.Config.NumLayers, f.Entries.Count);
            Assert.Contains(f.Get("base_model.model.model.layers.0.mlp.down_proj.ia3_l").ToFloatArray(), v => v != 1f);
        }
        var ids = Enumerable.Range(0, 12).Select(i => (i * 7 + 3) % base_.Config.VocabSize).ToArray();
        using var baseLogits = base_.Logits(ids, 1);
        using var unmerged = LanguageModel.Load(o.ModelDir, new CpuBackend(), straight);
        using var merged = LanguageModel.Load(o.ModelDir, new CpuBackend(), straight, mergeAdapter: true);
        using var u = unmerged.Logits(ids, 1);
        using var m = merged.Logits(ids, 1);
        double max = u.Floats.ToArray().Max(Math.Abs);
        for (int i = 0; i < u.Elements; i++) Assert.True(Math.Abs(u.Floats[i] - m.Floats[i]) <= 1e-4 * max, $"logit {i}: unmerged {u.Floats[i]}, merged {m.Floats[i]}");
        Assert.True(u.Floats.ToArray().Zip(baseLogits.Floats.ToArray()).Max(t => Math.Abs(t.First - t.Second)) > 1e-3 * max, "the trained adapter equals the base");

        using var cancel = new CancellationTokenSource();
        var interrupted = new SftTrainer(o with { OutDir = split }, new CpuBackend(1)) { OnStep = s => { if (s.Step == 4) cancel.Cancel(); } };
        Assert.True(interrupted.Run(cancel.Token).Interrupted);
        var resumed = new SftTrainer(o with { OutDir = split, Resume = true }, new CpuBackend(1)).Run().Reports;
        Assert.Equal(reports.Skip(4).Select(r => (r.Loss, r.GradNorm)), resumed.Select(r => (r.Loss, r.GradNorm)));
        using (var a = SafetensorsFile.Open(Path.Combine(straight, "adapter_model.safetensors")))
        using (var b = SafetensorsFile.Open(Path.Combine(split, "adapter_model.safetensors")))
            foreach (var e in a.Entries) Assert.Equal(a.Get(e.Name).ToFloatArray(), b.Get(e.Name).ToFloatArray());

        // --init-adapter of the IA3 folder (no --ia3 needed) continues it: its first step starts where the straight run ended.
        var continued = new SftTrainer(o with { OutDir = more, InitAdapter = straight, MaxSteps = 2, Ia3 = false }, new CpuBackend(1)).Run().Reports;
        Assert.True(continued[0].Loss < 0.9 * first, $"continued from the adapter at loss {continued[0].Loss:F3}; the fresh run started at {first:F3}");
        Assert.Equal("IA3", JsonNode.Parse(File.ReadAllText(Path.Combine(more, "adapter_config.json")))!["peft_type"]!.GetValue<string>());
        Directory.Delete(root, recursive: true);
    }

    [Fact]
    public void Dpo_with_ia3_starts_at_ln_2_and_its_reference_is_the_base()
    {
        string model = Fixtures.Hf("llama-tiny");
        var dpo = Options(model, "") with { DataPath = Path.Combine(model, "trainer", "dpo.jsonl"), BatchSize = 4 };
        string fresh = TempFolder.Create("temper-ia3-dpo");
        new DpoTrainer(dpo with { OutDir = fresh }, new PreferenceOptions(), new CpuBackend(1)).Run();
        Assert.Equal(Math.Log(2), Metrics(fresh)[0]["loss"]!.GetValue<double>(), 1e-6);

        string sft = TempFolder.Create("temper-ia3-dpo-sft"), off = TempFolder.Create("temper-ia3-dpo-off");
        new SftTrainer(Options(model, sft) with { MaxSteps = 3, LearningRate = 0.05f }, new CpuBackend(1)).Run();
        new DpoTrainer(dpo with { OutDir = off, InitAdapter = sft, Ia3 = false }, new PreferenceOptions(), new CpuBackend(1)).Run();
        Assert.True(Math.Abs(Metrics(off)[0]["loss"]!.GetValue<double>() - Math.Log(2)) > 1e-4, "the trained vectors are off in the reference, so the margin is not 0");
    }

    [Fact]
    public void Ia3_over_an_nf4_base_equals_ia3_over_the_dequantized_model()
    {
        (double, TrainableParameters) Step(LanguageModel lm)
        {
            var be = lm.Decoder.Backend;
            foreach (var p in lm.Weights.Projections.Where(p => p.Name.EndsWith("k_proj", StringComparison.Ordinal) || p.Name.EndsWith("v_proj", StringComparison.Ordinal) || p.Name.EndsWith("down_proj", StringComparison.Ordinal)))
            {
                bool ff = p.Name.EndsWith("down_proj", StringComparison.Ordinal);
                int n = ff ? p.In : p.Out;
                p.Ia3 = Ia3View.Create(be, Tensor.FromFloats(new Shape(n), Enumerable.Range(0, n).Select(i => (float)(1 + 0.3 * Math.Sin(i))).ToArray()), ff);
            }
            var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
            return (new DecoderBackprop(lm.Decoder).Run(Ids, Labels, [], 1, 1f / Count, ps.GradOf).Sum() / Count, ps);
        }
        QLoraParityTests.AssertNf4EqualsDequantized("IA3 over NF4", Step);
    }

    [Fact]
    public void Options_ia3_does_not_support_are_refused_in_one_line_naming_the_option()
    {
        string model = Fixtures.Hf("llama-tiny");
        var o = Options(model, TempFolder.Create("temper-ia3-bad"));
        void Refused(SftOptions bad, string option)
        {
            var e = Assert.Throws<TemperException>(() => new SftTrainer(bad, new CpuBackend(1)).Run());
            Assert.Contains(option, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        Refused(o with { Full = true }, "--full");
        Refused(o with { UseDora = true }, "--use-dora");
        Refused(o with { LoraDropout = 0.1 }, "--lora-dropout");
        Refused(o with { LoraPlusRatio = 4 }, "--loraplus-lr-ratio");
        Refused(o with { ModulesToSave = ["lm_head"] }, "--modules-to-save");
        Refused(o with { PromptTuningTokens = 4 }, "--prompt-tuning");
        Refused(o with { Ia3Feedforward = ["down_proj", "up_proj"] }, "subset of target_modules");
        Refused(o with { Ia3Targets = ["k_proj", "lm_head"], Ia3Feedforward = [] }, "lm_head");
        Refused(o with { Ia3Targets = ["nothing_proj"], Ia3Feedforward = [] }, "no projection");
        Refused(o with { InitAdapter = Path.Combine(model, "adapter") }, "drop --ia3");
    }

    /// <summary>Step-0 parity with PEFT: the loss and every ia3_l gradient of the adapter tests/reference/make_ia3_reference.py
    /// saved (owed until a machine with torch runs it).</summary>
    [Fact]
    public void Step0_loss_and_gradients_match_peft()
    {
        string dir = Fixtures.Hf("llama-tiny-ia3");
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend());
        lm.AttachAdapter(Path.Combine(dir, "adapter"), merge: false);
        var (ids, b) = PeftStep0.AssertMatches(dir, lm);
        using var logits = lm.Logits(ids, b);
        double logitErr = GradientParityTests.RelativeL2(r.Get("logits").Floats, logits.Floats);
        Assert.True(logitErr < 1e-4, $"IA3 logits: relative L2 error {logitErr:G3}");
    }
}
