// GRPO: the per-token objective and its weights against an independent scalar loss (finite
// differences), the whole gradient through the model (rollout layout, token alignment, advantages)
// against finite differences of that loss computed from the inference forward, one small step in the
// trainer's direction, and learning on the synthetic addition task.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Losses;
using Temper.Training.Preference;
using Temper.Training.Rl;
using Temper.Training.Tasks;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class GrpoTests
{
    [Fact]
    public void Failing_reward_functions_count_and_score_zero()
    {
        int errors = 0;
        var fns = new IRewardFunction[]
        {
            new DelegateReward("boom", (_, _) => throw new InvalidOperationException("boom")),
            new DelegateReward("nan", (_, _) => double.NaN),
            new DelegateReward("one", (_, _) => 1),
        };
        Assert.Equal(1, RewardFunctions.Total(fns, new JsonObject(), "x", ref errors));
        Assert.Equal(2, errors);
        Assert.Throws<TemperException>(() => RewardFunctions.Parse("telepathy"));
    }

    // The objective written out per token, independently of the trainer: the mean over tokens of
    // -min(r A, clip(r, 1-eps, 1+eps) A) + beta (exp(ref - lp) - (ref - lp) - 1), r = exp(lp - old).
    private static double ScalarLoss(IReadOnlyList<double> lp, IReadOnlyList<double> old, IReadOnlyList<double> rf, IReadOnlyList<double> adv, double eps, double beta)
    {
        double sum = 0;
        for (int i = 0; i < lp.Count; i++)
        {
            double r = Math.Exp(lp[i] - old[i]);
            double surrogate = Math.Min(r * adv[i], Math.Min(Math.Max(r, 1 - eps), 1 + eps) * adv[i]);
            double kl = Math.Exp(rf[i] - lp[i]) - (rf[i] - lp[i]) - 1;
            sum += -surrogate + beta * kl;
        }
        return sum / lp.Count;
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.04)]
    public void Token_weights_are_minus_the_loss_gradient(double beta)
    {
        // Ratios inside and outside the clip range, positive and negative advantages, and a padded slot.
        double[] shift = [0, 0.1, -0.1, 0.5, -0.5, 0.3, -0.3, 0.05, 0];
        double[] adv = [1.2, -0.7, 0.9, 1.5, -1.1, -0.8, 0.6, -2, 3];
        bool[] counted = [true, true, true, true, true, true, true, true, false];
        var lp = new float[] { -2.1f, -0.3f, -4f, -1.5f, -0.9f, -3.2f, -0.05f, -1.1f, 0 };
        var old = lp.Select((x, i) => x - (float)shift[i]).ToArray();
        var rf = lp.Select((x, i) => x + 0.2f * (i % 3 - 1)).ToArray();
        var a = adv.Select(x => (float)x).ToArray();
        int n = counted.Count(c => c);
        var w = new float[lp.Length];
        var r = GrpoLoss.Compute(new GrpoObjective { LossType = "bnpo", Beta = beta }, lp, old, rf, a, counted, lp.Length, w);

        double[] D(float[] x) => x.Take(n).Select(v => (double)v).ToArray();
        Assert.Equal(ScalarLoss(D(lp), D(old), D(rf), adv.Take(n).ToArray(), 0.2, beta), r.Loss, 1e-6);
        // Clipped: ratio above 1 + eps with A > 0 (shift 0.5 -> 1.65, 0.3 -> 1.35 with A < 0 is not), below 1 - eps with A < 0 (-0.5, -0.3 with A > 0 is not).
        Assert.Equal(2, r.Clipped);
        Assert.Equal(0, w[^1]);
        for (int i = 0; i < n; i++)
        {
            double h = 1e-5;
            var up = D(lp); up[i] += h;
            var dn = D(lp); dn[i] -= h;
            double fd = (ScalarLoss(up, D(old), D(rf), adv.Take(n).ToArray(), 0.2, beta) - ScalarLoss(dn, D(old), D(rf), adv.Take(n).ToArray(), 0.2, beta)) / (2 * h);
            // The weight scales the token's cross-entropy (-logp): d(w CE)/d logp = -w.
            Assert.True(Math.Abs(fd + w[i]) < 1e-6, $"token {i}: d loss / d logp {fd:G6}, weight {w[i]:G6}");
        }
        // Clipped tokens carry no surrogate gradient.
        if (beta == 0) Assert.True(w[3] == 0 && w[4] == 0);
    }

    // A rollout on the llama-tiny fixture with its LoRA: 2 prompts x G = 3 completions of different lengths.
    private static readonly int[][] Prompts = [[1, 40, 41, 42], [1, 50, 51]];
    private static readonly int[][] Completions = [[60, 61, 62, 2], [63, 2], [64, 65, 66, 67, 68], [70, 2], [71, 72, 73], [74, 75, 76, 77, 2]];
    private static readonly double[] Rewards = [1, 0, 0.1, 0.1, 1, 0];

    // Each completion token's log-prob from the inference forward of that row alone (no padding, no
    // shifted labels): an independent route to what the trainer reads off the cross-entropy rows.
    private static double[][] CompletionLogps(LanguageModel lm)
    {
        var result = new double[Completions.Length][];
        for (int i = 0; i < Completions.Length; i++)
        {
            var p = Prompts[i / 3];
            var ids = p.Concat(Completions[i]).ToArray();
            using var logits = lm.Logits(ids, 1);
            var l = logits.Floats;
            int v = lm.Config.VocabSize;
            result[i] = new double[Completions[i].Length];
            for (int k = 0; k < Completions[i].Length; k++)
            {
                var row = l.Slice((p.Length - 1 + k) * v, v);
                double max = double.NegativeInfinity, sum = 0;
                foreach (float x in row) max = Math.Max(max, x);
                foreach (float x in row) sum += Math.Exp(x - max);
                result[i][k] = row[Completions[i][k]] - max - Math.Log(sum);
            }
        }
        return result;
    }

    private static (LanguageModel Lm, TrainableParameters Ps) LoraModel()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var lm = LanguageModel.Load(dir, new CpuBackend());
        lm.AttachAdapter(Path.Combine(dir, "adapter"), merge: false);
        return (lm, TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend));
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(0.1)]
    public void Gradient_through_the_model_matches_finite_differences_of_the_objective(double beta)
    {
        var (lm, ps) = LoraModel();
        using var _lm = lm;
        using var _ps = ps;
        var backprop = new DecoderBackprop(lm.Decoder);
        var layout = GrpoTrainer.Layout(Prompts, Completions, Rewards, 3, pad: 0);
        var b = layout.Batch;
        Assert.Equal(Completions.Sum(c => c.Length), layout.Tokens);

        // Advantages: group-normalised rewards (sample std), the same on every counted token of a row.
        var rowAdv = new double[Completions.Length];
        for (int q = 0; q < 2; q++)
        {
            var grp = Rewards.Skip(3 * q).Take(3).ToArray();
            double mean = grp.Average(), sd = Math.Sqrt(grp.Sum(x => (x - mean) * (x - mean)) / 2);
            for (int j = 0; j < 3; j++) rowAdv[3 * q + j] = (grp[j] - mean) / (sd + 1e-4);
        }

        // The trainer's token log-probs and the independent ones agree token by token.
        var ce = backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, null);
        var indep = CompletionLogps(lm);
        var trainerLogp = new float[ce.Length];
        for (int i = 0; i < Completions.Length; i++)
        {
            var slots = Enumerable.Range(i * b.Length, b.Length).Where(n => layout.Counted[n]).ToArray();
            Assert.Equal(Completions[i].Length, slots.Length);
            for (int k = 0; k < slots.Length; k++)
            {
                trainerLogp[slots[k]] = -ce[slots[k]];
                Assert.Equal(indep[i][k], -ce[slots[k]], 1e-4);
                Assert.Equal((float)rowAdv[i], layout.Advantage[slots[k]], 1e-5);
            }
        }
        Assert.Equal(0, Enumerable.Range(0, ce.Length).Count(n => !layout.Counted[n] && layout.Advantage[n] != 0));

        // The old policy: the current one shifted so that some ratios fall outside [0.8, 1.2] on both sides.
        var old = new float[ce.Length];
        for (int n = 0, k = 0; n < ce.Length; n++)
            if (layout.Counted[n]) old[n] = trainerLogp[n] - (k++ % 4) switch { 0 => 0f, 1 => 0.1f, 2 => 0.4f, _ => -0.4f };
        // The reference: the base with the adapter off.
        var refLogp = new float[ce.Length];
        double[][] refIndep;
        using (var reference = ReferenceModel.AdapterOff(lm.Weights))
        {
            double[][]? r = null;
            float[]? rce = null;
            reference.WithReference(backprop, () => { rce = backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, null); r = CompletionLogps(lm); });
            for (int n = 0; n < ce.Length; n++) refLogp[n] = layout.Counted[n] ? -rce![n] : 0;
            refIndep = r!;
        }

        // Independent objective of the current parameters: flatten per row in order.
        var oldFlat = Flat(old, layout);
        var advFlat = Flat(layout.Advantage, layout);
        var refFlat = refIndep.SelectMany(x => x).ToArray();
        double Objective() => ScalarLoss(CompletionLogps(lm).SelectMany(x => x).ToArray(), oldFlat, refFlat, advFlat, 0.2, beta);

        ps.ZeroGrads();
        var w = new float[ce.Length];
        var tl = GrpoLoss.Compute(new GrpoObjective { Beta = beta }, trainerLogp, old, refLogp, layout.Advantage, layout.Counted, b.Length, w);
        Assert.True(tl.Clipped > 0);
        Assert.Equal(Objective(), tl.Loss, 1e-4);
        backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, ps.GradOf, w);

        // Directional derivatives along the gradient and along a fixed random direction.
        var grad = ps.All.Select(p => p.Grad.Floats.ToArray()).ToArray();
        double gnorm = Math.Sqrt(grad.Sum(g => g.Sum(x => (double)x * x)));
        Assert.True(gnorm > 0);
        var rng = new Random(3);
        var rand = grad.Select(g => g.Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()).ToArray();
        foreach (var dir in new[] { grad.Select(g => g.Select(x => (float)(x / gnorm)).ToArray()).ToArray(), rand })
        {
            double dnorm = Math.Sqrt(dir.Sum(g => g.Sum(x => (double)x * x)));
            double analytic = grad.Zip(dir).Sum(t => t.First.Zip(t.Second).Sum(z => (double)z.First * z.Second));
            double h = 1e-2 / dnorm; // f32 model: a larger step keeps rounding well below the derivative; no ratio sits near a clip kink
            Move(ps, dir, h);
            double up = Objective();
            Move(ps, dir, -2 * h);
            double dn = Objective();
            Move(ps, dir, h);
            double fd = (up - dn) / (2 * h);
            Assert.True(Math.Abs(fd - analytic) <= 2e-2 * Math.Abs(analytic) + 1e-4, $"directional derivative: finite differences {fd:G6}, backward {analytic:G6}");
        }
    }

    [Fact]
    public void A_small_step_against_the_gradient_favours_positive_advantages()
    {
        var (lm, ps) = LoraModel();
        using var _lm = lm;
        using var _ps = ps;
        var backprop = new DecoderBackprop(lm.Decoder);
        var layout = GrpoTrainer.Layout(Prompts, Completions, Rewards, 3, pad: 0);
        var b = layout.Batch;
        var ce = backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, null);
        var logp = ce.Select((x, n) => layout.Counted[n] ? -x : 0f).ToArray();
        var before = CompletionLogps(lm).Select(x => x.Sum()).ToArray();

        ps.ZeroGrads();
        var w = new float[ce.Length];
        GrpoLoss.Compute(new GrpoObjective(), logp, logp, new float[ce.Length], layout.Advantage, layout.Counted, b.Length, w);
        backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, ps.GradOf, w);
        var grad = ps.All.Select(p => p.Grad.Floats.ToArray()).ToArray();
        Move(ps, grad, -0.05);
        var after = CompletionLogps(lm).Select(x => x.Sum()).ToArray();

        var adv = Enumerable.Range(0, Completions.Length).Select(i => layout.Advantage[Enumerable.Range(i * b.Length, b.Length).First(n => layout.Counted[n])]).ToArray();
        for (int i = 0; i < Completions.Length; i++)
        {
            double change = after[i] - before[i];
            Assert.True(adv[i] > 0 ? change > 0 : change < 0, $"completion {i}: advantage {adv[i]:F2}, log-prob {before[i]:F4} -> {after[i]:F4}");
        }
    }

    // From a weak SFT start (a tiny model trained from scratch just far enough that the answer is the
    // greedy choice for most prompts but sampled completions are right only about a third of the time),
    // GRPO sharpens the policy: the mean reward of the last 10 steps beats the first 10 by >= 0.2, and the
    // second update on each generated batch (--num-iterations 2) clips some ratios. Operands 0..4 keep
    // the set of facts small enough to learn from ~80 noisy steps; fixed seeds; ~30 s on 2 cores.
    [Fact]
    public void Grpo_raises_the_reward_from_a_weak_sft_start()
    {
        var task = new AdditionTask(0, 4, heldOutFraction: 0.2);
        string model = Learning.TinyModelDir(hidden: 64, layers: 2, intermediate: 192);
        try
        {
            string sftData = Path.Combine(model, "sft.jsonl"), prompts = Path.Combine(model, "prompts.jsonl");
            AdditionTask.ToSftJsonl(task.Train(2000, seed: 1), sftData, conversational: false);
            File.WriteAllLines(prompts, task.Train(200, seed: 3).Select(i => new JsonObject { ["prompt"] = i.Prompt + "\n", ["answer"] = i.Answer }.ToJsonString()));
            string sft = Path.Combine(model, "sft");
            new SftTrainer(new SftOptions
            {
                ModelDir = model, DataPath = sftData, OutDir = sft, Full = true, FromScratch = true, LearningRate = 3e-3f,
                BatchSize = 32, MaxSteps = 150, MaxLength = 32, Seed = 1, WarmupSteps = 10,
            }, new CpuBackend()).Run();

            string run = Path.Combine(model, "grpo");
            new GrpoTrainer(new SftOptions
            {
                ModelDir = sft, DataPath = prompts, OutDir = run, Full = true, LearningRate = 1e-3f, Scheduler = Temper.Training.Optim.ScheduleKind.Constant,
                BatchSize = 16, MaxSteps = 80, Seed = 5,
            }, new GrpoOptions { NumGenerations = 8, NumIterations = 2, MaxCompletionLength = 12, Rewards = ["addition"] }, new CpuBackend()).Run();

            var lines = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToArray();
            Assert.Equal(80, lines.Length);
            double first = lines.Take(10).Average(l => l["reward"]!.GetValue<double>());
            double last = lines.TakeLast(10).Average(l => l["reward"]!.GetValue<double>());
            double clip = lines.Where(l => l["iteration"]!.GetValue<int>() == 2).Max(l => l["clip_fraction"]!.GetValue<double>());
            string summary = $"grpo: mean reward first 10 steps {first:F3}, last 10 {last:F3}; max clip fraction {clip:F3}";
            TestContext.Current.SendDiagnosticMessage(summary);
            Console.WriteLine(summary);
            Assert.True(last - first >= 0.2, $"reward rose from {first:F3} to {last:F3}");
            Assert.True(clip > 0, "no ratio was clipped on the reused batches");
            Assert.All(lines, l => Assert.True(l["training_s"]!.GetValue<double>() > 0 && l["sampling_s"]!.GetValue<double>() >= 0));
            Assert.All(lines.Where(l => l["iteration"]!.GetValue<int>() == 1), l => Assert.True(l["sampling_s"]!.GetValue<double>() > 0, "sampling time of a fresh batch"));
        }
        finally
        {
            Directory.Delete(model, true);
        }
    }

    // With one update per batch and beta 0 the trainer skips the old policy's log-prob pass (the ratio is 1,
    // the weights are the advantages). A run with beta 1e-30 takes the full path (old and reference passes,
    // the KL term's weights added, each far below an ulp of the advantages'), so the adapters it trains must
    // equal the skipping run's; a skip that changed the weights or the loss would part them.
    [Fact]
    public void Skipping_the_unread_log_prob_pass_trains_the_same_adapter()
    {
        string model = Learning.TinyModelDir(hidden: 32, layers: 1, intermediate: 64);
        try
        {
            string prompts = Path.Combine(model, "prompts.jsonl");
            var task = new AdditionTask(0, 4, heldOutFraction: 0.2);
            File.WriteAllLines(prompts, task.Train(16, seed: 3).Select(i => new JsonObject { ["prompt"] = i.Prompt + "\n", ["answer"] = i.Answer }.ToJsonString()));
            (float[] Adapter, double[] Losses, double FirstKl) Train(double beta)
            {
                string run = Path.Combine(model, $"grpo-{beta}");
                new GrpoTrainer(new SftOptions
                {
                    ModelDir = model, DataPath = prompts, OutDir = run, FromScratch = true, LearningRate = 1e-2f,
                    BatchSize = 4, MaxSteps = 3, Seed = 5,
                }, new GrpoOptions { NumGenerations = 4, MaxCompletionLength = 6, Beta = beta, Rewards = ["brevity"] }, new CpuBackend(threads: 1)).Run();
                using var f = SafetensorsFile.Open(Path.Combine(run, "adapter_model.safetensors"));
                var values = f.Entries.OrderBy(e => e.Name, StringComparer.Ordinal).SelectMany(e => { using var t = f.Get(e.Name); return t.ToFloatArray(); }).ToArray();
                var metrics = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToArray();
                return (values, metrics.Select(m => m["loss"]!.GetValue<double>()).ToArray(), metrics[0]["kl"]!.GetValue<double>());
            }
            var (skipped, skippedLoss, _) = Train(0);
            var (full, fullLoss, firstKl) = Train(1e-30);
            Assert.Equal(0, firstKl); // LoRA's B starts at zero, so the first batch's policy is the reference: a KL read off real log-probs
            Assert.True(skipped.Max(MathF.Abs) > 0, "the adapter did not move");
            Assert.Equal(fullLoss.Length, skippedLoss.Length);
            for (int i = 0; i < fullLoss.Length; i++) Assert.Equal(fullLoss[i], skippedLoss[i], 1e-12);
            float scale = full.Max(MathF.Abs);
            for (int i = 0; i < full.Length; i++) Assert.True(MathF.Abs(full[i] - skipped[i]) <= 1e-6f * scale, $"adapter value {i}: {skipped[i]} vs {full[i]}");
        }
        finally
        {
            Directory.Delete(model, true);
        }
    }

    private static double[] Flat(float[] perToken, GrpoLayout layout) =>
        Enumerable.Range(0, perToken.Length).Where(n => layout.Counted[n]).Select(n => (double)perToken[n]).ToArray();

    private static void Move(TrainableParameters ps, float[][] dir, double step)
    {
        for (int i = 0; i < ps.All.Count; i++)
        {
            var v = ps.All[i].Value.Floats;
            for (int k = 0; k < v.Length; k++) v[k] += (float)(step * dir[i][k]);
        }
    }
}
