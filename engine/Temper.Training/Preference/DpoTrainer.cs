// DPO (sigmoid, IPO, robust, ...; label smoothing = conservative DPO; rpo_alpha = RPO's NLL term), ORPO
// and CPO (with SimPO) as thin recipes over TrainingRun on paired data. DPO, each micro-batch: a
// no-gradient pass gives the policy's summed completion log-probs, the reference's come from the adapter
// switched off / a frozen adapter / a separate model (or the precomputed cache), the loss gives
// d loss / d log p per sequence, and one forward+backward pass weights each sequence's tokens by it.
// ORPO and CPO need no reference: the same passes over rows [chosen...; rejected...] with their losses.
// When config.json sets output_router_logits, each micro-batch's loss gains router_aux_loss_coef x the router load-balancing
// loss of its gradient pass, as TRL's DPO/ORPO/CPO trainers add it (RouterAuxPass), and metrics.jsonl gets aux_loss (the
// step's share-weighted mean over micro-batches).
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Data;
using Temper.Training.Losses;
using Temper.Training.Runs;
using Temper.Training.Trainers;

namespace Temper.Training.Preference;

public sealed class DpoTrainer(SftOptions options, PreferenceOptions p, IBackend backend, PreferenceMethod method = PreferenceMethod.Dpo)
{
    public Action<StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    public SftResult Run(CancellationToken cancel = default)
    {
        var o = p.RefAdapter != null && options.InitAdapter == null && !options.Full ? options with { InitAdapter = p.RefAdapter } : options;
        if (p.RefAdapter != null && p.RefModel != null) throw new TemperException("--ref-adapter and --ref-model cannot be combined");
        p.Check(method);
        bool referenceFree = method != PreferenceMethod.Dpo;
        using var run = TrainingRun.Open(o, backend, routerAuxLoss: true);
        double? auxCoef = RouterAuxPass.Take(run.Backprop, run.Model.Config);
        run.OnStep = OnStep;
        run.OnWarning = OnWarning;
        var data = PreferenceDataset.Load(o.DataPath, run.Model.RequireTokenizer(), run.Model.Template, unpaired: false, o.MaxLength, o.SkipBadLines);
        if (data.DroppedCount > 0) OnWarning?.Invoke($"{data.DroppedCount} pair(s) longer than {o.MaxLength} tokens were dropped");
        var pairs = data.Pairs;
        using var reference = referenceFree ? null : p.RefModel != null ? ReferenceModel.Separate(LanguageModel.Load(p.RefModel, backend), run.Model)
            : p.RefAdapter != null ? ReferenceModel.FrozenAdapter(run.Model.Weights, p.RefAdapter, backend, run.Model.Config)
            : o.Full ? throw new TemperException("full-weight DPO needs --ref-model (the base cannot be recovered by switching an adapter off)")
            : ReferenceModel.AdapterOff(run.Model.Weights);
        int pad = run.PadId;
        double[]? refChosen = null, refRejected = null;
        if (reference != null && p.PrecomputeRef)
        {
            refChosen = ReferenceCache.GetOrCompute(o.OutDir, data.Sha256, reference.Description, "chosen", () => reference.Logps(run.Backprop, pairs.Select(x => x.Chosen).ToList(), pad));
            refRejected = ReferenceCache.GetOrCompute(o.OutDir, data.Sha256, reference.Description, "rejected", () => reference.Logps(run.Backprop, pairs.Select(x => x.Rejected).ToList(), pad));
        }

        var batcher = new SftBatcher(pairs.Select(x => x.Chosen).ToList(), o.BatchSize, pad, (ulong)o.Seed);
        int total = batcher.TotalSteps(o.MaxSteps, o.Epochs, o.GradAccum);

        StepOutput Step(BatchCursor cursor)
        {
            var micro = batcher.StepBatches(ref cursor, o.GradAccum).Select(b => b.ExampleIndices).ToList();
            int totalPairs = micro.Sum(m => m.Length);
            double loss = 0, rc = 0, rr = 0, acc = 0, margin = 0, nll = 0, lc = 0, lr = 0, aux = 0;
            long tokens = 0;
            foreach (var idx in micro)
            {
                double share = (double)idx.Length / totalPairs;
                if (!referenceFree)
                {
                    var d = DpoMicroBatch.Run(run.Backprop, run.Params.GradOf, idx.Select(i => pairs[i]).ToList(), share, p, pad, reference,
                        refChosen == null ? null : idx.Select(i => refChosen[i]).ToArray(), refRejected == null ? null : idx.Select(i => refRejected[i]).ToArray(), auxCoef);
                    (loss, rc, rr, acc, margin, tokens, nll) = (loss + d.Loss, rc + d.RewardsChosen, rr + d.RewardsRejected, acc + d.RewardAccuracy, margin + d.RewardMargin, tokens + d.Tokens, nll + d.Nll);
                    aux += d.RouterAux;
                    continue;
                }
                var rows = idx.Select(i => pairs[i].Chosen).Concat(idx.Select(i => pairs[i].Rejected)).ToList();
                var (sums, counts) = SequenceLogps.Compute(run.Backprop, rows, pad, rows.Count);
                int n = idx.Length;
                double[] dChosen, dRejected;
                if (method == PreferenceMethod.Orpo)
                {
                    var r = OrpoLoss.Compute(sums.AsSpan(0, n), counts.AsSpan(0, n), sums.AsSpan(n), counts.AsSpan(n), p.Beta);
                    (dChosen, dRejected) = (r.DChosen, r.DRejected);
                    (loss, nll, margin) = (loss + r.Loss * share, nll + r.Nll * share, margin + r.LogOddsRatio.Average() * share);
                }
                else
                {
                    var r = CpoLoss.Compute(sums.AsSpan(0, n), counts.AsSpan(0, n), sums.AsSpan(n), counts.AsSpan(n), p.Beta, p.CpoLossType, p.LabelSmoothing,
                        p.SimpoGamma ?? PreferenceOptions.DefaultSimpoGamma, p.CpoAlpha);
                    (dChosen, dRejected) = (r.DChosen, r.DRejected);
                    (loss, nll, margin, acc) = (loss + r.Loss * share, nll + r.Nll * share, margin + r.RewardMargin * share, acc + r.RewardAccuracy * share);
                    (rc, rr, lc, lr) = (rc + r.RewardsChosen.Average() * share, rr + r.RewardsRejected.Average() * share, lc + r.ChosenLogps.Average() * share, lr + r.RejectedLogps.Average() * share);
                }
                var weights = new double[2 * n];
                for (int i = 0; i < n; i++) { weights[i] = -dChosen[i] * share; weights[n + i] = -dRejected[i] * share; }
                var b = SftBatcher.Pad(rows, pad);
                void Pass() => run.Backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, run.Params.GradOf, SequenceLogps.RowScales(weights, b.Length));
                double a = RouterAuxPass.Run(run.Backprop, auxCoef, share, Pass);
                (loss, aux) = (loss + (auxCoef ?? 0) * a * share, aux + a * share);
                tokens += b.Ids.Length;
            }
            var extra = method switch
            {
                PreferenceMethod.Orpo => new JsonObject { ["nll"] = nll, ["log_odds_ratio"] = margin },
                // TRL's CPO metric names
                PreferenceMethod.Cpo => new JsonObject
                {
                    ["rewards/chosen"] = rc, ["rewards/rejected"] = rr, ["rewards/accuracies"] = acc, ["rewards/margins"] = margin,
                    ["logps/chosen"] = lc, ["logps/rejected"] = lr, ["nll_loss"] = nll,
                },
                _ => new JsonObject { ["rewards_chosen"] = rc, ["rewards_rejected"] = rr, ["reward_margin"] = margin, ["reward_accuracy"] = acc },
            };
            if (method == PreferenceMethod.Dpo && p.RpoAlpha != null) extra["nll_loss"] = nll;
            if (auxCoef != null) extra["aux_loss"] = MetricsLog.Round(aux);
            return new StepOutput(loss, tokens, cursor, extra);
        }

        var info = new JsonObject
        {
            ["path"] = Path.GetFullPath(o.DataPath), ["sha256"] = data.Sha256, ["lines"] = data.LineCount, ["pairs"] = pairs.Count,
            ["dropped"] = data.DroppedCount, ["skipped_bad_lines"] = data.SkippedBadLines, ["method"] = p.ToJson(method),
            ["reference"] = reference?.Description,
        };
        return run.Run(method.ToString().ToLowerInvariant(), total, data.Sha256, info, Step, null, cancel);
    }
}
