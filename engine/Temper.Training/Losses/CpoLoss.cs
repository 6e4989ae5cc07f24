// Contrastive Preference Optimization (TRL's CPOTrainer), no reference model, on n pairs of summed
// completion log-probs S and token counts N (vectors [n]). As TRL's concatenated_forward/cpo_loss read:
//   p = S / N for ipo and simpo (average_log_prob), else p = S;   z = pc - pr (minus gamma/beta for simpo)
//   sigmoid, simpo: -(1-ls) log s(b z) - ls log s(-b z)     hinge: relu(1 - b z)     ipo: (z - 1/(2b))^2
//   loss = mean_i l_i + alpha NLL,  NLL = -sum_i Sc_i / sum_i Nc_i (token-level mean cross-entropy over
//   all chosen completion tokens of the batch; TRL sets it to 0 when alpha = 0), rewards = b p (detached).
// Returns dLoss/dS of each chosen and rejected completion, as OrpoLoss does.
using Temper.Core;

namespace Temper.Training.Losses;

public enum CpoLossType { Sigmoid, Hinge, Ipo, Simpo }

public sealed record CpoResult(double Loss, double Nll, double[] ChosenLogps, double[] RejectedLogps, double[] DChosen, double[] DRejected, double[] RewardsChosen, double[] RewardsRejected)
{
    public double RewardAccuracy => RewardsChosen.Zip(RewardsRejected).Average(p => p.First > p.Second ? 1.0 : 0.0);
    public double RewardMargin => RewardsChosen.Zip(RewardsRejected).Average(p => p.First - p.Second);
}

public static class CpoLoss
{
    private static readonly (string Name, CpoLossType Type)[] Names =
        [("sigmoid", CpoLossType.Sigmoid), ("hinge", CpoLossType.Hinge), ("ipo", CpoLossType.Ipo), ("simpo", CpoLossType.Simpo)];

    public static CpoLossType Parse(string name) => name switch
    {
        "alphapo" => throw new TemperException("--loss-type alphapo (AlphaPO's reward shaping) is not supported by cpo; use simpo"),
        _ => Names.FirstOrDefault(x => x.Name == name) is { Name: not null } hit ? hit.Type
            : throw new TemperException($"--loss-type must be one of {string.Join(", ", Names.Select(x => x.Name))} for cpo, not '{name}'"),
    };

    /// <summary>TRL's name of the loss type.</summary>
    public static string Name(CpoLossType type) => Names.First(x => x.Type == type).Name;

    /// <summary>Whether TRL averages the log-probs over completion tokens (ipo, simpo).</summary>
    public static bool LengthAveraged(CpoLossType type) => type is CpoLossType.Ipo or CpoLossType.Simpo;

    public static CpoResult Compute(ReadOnlySpan<double> chosenSum, ReadOnlySpan<int> chosenTokens, ReadOnlySpan<double> rejectedSum, ReadOnlySpan<int> rejectedTokens,
        double beta, CpoLossType type = CpoLossType.Sigmoid, double labelSmoothing = 0, double simpoGamma = 0.5, double cpoAlpha = 1)
    {
        int n = chosenSum.Length;
        if (chosenTokens.Length != n || rejectedSum.Length != n || rejectedTokens.Length != n || n == 0) throw new ArgumentException("CPO needs equal, non-empty vectors");
        bool avg = LengthAveraged(type);
        double b = beta, ls = labelSmoothing, loss = 0, totalChosen = 0, sumChosen = 0;
        var pc = new double[n];
        var pr = new double[n];
        var dc = new double[n];
        var dr = new double[n];
        for (int i = 0; i < n; i++)
        {
            if (chosenTokens[i] <= 0 || rejectedTokens[i] <= 0) throw new ArgumentException("CPO needs at least one completion token per sequence");
            totalChosen += chosenTokens[i];
            sumChosen += chosenSum[i];
            pc[i] = avg ? chosenSum[i] / chosenTokens[i] : chosenSum[i];
            pr[i] = avg ? rejectedSum[i] / rejectedTokens[i] : rejectedSum[i];
            double z = pc[i] - pr[i] - (type == CpoLossType.Simpo ? simpoGamma / b : 0), x = b * z;
            double l, dz; // the loss of pair i and its derivative in z
            switch (type)
            {
                case CpoLossType.Hinge:
                    l = Math.Max(0, 1 - x);
                    dz = 1 - x > 0 ? -b : 0;
                    break;
                case CpoLossType.Ipo:
                    l = (z - 1 / (2 * b)) * (z - 1 / (2 * b));
                    dz = 2 * (z - 1 / (2 * b));
                    break;
                default: // sigmoid, simpo
                    l = -(1 - ls) * DpoLoss.LogSigmoid(x) - ls * DpoLoss.LogSigmoid(-x);
                    dz = -(1 - ls) * b * DpoLoss.Sigmoid(-x) + ls * b * DpoLoss.Sigmoid(x);
                    break;
            }
            loss += l / n;
            dc[i] = dz / n / (avg ? chosenTokens[i] : 1);
            dr[i] = -dz / n / (avg ? rejectedTokens[i] : 1);
        }
        double nll = cpoAlpha == 0 ? 0 : -sumChosen / totalChosen;
        if (cpoAlpha != 0)
            for (int i = 0; i < n; i++) dc[i] -= cpoAlpha / totalChosen;
        return new CpoResult(loss + cpoAlpha * nll, nll, pc, pr, dc, dr, pc.Select(v => b * v).ToArray(), pr.Select(v => b * v).ToArray());
    }
}
