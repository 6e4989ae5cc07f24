// LoRA dropout with PEFT's semantics, y = x W^T + s B A dropout(x) in training passes only: p = 0 and
// evaluation passes are the plain LoRA; with p > 0 the hand-written gradients match finite differences
// of the same (seeded, hence fixed) masks, gradient checkpointing redraws the same masks, a run with
// dropout resumes exactly and still learns, and adapter_config.json records lora_dropout.
using System.Text.Json.Nodes;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class LoraDropoutTests
{
    private static (int[] Ids, int[] Labels, int Batch, int Count) Inputs(string dir)
    {
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0], t = ids.Length / b;
        return (ids, labels, b, Enumerable.Range(0, ids.Length).Count(i => i % t != 0 && labels[i] != -100));
    }

    private static string TempDir() => Directory.CreateTempSubdirectory("temper-dropout-").FullName;

    [Fact]
    public void Evaluation_passes_and_p0_are_the_plain_lora()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var (ids, labels, b, count) = Inputs(dir);
        using var lm = LanguageModel.Load(dir, new CpuBackend(), Path.Combine(dir, "adapter"));
        var be = lm.Decoder.Backend;
        var plain = new DecoderBackprop(lm.Decoder);
        var dropping = new DecoderBackprop(lm.Decoder) { LoraDropout = 0.3f, DropoutSeed = 5 };
        Assert.Equal(plain.Run(ids, labels, [], b, 1f, null), dropping.Run(ids, labels, [], b, 1f, null));
        using var g0 = TrainableParameters.Lora(lm.Weights, be);
        using var g1 = TrainableParameters.Lora(lm.Weights, be);
        var l0 = plain.Run(ids, labels, [], b, 1f / count, g0.GradOf);
        var l1 = new DecoderBackprop(lm.Decoder) { LoraDropout = 0f, DropoutSeed = 5 }.Run(ids, labels, [], b, 1f / count, g1.GradOf);
        Assert.Equal(l0, l1);
        foreach (var (p, q) in g0.All.Zip(g1.All)) Assert.Equal(p.Grad.Floats.ToArray(), q.Grad.Floats.ToArray());
        using var g2 = TrainableParameters.Lora(lm.Weights, be);
        var l2 = dropping.Run(ids, labels, [], b, 1f / count, g2.GradOf);
        Assert.NotEqual(l0, l2); // the training pass does drop
    }

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void Gradients_with_dropout_match_finite_differences_and_checkpointing(string name)
    {
        string dir = Fixtures.Hf(name);
        var (ids, labels, b, count) = Inputs(dir);
        using var lm = LanguageModel.Load(dir, new CpuBackend(), Path.Combine(dir, "adapter"));
        var be = lm.Decoder.Backend;
        var bp = new DecoderBackprop(lm.Decoder) { LoraDropout = 0.25f, DropoutSeed = 11 };
        using var grads = TrainableParameters.Lora(lm.Weights, be);
        bp.Run(ids, labels, [], b, 1f / count, grads.GradOf);

        // The training loss as a function of the LoRA weights, masks fixed by the seed.
        using var scratch = TrainableParameters.Lora(lm.Weights, be);
        double Loss()
        {
            scratch.ZeroGrads();
            return bp.Run(ids, labels, [], b, 1f / count, scratch.GradOf).Sum(x => (double)x) / count;
        }
        var rng = new Random(3);
        var ps = grads.All;
        var original = ps.Select(p => p.Value.Floats.ToArray()).ToArray();
        for (int trial = 0; trial < 2; trial++)
        {
            // Along the gradient itself, then along the gradient plus a random direction of the same length
            // (a random direction alone is nearly orthogonal to it, leaving a derivative too small to check).
            double gNorm = Math.Sqrt(ps.Sum(p => p.Grad.Floats.ToArray().Sum(g => (double)g * g)));
            var r = ps.Select(p => Enumerable.Range(0, (int)p.Value.Elements).Select(_ => rng.NextDouble() * 2 - 1).ToArray()).ToArray();
            double rNorm = Math.Sqrt(r.Sum(x => x.Sum(v => v * v)));
            var u = ps.Select((p, i) => p.Grad.Floats.ToArray().Select((g, j) => (float)((g + trial * r[i][j] * gNorm / rNorm) / gNorm)).ToArray()).ToArray();
            double analytic = 0;
            for (int i = 0; i < ps.Count; i++)
                for (int j = 0; j < u[i].Length; j++) analytic += (double)ps[i].Grad.Floats[j] * u[i][j];
            double Central(float h)
            {
                Shift(h);
                double up = Loss();
                Shift(-2 * h);
                double down = Loss();
                for (int i = 0; i < ps.Count; i++) original[i].CopyTo(ps[i].Value.Floats);
                return (up - down) / (2 * h);
            }
            void Shift(float by)
            {
                for (int i = 0; i < ps.Count; i++)
                    for (int j = 0; j < u[i].Length; j++) ps[i].Value.Floats[j] += by * u[i][j];
            }
            // Richardson: (4 D(h/2) - D(h)) / 3 cancels the h^2 term of the central difference.
            double numeric = (4 * Central(2.5e-3f) - Central(5e-3f)) / 3;
            Assert.True(Math.Abs(numeric - analytic) <= 2e-3 * Math.Abs(analytic), $"directional derivative: finite differences {numeric}, backward {analytic}");
        }

        using var recomputed = TrainableParameters.Lora(lm.Weights, be);
        new DecoderBackprop(lm.Decoder) { LoraDropout = 0.25f, DropoutSeed = 11, GradientCheckpointing = true }.Run(ids, labels, [], b, 1f / count, recomputed.GradOf);
        foreach (var (p, q) in grads.All.Zip(recomputed.All)) Assert.Equal(p.Grad.Floats.ToArray(), q.Grad.Floats.ToArray());
    }

    [Fact]
    public void Sft_with_dropout_learns_resumes_exactly_and_records_lora_dropout()
    {
        string model = Fixtures.Hf("llama-tiny");
        var o = new SftOptions
        {
            ModelDir = model, DataPath = Path.Combine(model, "trainer", "sft.jsonl"), OutDir = "",
            LoraRank = 16, LoraDropout = 0.1, BatchSize = 6, MaxSteps = 20, LearningRate = 3e-3f, Scheduler = Temper.Training.Optim.ScheduleKind.Constant, Seed = 3,
        };
        string straight = TempDir(), split = TempDir();
        var reports = new SftTrainer(o with { OutDir = straight }, new CpuBackend()).Run().Reports;
        // Every step sees all 6 examples (new dropout masks each time): the loss still falls (the fixture
        // model is random, near ln 512 = 6.24 at the start; 20 steps without dropout reach about 5.3).
        Assert.True(reports[^1].Loss < 0.9 * reports[0].Loss, $"loss {reports[0].Loss} at step 1, {reports[^1].Loss} at step {reports.Count}");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(straight, "adapter_config.json")))!;
        Assert.Equal(0.1, cfg["lora_dropout"]!.GetValue<double>());
        Assert.Equal(0.1, LoraConfig.Load(straight).Dropout);

        using var cancel = new CancellationTokenSource();
        var first = new SftTrainer(o with { OutDir = split }, new CpuBackend()) { OnStep = s => { if (s.Step == 5) cancel.Cancel(); } };
        Assert.True(first.Run(cancel.Token).Interrupted);
        var resumed = new SftTrainer(o with { OutDir = split, Resume = true }, new CpuBackend()).Run().Reports;
        Assert.Equal(reports.Skip(5).Select(r => (r.Loss, r.GradNorm)), resumed.Select(r => (r.Loss, r.GradNorm)));
        Directory.Delete(straight, true);
        Directory.Delete(split, true);
    }
}
