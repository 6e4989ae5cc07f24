// KTO on unpaired thumbs-up/down data as a thin recipe over TrainingRun. Per micro-batch: policy and
// reference summed completion log-probs of each example, and of the mismatched pairs TRL builds for
// its KL estimate (example i's prompt with example i-1's completion, cyclically within the batch);
// KtoLoss gives d loss / d log p per example; one forward+backward pass weights each example's tokens.
// TRL's loss type apo_zero_unpaired has no KL estimate: the mismatched passes are skipped and z0 is 0,
// which turns KTO's terms into APO-zero's (desirable 1 - s(beta r), undesirable s(beta r)).
// When config.json sets output_router_logits, each micro-batch's loss gains router_aux_loss_coef x the router load-balancing
// loss of its gradient pass over the examples' rows (TRL's completion forward; the KL estimate's passes add none; RouterAuxPass),
// and metrics.jsonl gets aux_loss (the step's share-weighted mean over micro-batches).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Data;
using Temper.Training.Losses;
using Temper.Training.Runs;
using Temper.Training.Trainers;

namespace Temper.Training.Preference;

public sealed class KtoTrainer(SftOptions options, PreferenceOptions p, IBackend backend)
{
    public Action<StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    public SftResult Run(CancellationToken cancel = default)
    {
        var o = p.RefAdapter != null && options.InitAdapter == null && !options.Full ? options with { InitAdapter = p.RefAdapter } : options;
        if (!(p.Beta > 0)) throw new TemperException($"--beta must be > 0 (got {p.Beta})");
        if (p.KtoLossType is not ("kto" or "apo_zero_unpaired")) throw new TemperException($"--loss-type '{p.KtoLossType}' is not one of kto, apo_zero_unpaired");
        bool kl = p.KtoLossType == "kto";
        using var run = TrainingRun.Open(o, backend, routerAuxLoss: true);
        double? auxCoef = RouterAuxPass.Take(run.Backprop, run.Model.Config);
        run.OnStep = OnStep;
        run.OnWarning = OnWarning;
        var data = PreferenceDataset.Load(o.DataPath, run.Model.RequireTokenizer(), run.Model.Template, unpaired: true, o.MaxLength, o.SkipBadLines);
        var items = data.Unpaired;
        if (kl && items.Count < 2) throw new TemperException($"{o.DataPath}: KTO needs at least 2 examples (its KL estimate pairs each prompt with another example's completion)");
        if (kl && o.BatchSize < 2) throw new TemperException("KTO needs --batch-size >= 2 (its KL estimate pairs examples within a batch)");
        using var reference = p.RefModel != null ? ReferenceModel.Separate(LanguageModel.Load(p.RefModel, backend), run.Model)
            : p.RefAdapter != null ? ReferenceModel.FrozenAdapter(run.Model.Weights, p.RefAdapter, backend, run.Model.Config)
            : o.Full ? throw new TemperException("full-weight KTO needs --ref-model")
            : ReferenceModel.AdapterOff(run.Model.Weights);
        int pad = run.PadId;
        double[]? refCache = p.PrecomputeRef
            ? ReferenceCache.GetOrCompute(o.OutDir, data.Sha256, reference.Description, "logps", () => reference.Logps(run.Backprop, items.Select(x => x.Example).ToList(), pad))
            : null;
        var batcher = new SftBatcher(items.Select(x => x.Example).ToList(), o.BatchSize, pad, (ulong)o.Seed);
        int total = batcher.TotalSteps(o.MaxSteps, o.Epochs, o.GradAccum);

        StepOutput Step(BatchCursor cursor)
        {
            var micro = batcher.StepBatches(ref cursor, o.GradAccum).Select(b => b.ExampleIndices.Order().ToArray()).ToList(); // file order inside a batch: mismatched pairs as TRL forms them
            int totalExamples = micro.Sum(m => m.Length);
            double loss = 0, z0 = 0, rewardUp = 0, rewardDown = 0, aux = 0;
            long tokens = 0;
            foreach (var idx in micro)
            {
                int n = idx.Length;
                var rows = idx.Select(i => items[i].Example).ToList();
                var shifted = !kl ? null : Enumerable.Range(0, n).Select(j =>
                {
                    var (mine, prev) = (items[idx[j]], items[idx[(j + n - 1) % n]]);
                    return data.Example(mine.Prompt, prev.Completion, mine.SourceLine);
                }).ToList();
                var pol = SequenceLogps.Compute(run.Backprop, rows, pad, n).Sums;
                var polKl = kl ? SequenceLogps.Compute(run.Backprop, shifted!, pad, n).Sums : new double[n];
                var refLogps = refCache != null ? idx.Select(i => refCache[i]).ToArray() : reference.Logps(run.Backprop, rows, pad);
                var refKl = kl ? reference.Logps(run.Backprop, shifted!, pad) : new double[n];
                var desirable = idx.Select(i => items[i].Desirable).ToArray();
                var r = KtoLoss.Compute(pol, refLogps, polKl, refKl, desirable, p.Beta, p.DesirableWeight, p.UndesirableWeight);
                double share = (double)n / totalExamples;
                var b = SftBatcher.Pad(rows, pad);
                void Pass() => run.Backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, run.Params.GradOf, SequenceLogps.RowScales(r.DPolicy.Select(d => -d * share).ToArray(), b.Length));
                double a = RouterAuxPass.Run(run.Backprop, auxCoef, share, Pass);
                (loss, aux) = (loss + (auxCoef ?? 0) * a * share, aux + a * share);
                tokens += b.Ids.Length;
                loss += r.Loss * share;
                z0 += r.Z0 * share;
                rewardUp += (desirable.Any(x => x) ? p.Beta * r.Rewards.Where((_, i) => desirable[i]).Average() : 0) * share;
                rewardDown += (desirable.Any(x => !x) ? p.Beta * r.Rewards.Where((_, i) => !desirable[i]).Average() : 0) * share;
            }
            var extra = new JsonObject { ["kl_z0"] = z0, ["rewards_desirable"] = rewardUp, ["rewards_undesirable"] = rewardDown };
            if (auxCoef != null) extra["aux_loss"] = MetricsLog.Round(aux);
            return new StepOutput(loss, tokens, cursor, extra);
        }

        var info = new JsonObject
        {
            ["path"] = Path.GetFullPath(o.DataPath), ["sha256"] = data.Sha256, ["lines"] = data.LineCount, ["examples"] = items.Count,
            ["desirable"] = items.Count(x => x.Desirable), ["dropped"] = data.DroppedCount, ["method"] = p.ToJson(), ["reference"] = reference.Description,
        };
        return run.Run("kto", total, data.Sha256, info, Step, null, cancel);
    }
}
