// DoRA training (PEFT use_dora): per targeted projection y = m / ||W + s B A||_row * (x W^T + s (x A^T) B^T),
// the norm a constant in backward (DoRA §4.3, PEFT's detach). On the tiny Qwen3 model (Qwen3Tiny, its float64
// forward beside it): initialisation (m = ||W||_row, the step-0 model is the base), the gradients of m, A and B
// of every layer's projections against central differences of a float64 DoRA forward written here (the norm
// held at its value for the perturbation, as detached), and with LoRA dropout against PEFT's training forward
// (y = W x + (g - 1) W x_d + g s B A x_d) with the same masks, gradient checkpointing bit for bit, the saved adapter
// (PEFT's lora_magnitude_vector keys, use_dora) merged by LoraAdapter giving the unmerged logits (the inference
// pass's cached norm dropped when B changes); on demo/base
// a short DoRA SFT on the addition task learns, resumes exactly and continues through --init-adapter; DoRA over
// an NF4 base (QLoRA, the norm of the dequantised weight as PEFT takes it) equal to DoRA over the dequantised f32
// model; the options DoRA refuses; and step-0 parity with PEFT once tests/reference/make_dora_training_reference.py has run.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using Temper.Training.Optim;
using Temper.Training.Tasks;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class DoraTrainingTests
{
    private static readonly int[] Ids = TinyRows.Row12Ids, Labels = TinyRows.Row12Labels;
    private static readonly string[] Targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    private static readonly LoraConfig Config = new(4, 8, false, Targets, null, 0) { UseDora = true }; // scale 2

    /// <summary>Attaches DoRA views with seeded A, a non-zero B and magnitudes 0.7..1.3 times the row norms, so every
    /// part shows in the output and the gradients.</summary>
    private static void AttachPerturbed(LanguageModel lm, int seed)
    {
        var be = lm.Decoder.Backend;
        LoraInit.Attach(lm.Weights, Config, be, seed);
        var rng = new Random(seed);
        foreach (var p in lm.Weights.Projections)
        {
            var l = p.Lora!;
            foreach (ref float b in l.B.Floats) b = (float)(0.1 * (rng.NextDouble() * 2 - 1));
            p.DoraNorm(be, l.Magnitude!);
            foreach (ref float m in l.Magnitude!.Floats) m *= (float)(1 + 0.3 * (rng.NextDouble() * 2 - 1));
        }
    }

    private static (double Loss, Dictionary<string, float[]> Grads) Backprop(LanguageModel lm, bool checkpointing)
    {
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        int count = Labels.Skip(1).Count(l => l != -100);
        var losses = new DecoderBackprop(lm.Decoder) { GradientCheckpointing = checkpointing }.Run(Ids, Labels, [], 1, 1f / count, ps.GradOf);
        return (losses.Sum() / count, ps.All.ToDictionary(p => p.Name, p => p.Grad.Floats.ToArray()));
    }

    /// <summary>The DoRA parameters of every projection in float64: A [r,In], B [Out,r], m [Out].</summary>
    private static Dictionary<string, (double[] A, double[] B, double[] M)> Parameters(LanguageModel lm) =>
        lm.Weights.Projections.ToDictionary(p => p.Name, p => (
            p.Lora!.A.Floats.ToArray().Select(x => (double)x).ToArray(),
            p.Lora.B.Floats.ToArray().Select(x => (double)x).ToArray(),
            p.Lora.Magnitude!.Floats.ToArray().Select(x => (double)x).ToArray()));

    // W + s B A of one projection, row-major [Out,In], in float64.
    private static double[] Adapted(string module, (double[] A, double[] B, double[] M) d, float scale)
    {
        var w = Qwen3Tiny.Weights[module + ".weight"];
        int r = Config.Rank, outs = d.M.Length, ins = w.Length / outs;
        var v = (double[])w.Clone();
        for (int j = 0; j < outs; j++)
            for (int q = 0; q < ins; q++)
            {
                double ba = 0;
                for (int t = 0; t < r; t++) ba += d.B[j * r + t] * d.A[t * ins + q];
                v[j * ins + q] += scale * ba;
            }
        return v;
    }

    private static double[] RowNorms(double[] w, int rows)
    {
        int k = w.Length / rows;
        return Enumerable.Range(0, rows).Select(j => Math.Sqrt(w.AsSpan(j * k, k).ToArray().Sum(x => x * x))).ToArray();
    }

    /// <summary>The DoRA model's loss in float64: each projection's weight m / norm * (W + s B A), with the norms
    /// given (held fixed: the detached norm of DoRA §4.3).</summary>
    private static double DoraLoss(Dictionary<string, (double[] A, double[] B, double[] M)> dora, Dictionary<string, double[]> norms)
    {
        var w = Qwen3Tiny.Weights.ToDictionary(kv => kv.Key, kv => kv.Value);
        foreach (var (module, d) in dora)
        {
            var v = Adapted(module, d, Config.Scale);
            int outs = d.M.Length, k = v.Length / outs;
            for (int j = 0; j < outs; j++)
                for (int q = 0; q < k; q++) v[j * k + q] *= d.M[j] / norms[module][j];
            w[module + ".weight"] = v;
        }
        return Qwen3Tiny.Loss(Ids, Labels, w);
    }

    [Fact]
    public void Init_sets_the_magnitude_to_the_weight_row_norms_and_the_step0_model_is_the_base()
    {
        using var base_ = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        using var baseLogits = base_.Logits(Ids, 1);
        using var lm = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        LoraInit.Attach(lm.Weights, Config, lm.Decoder.Backend, 3);
        foreach (var p in lm.Weights.Projections)
        {
            var expected = RowNorms(Qwen3Tiny.Weights[p.Name + ".weight"], p.Out);
            var m = p.Lora!.Magnitude!.Floats;
            for (int j = 0; j < p.Out; j++) Assert.True(Math.Abs(m[j] - expected[j]) <= 1e-6 * expected[j], $"{p.Name} m[{j}] {m[j]} vs ||W||_row {expected[j]}");
        }
        using var logits = lm.Logits(Ids, 1);
        double max = baseLogits.Floats.ToArray().Max(Math.Abs);
        for (int i = 0; i < logits.Elements; i++)
            Assert.True(Math.Abs(logits.Floats[i] - baseLogits.Floats[i]) <= 1e-5 * max, $"logit {i}: DoRA at init {logits.Floats[i]}, base {baseLogits.Floats[i]}");
        var (loss, grads) = Backprop(lm, checkpointing: false);
        Assert.Equal(Qwen3Tiny.Loss(Ids, Labels), loss, 1e-5 * loss);
        Assert.Contains(grads, g => g.Key.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal) && g.Value.Any(x => x != 0));
    }

    [Fact]
    public void Gradients_of_m_A_B_match_central_differences_of_a_float64_dora_forward_with_the_norm_detached()
    {
        using var lm = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        AttachPerturbed(lm, 11);
        var (loss, grads) = Backprop(lm, checkpointing: false);
        var dora = Parameters(lm);
        var norms = dora.ToDictionary(kv => kv.Key, kv => RowNorms(Adapted(kv.Key, kv.Value, Config.Scale), kv.Value.M.Length));
        Assert.Equal(DoraLoss(dora, norms), loss, 1e-5 * loss);

        CheckCentralDifferences(dora, grads, () => DoraLoss(dora, norms));

        var (loss2, grads2) = Backprop(lm, checkpointing: true);
        Assert.Equal(loss, loss2);
        foreach (var (name, g) in grads) Assert.Equal(g, grads2[name]);
    }

    // Sampled entries of m, A and B of projections in both layers: backward against central differences of loss().
    private static void CheckCentralDifferences(Dictionary<string, (double[] A, double[] B, double[] M)> dora, Dictionary<string, float[]> grads, Func<double> loss)
    {
        var rng = new Random(5);
        foreach (string module in new[] { "model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.v_proj", "model.layers.1.mlp.gate_proj" })
            foreach (var (part, suffix) in new[] { ("A", ".lora_A.weight"), ("B", ".lora_B.weight"), ("m", ".lora_magnitude_vector") })
            {
                var values = part switch { "A" => dora[module].A, "B" => dora[module].B, _ => dora[module].M };
                var g = grads[module + suffix];
                var entries = Enumerable.Range(0, 4).Select(_ => rng.Next(values.Length)).ToArray();
                CentralDifferences.AssertMatches(module + suffix, values, entries, g, loss, tolerance: 2e-3, minRms: 1e-7);
            }
    }

    [Fact]
    public void With_lora_dropout_gradients_match_central_differences_of_peft_s_training_forward_and_checkpointing()
    {
        const float p = 0.25f;
        const ulong seed = 11;
        using var lm = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        var be = lm.Decoder.Backend;
        AttachPerturbed(lm, 13);
        int count = Labels.Skip(1).Count(l => l != -100);
        (double, Dictionary<string, float[]>) Run(bool checkpointing)
        {
            using var ps = TrainableParameters.Lora(lm.Weights, be);
            var bp = new DecoderBackprop(lm.Decoder) { LoraDropout = p, DropoutSeed = seed, GradientCheckpointing = checkpointing };
            double l = bp.Run(Ids, Labels, [], 1, 1f / count, ps.GradOf).Sum() / count;
            return (l, ps.All.ToDictionary(x => x.Name, x => x.Grad.Floats.ToArray()));
        }
        var (loss, grads) = Run(checkpointing: false);

        // Each projection's mask as DecoderBackprop draws it: seed of (layer, slot), element t * In + c of its input.
        string[] slots = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];
        var masks = new Dictionary<string, float[]>();
        for (int l = 0; l < Qwen3Tiny.Layers; l++)
            for (int s = 0; s < slots.Length; s++)
            {
                var proj = lm.Weights.Projections.Single(x => x.Name == $"model.layers.{l}.{slots[s]}");
                using var ones = Tensor.FromFloats(new Shape(Ids.Length, proj.In), Enumerable.Repeat(1f, Ids.Length * proj.In).ToArray());
                using var mask = be.Zeros(ones.Shape);
                be.Dropout(ones, SplitMix64.Mix(seed ^ SplitMix64.Mix((ulong)(l * 8 + s + 1))), p, mask);
                masks[proj.Name] = mask.Floats.ToArray();
            }
        Assert.Contains(masks.Values, m => m.Contains(0f));

        var dora = Parameters(lm);
        var norms = dora.ToDictionary(kv => kv.Key, kv => RowNorms(Adapted(kv.Key, kv.Value, Config.Scale), kv.Value.M.Length));
        // PEFT's DoRA forward in training with dropout: y = W x + (g - 1) W x_d + g s B A x_d, x_d = dropout(x), g = m / norm.
        double[] Project(string module, int t, double[] x)
        {
            var (a, b, m) = dora[module];
            var w = Qwen3Tiny.Weights[module + ".weight"];
            int outs = m.Length, ins = x.Length, r = Config.Rank;
            var xd = x.Select((v, c) => v * masks[module][t * ins + c]).ToArray();
            var wx = Qwen3Tiny.MatVec(w, x, outs);
            var wxd = Qwen3Tiny.MatVec(w, xd, outs);
            var axd = Qwen3Tiny.MatVec(a, xd, r);
            var lora = Qwen3Tiny.MatVec(b, axd, outs);
            return Enumerable.Range(0, outs).Select(j =>
            {
                double g = m[j] / norms[module][j];
                return wx[j] + (g - 1) * wxd[j] + g * Config.Scale * lora[j];
            }).ToArray();
        }
        double Loss() => Qwen3Tiny.Loss(Ids, Labels, null, Project);
        Assert.Equal(Loss(), loss, 1e-5 * loss);
        Assert.NotEqual(Backprop(lm, checkpointing: false).Loss, loss, 1e-4); // the training pass does drop
        CheckCentralDifferences(dora, grads, Loss);

        var (loss2, grads2) = Run(checkpointing: true);
        Assert.Equal(loss, loss2);
        foreach (var (name, g) in grads) Assert.Equal(g, grads2[name]);
    }

    [Fact]
    public void The_saved_adapter_merged_by_LoraAdapter_gives_the_unmerged_logits_and_init_adapter_reads_it_back()
    {
        string dir = Directory.CreateTempSubdirectory("temper-dora-save-").FullName;
        try
        {
            using var lm = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
            AttachPerturbed(lm, 23);
            using (lm.Logits(Ids, 1)) { } // an inference pass caches each view's norm...
            var q0 = lm.Weights.Layers[0].Q.Lora!;
            foreach (ref float b in q0.B.Floats) b *= 2;
            q0.ParametersChanged(); // ...which a change of B (an optimizer step) drops
            using var unmerged = lm.Logits(Ids, 1);
            PeftAdapterWriter.Save(dir, lm.Weights, Config, lm.Decoder.Backend, Qwen3Tiny.Folder);

            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
            Assert.True(cfg["use_dora"]!.GetValue<bool>());
            using (var f = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            {
                var m = f.Get("base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector");
                Assert.Equal(new Shape(Qwen3Tiny.Hidden), m.Shape);
                Assert.Equal(lm.Weights.Layers[1].Down.Lora!.Magnitude!.Floats.ToArray(), m.ToFloatArray());
            }

            using var merged = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend(), dir);
            Assert.All(merged.Weights.Projections, p => Assert.Null(p.Lora));
            using var mergedLogits = merged.Logits(Ids, 1);
            double max = unmerged.Floats.ToArray().Max(Math.Abs);
            for (int i = 0; i < unmerged.Elements; i++)
                Assert.True(Math.Abs(mergedLogits.Floats[i] - unmerged.Floats[i]) <= 2e-5 * max, $"logit {i}: merged {mergedLogits.Floats[i]}, unmerged {unmerged.Floats[i]}");

            using var again = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
            again.AttachAdapter(dir, merge: false, doraUnmerged: true);
            using var againLogits = again.Logits(Ids, 1);
            Assert.Equal(unmerged.Floats.ToArray(), againLogits.Floats.ToArray());
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static SftOptions AdditionSft(string data) => new()
    {
        ModelDir = Path.Combine(Fixtures.RepoRoot, "demo", "base"), DataPath = data, OutDir = "",
        UseDora = true, LoraRank = 8, LoraAlpha = 16, BatchSize = 16, MaxSteps = 12, LearningRate = 3e-3f,
        Scheduler = ScheduleKind.Constant, MaxLength = 64, Seed = 4, Threads = 1,
    };

    [Fact]
    public void Dora_sft_on_the_addition_task_learns_resumes_exactly_and_continues_from_its_adapter()
    {
        string root = Directory.CreateTempSubdirectory("temper-dora-sft-").FullName;
        try
        {
            string data = Path.Combine(root, "train.jsonl");
            AdditionTask.ToSftJsonl(new AdditionTask(10, 49).Train(64, 9), data, conversational: false);
            var o = AdditionSft(data);
            string straight = Path.Combine(root, "straight"), split = Path.Combine(root, "split"), more = Path.Combine(root, "more");
            var reports = new SftTrainer(o with { OutDir = straight }, new CpuBackend(1)).Run().Reports;
            double first = reports.Take(2).Average(r => r.Loss), last = reports.TakeLast(2).Average(r => r.Loss);
            Assert.True(last < 0.8 * first, $"DoRA SFT loss {first:F3} over the first two steps, {last:F3} over the last two");
            var cfg = LoraConfig.Load(straight);
            Assert.True(cfg.UseDora);
            using (var adapter = LoraAdapter.Load(straight, allowDora: true))
                Assert.Equal(adapter.Modules.Count, adapter.Magnitudes.Count);

            using var cancel = new CancellationTokenSource();
            var interrupted = new SftTrainer(o with { OutDir = split }, new CpuBackend(1)) { OnStep = s => { if (s.Step == 4) cancel.Cancel(); } };
            Assert.True(interrupted.Run(cancel.Token).Interrupted);
            var resumed = new SftTrainer(o with { OutDir = split, Resume = true }, new CpuBackend(1)).Run().Reports;
            Assert.Equal(reports.Skip(4).Select(r => (r.Loss, r.GradNorm)), resumed.Select(r => (r.Loss, r.GradNorm)));

            // --init-adapter of the DoRA folder continues it: its first step starts where the straight run ended.
            var continued = new SftTrainer(o with { OutDir = more, InitAdapter = straight, MaxSteps = 3, UseDora = false }, new CpuBackend(1)).Run().Reports;
            Assert.True(continued[0].Loss < 0.8 * first, $"continued from the adapter at loss {continued[0].Loss:F3}; the fresh run started at {first:F3}");
            Assert.True(LoraConfig.Load(more).UseDora);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void Dora_over_an_nf4_base_equals_dora_over_the_dequantized_model()
    {
        using var r = SafetensorsFile.Open(Path.Combine(Fixtures.Hf("llama-tiny"), "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0], t = ids.Length / b;
        int count = Enumerable.Range(0, ids.Length).Count(i => i % t != 0 && labels[i] != -100);
        (double, TrainableParameters) Step(LanguageModel lm)
        {
            AttachPerturbed(lm, 17);
            var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
            return (new DecoderBackprop(lm.Decoder).Run(ids, labels, [], b, 1f / count, ps.GradOf).Sum() / count, ps);
        }
        QLoraParityTests.AssertNf4EqualsDequantized("QLoRA DoRA", Step, (psP, psQ) =>
        {
            Assert.Contains(psQ.All, p => p.Name.EndsWith(".lora_magnitude_vector", StringComparison.Ordinal));
            for (int i = 0; i < psP.All.Count; i++)
                Assert.Equal(psP.All[i].Value.Floats.ToArray(), psQ.All[i].Value.Floats.ToArray()); // the magnitudes: norms of the same dequantised weights
        });
    }

    [Fact]
    public void Options_DoRA_does_not_support_are_refused_in_one_line_naming_the_option()
    {
        string data = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl");
        var o = new SftOptions { ModelDir = Fixtures.Hf("llama-tiny"), DataPath = data, OutDir = Directory.CreateTempSubdirectory("temper-dora-bad-").FullName, UseDora = true, MaxSteps = 1 };
        try
        {
            void Refused(SftOptions bad, string option)
            {
                var e = Assert.Throws<TemperException>(() => new SftTrainer(bad, new CpuBackend(1)).Run());
                Assert.Contains(option, e.Message);
                Assert.DoesNotContain('\n', e.Message);
            }
            Refused(o with { Full = true }, "--use-dora");
            Refused(o with { InitAdapter = Path.Combine(Fixtures.Hf("llama-tiny"), "adapter") }, "--use-dora");
        }
        finally
        {
            Directory.Delete(o.OutDir, recursive: true);
        }
    }

    /// <summary>Step-0 parity with PEFT: the loss and every gradient (A, B, magnitude) of the DoRA adapter
    /// tests/reference/make_dora_training_reference.py saved (owed until a machine with torch runs it).</summary>
    [Fact]
    public void Step0_loss_and_gradients_match_peft()
    {
        string dir = Fixtures.Hf("llama-tiny-dora-training");
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend());
        lm.AttachAdapter(Path.Combine(dir, "adapter"), merge: false, doraUnmerged: true);
        PeftStep0.AssertMatches(dir, lm);
    }
}
