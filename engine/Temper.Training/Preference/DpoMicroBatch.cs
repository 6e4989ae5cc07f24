// One DPO micro-batch, shared by DpoTrainer and the native library's trainer: rows [chosen...;
// rejected...] of n pairs, a no-gradient pass for the policy's summed completion log-probs, the
// reference's (given, e.g. from the cache, or computed with the reference model), the loss's
// d loss / d log p per sequence, then one forward+backward pass weighting each sequence's tokens by it.
// share = n / (pairs in the whole optimizer step), so gradient accumulation averages over the step.
// With rpo_alpha (TRL's RPO) the loss gains alpha * NLL, NLL = the token-level mean cross-entropy over
// all chosen completion tokens of the micro-batch = -sum_i Sc_i / sum_i Nc_i, whose gradient in each
// summed chosen log-prob Sc_i is -1 / sum_i Nc_i. (TRL's cross_entropy uses ignore_index=0, so it also
// drops completion tokens whose id is 0; Temper counts every completion token.)
// With routerAuxCoef (config.json's output_router_logits) the loss gains coef x the router load-balancing loss of the
// gradient pass over the rows (RouterAuxPass; TRL takes it from the policy's concatenated forward, never the reference's).
using Temper.Core;
using Temper.Models;
using Temper.Training.Data;
using Temper.Training.Losses;

namespace Temper.Training.Preference;

/// <summary>A micro-batch's contribution to the step's figures (each already multiplied by its share).</summary>
public readonly record struct DpoMicroBatchResult(double Loss, double RewardsChosen, double RewardsRejected, double RewardAccuracy, double RewardMargin, long Tokens, double Nll = 0, double RouterAux = 0);

public static class DpoMicroBatch
{
    public static DpoMicroBatchResult Run(DecoderBackprop backprop, Func<Tensor, Tensor?> gradOf, IReadOnlyList<PreferencePair> pairs, double share,
        PreferenceOptions p, int pad, ReferenceModel? reference, double[]? refChosen = null, double[]? refRejected = null, double? routerAuxCoef = null)
    {
        int n = pairs.Count;
        var rows = pairs.Select(x => x.Chosen).Concat(pairs.Select(x => x.Rejected)).ToList();
        var (sums, counts) = SequenceLogps.Compute(backprop, rows, pad, rows.Count);
        double[] pc = sums[..n], pr = sums[n..];
        double[] refC = refChosen ?? reference?.Logps(backprop, rows[..n], pad) ?? throw new ArgumentException("DPO needs a reference model or cached reference log-probs");
        double[] refR = refRejected ?? reference!.Logps(backprop, rows[n..], pad);
        bool ipo = DpoLoss.LengthAveraged(p.LossType); // TRL feeds IPO and sigmoid_norm length-averaged log-probs
        double Avg(double v, int i) => ipo ? v / Math.Max(1, counts[i]) : v;
        var r = DpoLoss.Compute(pc.Select((v, i) => Avg(v, i)).ToArray(), pr.Select((v, i) => Avg(v, n + i)).ToArray(),
            refC.Select((v, i) => Avg(v, i)).ToArray(), refR.Select((v, i) => Avg(v, n + i)).ToArray(), p.Beta, p.LossType, p.LabelSmoothing);
        var weights = new double[2 * n];
        for (int i = 0; i < n; i++)
        {
            weights[i] = -r.DChosen[i] * share / (ipo ? Math.Max(1, counts[i]) : 1);
            weights[n + i] = -r.DRejected[i] * share / (ipo ? Math.Max(1, counts[n + i]) : 1);
        }
        double nll = 0;
        if (p.RpoAlpha is { } alpha)
        {
            double chosenTokens = counts[..n].Sum();
            nll = -pc.Sum() / chosenTokens;
            for (int i = 0; i < n; i++) weights[i] += alpha / chosenTokens * share;
        }
        var b = SftBatcher.Pad(rows, pad);
        var scales = SequenceLogps.RowScales(weights, b.Length);
        double aux = RouterAuxPass.Run(backprop, routerAuxCoef, share, () => backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, gradOf, scales));
        return new DpoMicroBatchResult((r.Loss + (p.RpoAlpha ?? 0) * nll + (routerAuxCoef ?? 0) * aux) * share, r.RewardsChosen.Average() * share,
            r.RewardsRejected.Average() * share, r.RewardAccuracy * share, r.RewardMargin * share, b.Ids.Length, nll * share, aux * share);
    }
}
