// Direct Preference Optimization losses as TRL defines them, on per-sequence completion log-probs:
// z = (pc - pr) - (rc - rr) (policy/reference, chosen/rejected), beta, label smoothing ls:
//   sigmoid (conservative with ls > 0): -(1-ls) log s(beta z) - ls log s(-beta z)
//   ipo:    (z - 1/(2 beta))^2   (TRL feeds IPO length-averaged log-probs; the caller does that)
//   robust: (-(1-ls) log s(beta z) + ls log s(-beta z)) / (1 - 2 ls)
// Returns the mean loss over pairs and dLoss/dpc, dLoss/dpr per pair (the reference is constant).
using Temper.Core;

namespace Temper.Training.Losses;

public enum DpoLossType { Sigmoid, Ipo, Robust }

public sealed record DpoResult(double Loss, double[] DChosen, double[] DRejected, double[] RewardsChosen, double[] RewardsRejected)
{
    public double RewardAccuracy => RewardsChosen.Zip(RewardsRejected).Average(p => p.First > p.Second ? 1.0 : 0.0);
    public double RewardMargin => RewardsChosen.Zip(RewardsRejected).Average(p => p.First - p.Second);
}

public static class DpoLoss
{
    public static DpoLossType Parse(string name) => name switch
    {
        "sigmoid" => DpoLossType.Sigmoid,
        "ipo" => DpoLossType.Ipo,
        "robust" => DpoLossType.Robust,
        _ => throw new TemperException($"--loss-type must be sigmoid, ipo or robust, not '{name}'"),
    };

    public static DpoResult Compute(ReadOnlySpan<double> pc, ReadOnlySpan<double> pr, ReadOnlySpan<double> rc, ReadOnlySpan<double> rr, double beta, DpoLossType type = DpoLossType.Sigmoid, double labelSmoothing = 0)
    {
        int n = pc.Length;
        if (pr.Length != n || rc.Length != n || rr.Length != n || n == 0) throw new ArgumentException("DPO needs four equal, non-empty log-prob vectors");
        if (type == DpoLossType.Robust && labelSmoothing >= 0.5) throw new TemperException("robust DPO needs --label-smoothing < 0.5");
        double ls = labelSmoothing, loss = 0;
        var dc = new double[n];
        var dr = new double[n];
        var rwc = new double[n];
        var rwr = new double[n];
        for (int i = 0; i < n; i++)
        {
            double z = pc[i] - pr[i] - (rc[i] - rr[i]);
            double bz = beta * z;
            double l, dz;
            switch (type)
            {
                case DpoLossType.Sigmoid:
                    l = -(1 - ls) * LogSigmoid(bz) - ls * LogSigmoid(-bz);
                    dz = -(1 - ls) * beta * Sigmoid(-bz) + ls * beta * Sigmoid(bz);
                    break;
                case DpoLossType.Ipo:
                    l = (z - 1 / (2 * beta)) * (z - 1 / (2 * beta));
                    dz = 2 * (z - 1 / (2 * beta));
                    break;
                default:
                    l = (-(1 - ls) * LogSigmoid(bz) + ls * LogSigmoid(-bz)) / (1 - 2 * ls);
                    dz = (-(1 - ls) * beta * Sigmoid(-bz) - ls * beta * Sigmoid(bz)) / (1 - 2 * ls);
                    break;
            }
            loss += l / n;
            dc[i] = dz / n;
            dr[i] = -dz / n;
            rwc[i] = beta * (pc[i] - rc[i]);
            rwr[i] = beta * (pr[i] - rr[i]);
        }
        return new DpoResult(loss, dc, dr, rwc, rwr);
    }

    internal static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));
    internal static double LogSigmoid(double x) => x >= 0 ? -Math.Log(1 + Math.Exp(-x)) : x - Math.Log(1 + Math.Exp(x));
}
