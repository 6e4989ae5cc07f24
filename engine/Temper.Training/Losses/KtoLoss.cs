// Kahneman-Tversky Optimization (TRL's KTO) on unpaired examples: r = log pi(y|x) - log ref(y|x)
// summed over completion tokens; z0 = max(0, mean over the batch of the same quantity for mismatched
// pairs (prompt i with completion i-1, cyclically)), detached; per example
//   desirable:   wD (1 - s(beta (r - z0)))      undesirable: wU (1 - s(beta (z0 - r)))
// and the loss is their mean. Returns it with dLoss/d(policy log-prob) per example.
namespace Temper.Training.Losses;

public sealed record KtoResult(double Loss, double Z0, double[] Rewards, double[] DPolicy);

public static class KtoLoss
{
    public static KtoResult Compute(ReadOnlySpan<double> policy, ReadOnlySpan<double> reference, ReadOnlySpan<double> mismatchedPolicy, ReadOnlySpan<double> mismatchedReference,
        ReadOnlySpan<bool> desirable, double beta, double desirableWeight = 1, double undesirableWeight = 1)
    {
        int n = policy.Length;
        if (reference.Length != n || mismatchedPolicy.Length != n || mismatchedReference.Length != n || desirable.Length != n || n == 0)
            throw new ArgumentException("KTO needs equal, non-empty vectors");
        double kl = 0;
        for (int i = 0; i < n; i++) kl += (mismatchedPolicy[i] - mismatchedReference[i]) / n;
        double z0 = Math.Max(0, kl), loss = 0;
        var rewards = new double[n];
        var d = new double[n];
        for (int i = 0; i < n; i++)
        {
            double r = policy[i] - reference[i];
            double sign = desirable[i] ? 1 : -1, w = desirable[i] ? desirableWeight : undesirableWeight;
            double s = DpoLoss.Sigmoid(beta * sign * (r - z0));
            rewards[i] = r;
            loss += w * (1 - s) / n;
            d[i] = -w * beta * sign * s * (1 - s) / n;
        }
        return new KtoResult(loss, z0, rewards, d);
    }
}
