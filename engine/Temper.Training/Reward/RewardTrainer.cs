// Reward-model training as a thin recipe over TrainingRun (TRL's RewardTrainer): a scalar head `score`
// [1,C] on the final normed hidden state at each sequence's last token, trained Bradley-Terry on
// prompt/chosen/rejected pairs (the preference data DPO reads, tokenized the same way). The decoder is
// trained with LoRA (or fully); the head always fully. Each micro-batch is one forward+backward over
// [chosen rows; rejected rows]: the head scores them, the pairwise loss gives d loss / d score, and the
// backward carries it into the head and the decoder. Saved as a PEFT SEQ_CLS adapter with the head, or
// a full *ForSequenceClassification folder; RewardModel loads either.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Training.Data;
using Temper.Training.Losses;
using Temper.Training.Trainers;

namespace Temper.Training.Reward;

/// <summary>The reward trainer's own knob: TRL's center_rewards_coefficient (0 = off).</summary>
public sealed record RewardOptions(double CenterRewardsCoefficient = 0);

public sealed class RewardTrainer(SftOptions o, RewardOptions r, IBackend backend)
{
    public Action<StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    public SftResult Run(CancellationToken cancel = default)
    {
        if (!(r.CenterRewardsCoefficient >= 0)) throw new TemperException($"--center-rewards-coefficient must be >= 0 (got {r.CenterRewardsCoefficient})");
        Tensor? score = null;
        using var run = TrainingRun.Open(o, backend, lm => [("score.weight", score = InitialHead(lm.Config.HiddenSize, lm.Config.InitializerRange, o.Seed, backend))]);
        using var head = score!;
        run.OnStep = OnStep;
        run.OnWarning = OnWarning;
        run.SaveAs = () => RewardModelExport.Save(o.OutDir, run, head, Path.GetFullPath(o.ModelDir));
        var data = PreferenceDataset.Load(o.DataPath, run.Model.RequireTokenizer(), run.Model.Template, unpaired: false, o.MaxLength, o.SkipBadLines);
        if (data.DroppedCount > 0) OnWarning?.Invoke($"{data.DroppedCount} pair(s) longer than {o.MaxLength} tokens were dropped");
        var pairs = data.Pairs;
        int pad = run.PadId;
        var batcher = new SftBatcher(pairs.Select(x => x.Chosen).ToList(), o.BatchSize, pad, (ulong)o.Seed);
        int total = batcher.TotalSteps(o.MaxSteps, o.Epochs, o.GradAccum);

        StepOutput Step(BatchCursor cursor)
        {
            var micro = batcher.StepBatches(ref cursor, o.GradAccum).Select(b => b.ExampleIndices).ToList();
            int totalPairs = micro.Sum(m => m.Length);
            double loss = 0, acc = 0, margin = 0, rc = 0, rr = 0;
            long tokens = 0;
            foreach (var idx in micro)
            {
                int n = idx.Length;
                double share = (double)n / totalPairs;
                var rows = idx.Select(i => pairs[i].Chosen).Concat(idx.Select(i => pairs[i].Rejected)).ToList();
                var b = SftBatcher.Pad(rows, pad);
                float[] Gradient(float[] s)
                {
                    var res = BradleyTerryLoss.Compute(s[..n].Select(x => (double)x).ToArray(), s[n..].Select(x => (double)x).ToArray(), r.CenterRewardsCoefficient);
                    loss += res.Loss * share;
                    acc += res.Accuracy * share;
                    margin += res.Margin * share;
                    rc += s[..n].Average() * share;
                    rr += s[n..].Average() * share;
                    return res.DChosen.Concat(res.DRejected).Select(d => (float)(d * share)).ToArray();
                }
                run.Backprop.Run(b.Ids, b.Mask, b.Batch, new ScoreHead(head, ScoreHead.LastTokenRows(b.Mask, b.Batch), Gradient), run.Params.GradOf);
                tokens += b.Ids.Length;
            }
            var extra = new JsonObject { ["accuracy"] = acc, ["margin"] = margin, ["rewards_chosen"] = rc, ["rewards_rejected"] = rr };
            return new StepOutput(loss, tokens, cursor, extra);
        }

        var info = new JsonObject
        {
            ["path"] = Path.GetFullPath(o.DataPath), ["sha256"] = data.Sha256, ["lines"] = data.LineCount, ["pairs"] = pairs.Count,
            ["dropped"] = data.DroppedCount, ["skipped_bad_lines"] = data.SkippedBadLines,
            ["method"] = new JsonObject { ["center_rewards_coefficient"] = r.CenterRewardsCoefficient },
        };
        return run.Run("reward-model", total, data.Sha256, info, Step, null, cancel);
    }

    /// <summary>score.weight [1,C] drawn from N(0, initializer_range^2) with the run's seed, as transformers initialises a Linear.</summary>
    public static Tensor InitialHead(int hidden, float std, int seed, IBackend be)
    {
        var rng = new Random(seed ^ 0x5C0E);
        var w = new float[hidden];
        for (int i = 0; i < hidden; i++)
            w[i] = std * (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return be.FromHost(Tensor.FromFloats(new Shape(1, hidden), w, "score.weight"));
    }
}
