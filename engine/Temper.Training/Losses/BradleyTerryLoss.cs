// The reward model's pairwise loss (Bradley-Terry, as TRL's RewardTrainer): over n pairs of scalar
// rewards r_c[n] (chosen) and r_r[n] (rejected),
//   loss = mean(-log sigmoid(r_c - r_r)) + centerCoef * mean((r_c + r_r)^2)
// (the second term, TRL's center_rewards_coefficient, keeps rewards centred on 0), with its gradient
// with respect to each reward, the pair accuracy (r_c > r_r) and the mean margin r_c - r_r.
namespace Temper.Training.Losses;

public sealed record BradleyTerryResult(double Loss, double[] DChosen, double[] DRejected, double Accuracy, double Margin);

public static class BradleyTerryLoss
{
    public static BradleyTerryResult Compute(ReadOnlySpan<double> chosen, ReadOnlySpan<double> rejected, double centerCoef = 0)
    {
        int n = chosen.Length;
        if (n == 0 || rejected.Length != n) throw new ArgumentException($"Bradley-Terry loss: {chosen.Length} chosen and {rejected.Length} rejected rewards");
        double loss = 0, margin = 0, correct = 0;
        var dc = new double[n];
        var dr = new double[n];
        for (int i = 0; i < n; i++)
        {
            double d = chosen[i] - rejected[i];
            loss += SoftplusNeg(d) / n;                    // -log sigmoid(d)
            double g = -Sigmoid(-d) / n;                      // d/dd of -log sigmoid(d)
            double sum = chosen[i] + rejected[i];
            loss += centerCoef * sum * sum / n;
            double gc = 2 * centerCoef * sum / n;
            dc[i] = g + gc;
            dr[i] = -g + gc;
            margin += d / n;
            if (d > 0) correct++;
        }
        return new BradleyTerryResult(loss, dc, dr, correct / n, margin);
    }

    /// <summary>log(1 + exp(-x)) without overflow.</summary>
    private static double SoftplusNeg(double x) => x > 0 ? Math.Log(1 + Math.Exp(-x)) : -x + Math.Log(1 + Math.Exp(x));

    private static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));
}
