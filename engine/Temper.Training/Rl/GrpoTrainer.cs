// Group Relative Policy Optimization as a thin recipe over TrainingRun. Each generated batch: P prompts
// x G completions sampled with the KV-cache generator; rewards from the reward functions; advantages
// A = (r - mean of the prompt's group) / (std + 1e-4), the std that of the group, of the whole batch, or
// none (TRL's scale_rewards); the old policy's token log-probs are kept, and NumIterations optimizer steps
// reuse the batch. The loss is TRL's for its loss type and importance sampling level
// (Losses/GrpoLoss.cs: the clipped ratio, k3 to the reference = the base with the adapter off, beta 0
// skipping it); with mask_truncated_completions, completions that reached max_completion_length without
// EOS take no part in it. d loss / d logp per token becomes a per-token weight of one forward+backward
// pass. Log-probs (policy, old and reference) are of the logits divided by the sampling temperature, as
// TRL computes them. Logged per step besides the loss: reward (mean), reward_std, kl, clip_fraction
// (of tokens; of completions at sequence level), completion_length, truncated (the share of completions
// cut off), sampling_s and training_s.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Data;
using Temper.Training.Losses;
using Temper.Training.Preference;
using Temper.Training.Trainers;

namespace Temper.Training.Rl;

/// <summary>A generated batch laid out for training (see <see cref="GrpoTrainer.Layout"/>).</summary>
public sealed record GrpoLayout(SftBatch Batch, bool[] Counted, float[] Advantage, int Tokens, double RewardStd);

public sealed class GrpoTrainer(SftOptions o, GrpoOptions g, IBackend backend)
{
    public Action<StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    private sealed record Prompt(int[] Ids, JsonObject Row);

    private sealed class Rollout
    {
        public required SftBatch Batch;
        public required float[] OldLogp, RefLogp, Advantage;
        public required bool[] Counted;
        public required int Tokens;
        public required JsonObject Stats;
    }

    public SftResult Run(CancellationToken cancel = default)
    {
        g.Validate();
        if (o.GradAccum != 1) throw new TemperException("GRPO takes one generated batch per step; --grad-accum is not supported (raise --batch-size)");
        if (g.ImportanceSamplingLevel == "sequence" && g.LossType != "grpo")
            OnWarning?.Invoke($"importance sampling level 'sequence' with loss type '{g.LossType}' sums each completion's loss over its tokens; GSPO's setup is --loss-type grpo (as TRL warns)");
        var rewards = g.Rewards.Select(RewardFunctions.Parse).ToList();
        using var rewardModel = g.RewardModel != null ? Reward.RewardModel.Load(g.RewardModel, backend) : null;
        if (rewardModel != null) rewards.Add(new RewardModelReward(rewardModel));
        if (rewards.Count == 0) throw new TemperException("GRPO needs at least one reward: --reward NAME or --reward-model DIR");
        using var run = TrainingRun.Open(o, backend);
        run.OnStep = OnStep;
        run.OnWarning = OnWarning;
        var tok = run.Model.RequireTokenizer();
        var (prompts, sha) = LoadPrompts(run.Model);
        using var reference = g.Beta > 0
            ? o.Full ? throw new TemperException("full-weight GRPO with --beta > 0 needs a reference; use LoRA or --beta 0") : ReferenceModel.AdapterOff(run.Model.Weights)
            : null;
        int pad = run.PadId;
        var order = new SftBatcher(prompts.Select(p => new SftExample(p.Ids, p.Ids, 0)).ToList(), o.BatchSize, pad, (ulong)o.Seed);
        int total = o.MaxSteps ?? o.Epochs * order.BatchesPerEpoch * g.NumIterations;
        var generator = new Generator(run.Model.Decoder);
        Rollout? current = null;
        int iteration = 0, generated = 0;

        StepOutput Step(BatchCursor cursor)
        {
            if (current == null || iteration == g.NumIterations)
            {
                var idx = order.Batch(cursor.Epoch, cursor.Index).ExampleIndices;
                current = MakeRollout(run, generator, reference, rewards, idx.Select(i => prompts[i]).ToList(), tok, pad, generated++);
                iteration = 0;
            }
            iteration++;
            var ro = current;
            var b = ro.Batch;
            var training = System.Diagnostics.Stopwatch.StartNew();
            // The current policy's token log-probs (equal to the old ones on the first iteration).
            var logp = iteration == 1 ? ro.OldLogp : TokenLogps(Pass(run.Backprop, b, null), ro.Counted);
            var weights = new float[logp.Length];
            var tl = GrpoLoss.Compute(g.Objective, logp, ro.OldLogp, ro.RefLogp, ro.Advantage, ro.Counted, b.Length, weights);
            Pass(run.Backprop, b, run.Params.GradOf, weights);
            var extra = (JsonObject)ro.Stats.DeepClone();
            extra["clip_fraction"] = (double)tl.Clipped / (g.ImportanceSamplingLevel == "sequence" ? b.Batch : ro.Tokens);
            extra["kl"] = tl.KlSum / ro.Tokens;
            extra["iteration"] = iteration;
            if (iteration > 1) extra["sampling_s"] = 0.0; // the batch's completions were sampled for iteration 1
            extra["training_s"] = Math.Round(training.Elapsed.TotalSeconds, 4);
            var next = iteration == g.NumIterations ? cursor.Next(order.BatchesPerEpoch) : cursor;
            return new StepOutput(tl.Loss, b.Ids.Length, next, extra);
        }

        var info = new JsonObject { ["path"] = Path.GetFullPath(o.DataPath), ["sha256"] = sha, ["prompts"] = prompts.Count, ["method"] = g.ToJson() };
        if (o.Resume) OnWarning?.Invoke("GRPO resumes from the checkpoint's weights and data position; the interrupted batch's completions are sampled anew");
        return run.Run("grpo", total, sha, info, Step, null, cancel);
    }

    private Rollout MakeRollout(TrainingRun run, Generator generator, ReferenceModel? reference, List<IRewardFunction> rewards, List<Prompt> prompts, Models.Text.HfTokenizer tok, int pad, int round)
    {
        int gsize = g.NumGenerations;
        var inputs = prompts.SelectMany(p => Enumerable.Repeat((IReadOnlyList<int>)p.Ids, gsize)).ToList();
        var sampling = new SamplingOptions { Greedy = false, Temperature = g.Temperature, TopP = g.TopP, Seed = (ulong)(o.Seed + 7919L * round) * 1000003UL };
        var sampleClock = System.Diagnostics.Stopwatch.StartNew();
        var results = generator.Generate(inputs, new GenerationOptions { MaxNewTokens = g.MaxCompletionLength, Sampling = sampling, EosIds = run.Model.EosIds() });
        double samplingSeconds = sampleClock.Elapsed.TotalSeconds;
        var reward = new double[inputs.Count];
        int errors = 0;
        for (int i = 0; i < inputs.Count; i++)
            reward[i] = RewardFunctions.Total(rewards, prompts[i / gsize].Row, tok.Decode(results[i].GeneratedIds.ToArray(), skipSpecialTokens: true), ref errors);
        if (errors > 0) OnWarning?.Invoke($"{errors} reward evaluation(s) threw or returned NaN/Inf; those samples got 0");
        var truncated = results.Select(r => r.Finish == FinishReason.Length).ToArray();
        var layout = Layout(prompts.Select(p => p.Ids).ToList(), results.Select(r => r.GeneratedIds.ToArray()).ToList(), reward, gsize, pad,
            g.ScaleRewards, g.MaskTruncatedCompletions ? truncated : null);
        var batch = layout.Batch;
        var counted = layout.Counted;
        // One update per batch and no KL term: the only ratio is exp(logp - logp_old) = 1 and the weights are
        // the advantages alone, so the log-prob values are never read and their pass is skipped (as TRL does);
        // zeros stand for them, which gives the same ratio, loss and weights bit for bit.
        bool readsLogps = g.NumIterations > 1 || g.Beta > 0;
        var oldLogp = readsLogps ? TokenLogps(Pass(run.Backprop, batch, null), counted) : new float[counted.Length];
        var refLogp = reference == null ? new float[counted.Length] : ReferenceTokenLogps(run, reference, batch, counted);
        int tokens = layout.Tokens;
        var stats = new JsonObject
        {
            ["reward"] = reward.Average(),
            ["reward_std"] = layout.RewardStd,
            ["completion_length"] = results.Average(r => r.GeneratedIds.Count),
            ["truncated"] = truncated.Average(t => t ? 1.0 : 0.0),
            ["reward_errors"] = errors,
            ["sampling_s"] = Math.Round(samplingSeconds, 4),
        };
        return new Rollout { Batch = batch, OldLogp = oldLogp, RefLogp = refLogp, Advantage = layout.Advantage, Counted = counted, Tokens = tokens, Stats = stats };
    }

    /// <summary>
    /// The training batch of a generated batch: row q*G+j is prompts[q] + completions[q*G+j], right-padded;
    /// Counted[n] marks the rows of the per-token cross-entropy [B*T] that score a completion token
    /// (position n predicts token n+1), none of a completion marked in <paramref name="masked"/>; every
    /// counted token of a row carries that row's advantage, r - mean within its group of G, divided by
    /// std + 1e-4 (<paramref name="scaleRewards"/> group: the group's std; batch: the std of all rewards;
    /// none: not divided; std with n - 1). Tokens = counted tokens (>= 1); RewardStd = the groups' std
    /// averaged over groups (batch: the batch's std).
    /// </summary>
    public static GrpoLayout Layout(IReadOnlyList<int[]> prompts, IReadOnlyList<int[]> completions, IReadOnlyList<double> rewards, int groupSize, int pad,
        string scaleRewards = "group", IReadOnlyList<bool>? masked = null)
    {
        int rows = prompts.Count * groupSize;
        if (groupSize < 2 || completions.Count != rows || rewards.Count != rows)
            throw new ArgumentException($"GRPO layout: {prompts.Count} prompts x G {groupSize} need that many completions and rewards (got {completions.Count}, {rewards.Count})");
        var examples = new List<SftExample>(rows);
        for (int i = 0; i < rows; i++)
        {
            var p = prompts[i / groupSize];
            var ids = p.Concat(completions[i]).ToArray();
            var labels = Enumerable.Repeat(SftExample.IgnoreIndex, p.Length).Concat(completions[i]).ToArray();
            examples.Add(new SftExample(ids, labels, 0));
        }
        var batch = SftBatcher.Pad(examples, pad);
        int t = batch.Length;
        var counted = new bool[batch.Ids.Length];
        for (int n = 0; n < counted.Length; n++)
            counted[n] = n % t != t - 1 && batch.Labels[n + 1] != SftExample.IgnoreIndex && masked?[n / t] != true;
        var adv = new float[counted.Length];
        double std = 0, batchSd = Std(rewards);
        for (int q = 0; q < prompts.Count; q++)
        {
            var group = rewards.Skip(q * groupSize).Take(groupSize).ToList();
            double mean = group.Average(), sd = Std(group);
            std += sd / prompts.Count;
            double scale = scaleRewards switch { "group" => sd + 1e-4, "batch" => batchSd + 1e-4, _ => 1 };
            for (int j = 0; j < groupSize; j++)
            {
                int row = q * groupSize + j;
                float a = (float)((rewards[row] - mean) / scale);
                for (int k = 0; k < t; k++) if (counted[row * t + k]) adv[row * t + k] = a;
            }
        }
        return new GrpoLayout(batch, counted, adv, Math.Max(1, counted.Count(c => c)), scaleRewards == "batch" ? batchSd : std);
    }

    // The sample standard deviation (n - 1), as torch.std.
    private static double Std(IReadOnlyList<double> x)
    {
        double mean = x.Average();
        return Math.Sqrt(x.Sum(v => (v - mean) * (v - mean)) / (x.Count - 1));
    }

    private float[] ReferenceTokenLogps(TrainingRun run, ReferenceModel reference, SftBatch b, bool[] counted)
    {
        float[]? losses = null;
        reference.WithReference(run.Backprop, () => losses = Pass(run.Backprop, b, null));
        return TokenLogps(losses!, counted);
    }

    // Per-token cross-entropy of a rollout batch with the logits divided by the sampling temperature, as
    // TRL scores completions (policy, old and reference log-probs alike); weights = per-token gradient scales.
    private float[] Pass(DecoderBackprop backprop, SftBatch b, Func<Tensor, Tensor?>? gradOf, float[]? weights = null) =>
        backprop.Run(b.Ids, b.Mask, b.Batch, new CrossEntropyHead(DecoderBackprop.NextTokenTargets(b.Labels, b.Length), 1f, weights, g.Temperature), gradOf);

    private static float[] TokenLogps(float[] losses, bool[] counted)
    {
        var r = new float[losses.Length];
        for (int n = 0; n < r.Length; n++) r[n] = counted[n] ? -losses[n] : 0;
        return r;
    }

    private (List<Prompt>, string) LoadPrompts(LanguageModel lm)
    {
        if (!File.Exists(o.DataPath)) throw new TemperException($"{o.DataPath}: prompt file not found");
        var bytes = File.ReadAllBytes(o.DataPath);
        var sha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes));
        var tok = lm.RequireTokenizer();
        var list = new List<Prompt>();
        var lines = System.Text.Encoding.UTF8.GetString(bytes).Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            JsonObject row;
            try { row = JsonNode.Parse(lines[i]) as JsonObject ?? throw new TemperException($"{o.DataPath}:{i + 1}: not a JSON object"); }
            catch (JsonException e) { throw new TemperException($"{o.DataPath}:{i + 1}: not valid JSON: {e.Message.Split('\n')[0]}"); }
            string text = row["prompt"] switch
            {
                JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
                JsonArray msgs => lm.RequireTemplate().Render(msgs, addGenerationPrompt: true),
                _ => throw new TemperException($"{o.DataPath}:{i + 1}: \"prompt\" must be a string or a list of messages"),
            };
            var ids = tok.Encode(text).ToArray();
            if (ids.Length == 0) throw new TemperException($"{o.DataPath}:{i + 1}: empty prompt");
            list.Add(new Prompt(ids, row));
        }
        if (list.Count == 0) throw new TemperException($"{o.DataPath}: no prompts");
        return (list, sha);
    }
}
