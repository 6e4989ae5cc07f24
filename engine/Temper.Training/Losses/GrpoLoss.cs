// GRPO's objective over a rollout laid out as [rows, T] (row = one completion after its prompt; counted
// slots score a completion token), as TRL's GRPOTrainer computes it for its loss types grpo, bnpo, dr_grpo
// and dapo. Per slot n of row i, with A the row's advantage and lw the log importance weight:
//   token level (GRPO):     lw_n = logp_n - old_n
//   sequence level (GSPO):  lw_n = mean over the row's counted slots of (logp - old), the same for the row
//   r = exp(lw), term_n = -min(min(r, delta) A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta k3_n,
//   k3_n = exp(ref_n - logp_n) - (ref_n - logp_n) - 1     (delta: TRL's two-sided clip; none = no cap)
// aggregated as
//   grpo     mean over rows of (sum of the row's terms / its counted slots)
//   bnpo     sum of terms / counted slots of the rollout
//   dr_grpo  sum of terms / (rows x max_completion_length)
//   dapo     sum of terms / counted slots of the accumulated batch: here one rollout is one optimizer step,
//            so it equals bnpo
// Into weights[n] goes -(d loss / d logp_n): the scale of slot n's cross-entropy (-logp) in the backward
// pass (sequence level: each slot gets its row's gradient through lw divided by the row's counted slots).
// Clipped: slots (sequence level: rows) whose weight the clip cut off, r < 1 - eps_low with A < 0 or
// r > 1 + eps_high with A > 0, as TRL counts its clip ratio.
using Temper.Core;

namespace Temper.Training.Losses;

/// <summary>TRL's GRPO loss settings (GRPOConfig's loss_type, epsilon, epsilon_high, delta, beta,
/// importance_sampling_level and max_completion_length).</summary>
public sealed record GrpoObjective
{
    public static readonly string[] LossTypes = ["grpo", "bnpo", "dr_grpo", "dapo"];

    public string LossType { get; init; } = "dapo";
    public double Epsilon { get; init; } = 0.2;
    /// <summary>The upper clip (DAPO's clip-higher); null: Epsilon.</summary>
    public double? EpsilonHigh { get; init; }
    /// <summary>Two-sided clipping: the unclipped ratio is capped at Delta; null: no cap.</summary>
    public double? Delta { get; init; }
    public double Beta { get; init; }
    /// <summary>GSPO's sequence-level importance weights (TRL importance_sampling_level "sequence").</summary>
    public bool SequenceLevel { get; init; }
    public int MaxCompletionLength { get; init; } = 32;

    public void Validate()
    {
        if (!LossTypes.Contains(LossType)) throw new TemperException($"--loss-type '{LossType}' is not one of {string.Join(", ", LossTypes)}");
        if (!(Epsilon > 0 && Epsilon < 1)) throw new TemperException($"--epsilon must be in (0, 1) (got {Epsilon})");
        if (EpsilonHigh is double h && !(h > 0)) throw new TemperException($"--epsilon-high must be > 0 (got {h})");
        if (Delta is double d && !(d > 1 + (EpsilonHigh ?? Epsilon))) throw new TemperException($"--delta must be > 1 + epsilon-high (got {d}), as TRL requires");
        if (!(Beta >= 0)) throw new TemperException($"--beta must be >= 0 (got {Beta})");
    }
}

/// <summary>The objective of one pass over a rollout: the loss, slots (or rows) clipped, and the k3 sum.</summary>
public readonly record struct GrpoTokenLoss(double Loss, int Clipped, double KlSum);

public static class GrpoLoss
{
    /// <summary>The loss of the header over slots [rows, <paramref name="rowLength"/>], and -(d loss / d logp) into weights.</summary>
    public static GrpoTokenLoss Compute(GrpoObjective o, ReadOnlySpan<float> logp, ReadOnlySpan<float> oldLogp, ReadOnlySpan<float> refLogp,
        ReadOnlySpan<float> advantage, ReadOnlySpan<bool> counted, int rowLength, Span<float> weights)
    {
        int rows = logp.Length / rowLength;
        if (rows * rowLength != logp.Length) throw new ArgumentException($"{logp.Length} slots are not rows of {rowLength}");
        int tokens = 0;
        foreach (bool c in counted) tokens += c ? 1 : 0;
        double low = 1 - o.Epsilon, high = 1 + (o.EpsilonHigh ?? o.Epsilon);
        double loss = 0, kl = 0;
        int clipped = 0;
        weights.Clear();
        for (int i = 0; i < rows; i++)
        {
            int start = i * rowLength, len = 0;
            double sumLogRatio = 0;
            for (int n = start; n < start + rowLength; n++)
                if (counted[n])
                {
                    len++;
                    sumLogRatio += logp[n] - oldLogp[n];
                }
            if (len == 0) continue;
            double norm = o.LossType switch
            {
                "grpo" => 1.0 / ((double)rows * len),
                "dr_grpo" => 1.0 / ((double)rows * o.MaxCompletionLength),
                _ => 1.0 / tokens, // bnpo, dapo
            };
            double rowGrad = 0; // sequence level: d loss / d lw of the row
            for (int n = start; n < start + rowLength; n++)
            {
                if (!counted[n]) continue;
                double a = advantage[n];
                double lw = o.SequenceLevel ? sumLogRatio / len : logp[n] - oldLogp[n];
                double r = Math.Exp(lw), capped = o.Delta is double d ? Math.Min(r, d) : r;
                double l1 = capped * a, l2 = Math.Clamp(r, low, high) * a;
                // d term / d lw: the branch min takes (on a tie both give r A or both 0); the cap and the clip pass no gradient beyond their bounds.
                double dTerm = l1 <= l2 ? (capped == r ? -r * a : 0) : (r >= low && r <= high ? -r * a : 0);
                double term = -Math.Min(l1, l2);
                bool isClipped = (r < low && a < 0) || (r > high && a > 0);
                if (isClipped && (!o.SequenceLevel || n == FirstCounted(counted, start, rowLength))) clipped++;
                double dLogp = 0;
                if (o.SequenceLevel) rowGrad += norm * dTerm;
                else dLogp = norm * dTerm;
                if (o.Beta > 0)
                {
                    double diff = refLogp[n] - logp[n];
                    double k3 = Math.Exp(diff) - diff - 1;
                    kl += k3;
                    term += o.Beta * k3;
                    dLogp += norm * o.Beta * (1 - Math.Exp(diff));
                }
                loss += norm * term;
                weights[n] = (float)-dLogp;
            }
            if (o.SequenceLevel)
                for (int n = start; n < start + rowLength; n++)
                    if (counted[n]) weights[n] -= (float)(rowGrad / len);
        }
        return new GrpoTokenLoss(loss, clipped, kl);
    }

    private static int FirstCounted(ReadOnlySpan<bool> counted, int start, int rowLength)
    {
        for (int n = start; n < start + rowLength; n++) if (counted[n]) return n;
        return -1;
    }
}
