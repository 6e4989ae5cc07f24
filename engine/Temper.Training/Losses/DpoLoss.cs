// Direct Preference Optimization losses as TRL defines them, on per-sequence completion log-probs
// (policy/reference, chosen/rejected): cl = pc - rc, rl = pr - rr, d = cl - rl, beta b, label smoothing ls,
// s = sigmoid, ls(x) = log s(x):
//   sigmoid (conservative with ls > 0): -(1-ls) ls(b d) - ls ls(-b d)
//   ipo:          (d - 1/(2 b))^2       (on length-averaged log-probs; the caller averages, as TRL feeds IPO)
//   sigmoid_norm: -ls(b d)              (on length-averaged log-probs, likewise)
//   robust:       (-(1-ls) ls(b d) + ls ls(-b d)) / (1 - 2 ls)
//   hinge:        relu(1 - b d)
//   exo_pair:     q (log q - log(1-ls)) + (1-q) (log(1-q) - log ls),  q = s(b d)  (EXO; needs 0 < ls < 1)
//   nca_pair:     -ls(b cl) - ls(-b cl)/2 - ls(-b rl)/2
//   bco_pair:     -ls(b cl) - ls(-b rl)
//   sppo_hard:    (cl - 1/(2 b))^2 + (rl + 1/(2 b))^2
//   apo_zero:     1 - s(b cl) + s(b rl)
//   apo_down:     s(b cl) + 1 - s(b d)
//   discopop:     -ls(x) (1 - m) + exp(-x) m,  x = b d, m = s(x / tau), tau 0.05 (TRL's discopop_tau)
// Returns the mean loss over pairs and dLoss/dpc, dLoss/dpr per pair (the reference is constant).
// TRL's aot and aot_unpaired (sorted across the batch) and sft (an NLL term) are refused by name.
using Temper.Core;

namespace Temper.Training.Losses;

public enum DpoLossType { Sigmoid, Ipo, Robust, Hinge, ExoPair, NcaPair, BcoPair, SppoHard, ApoZero, ApoDown, Discopop, SigmoidNorm }

public sealed record DpoResult(double Loss, double[] DChosen, double[] DRejected, double[] RewardsChosen, double[] RewardsRejected)
{
    public double RewardAccuracy => RewardsChosen.Zip(RewardsRejected).Average(p => p.First > p.Second ? 1.0 : 0.0);
    public double RewardMargin => RewardsChosen.Zip(RewardsRejected).Average(p => p.First - p.Second);
}

public static class DpoLoss
{
    private static readonly (string Name, DpoLossType Type)[] Names =
    [
        ("sigmoid", DpoLossType.Sigmoid), ("ipo", DpoLossType.Ipo), ("robust", DpoLossType.Robust), ("hinge", DpoLossType.Hinge),
        ("exo_pair", DpoLossType.ExoPair), ("nca_pair", DpoLossType.NcaPair), ("bco_pair", DpoLossType.BcoPair), ("sppo_hard", DpoLossType.SppoHard),
        ("apo_zero", DpoLossType.ApoZero), ("apo_down", DpoLossType.ApoDown), ("discopop", DpoLossType.Discopop), ("sigmoid_norm", DpoLossType.SigmoidNorm),
    ];

    public static DpoLossType Parse(string name) => name switch
    {
        "aot" or "aot_unpaired" => throw new TemperException($"--loss-type {name} (sorted across the batch) is not supported"),
        "sft" => throw new TemperException("--loss-type sft (an NLL term on the chosen completions) is not supported; train SFT first"),
        _ => Names.FirstOrDefault(x => x.Name == name) is { Name: not null } hit ? hit.Type
            : throw new TemperException($"--loss-type must be one of {string.Join(", ", Names.Select(x => x.Name))}, not '{name}'"),
    };

    /// <summary>TRL's name of the loss type.</summary>
    public static string Name(DpoLossType type) => Names.First(x => x.Type == type).Name;

    /// <summary>Whether TRL feeds the loss length-averaged log-probs (ipo, sigmoid_norm).</summary>
    public static bool LengthAveraged(DpoLossType type) => type is DpoLossType.Ipo or DpoLossType.SigmoidNorm;

    private const double DiscopopTau = 0.05;

    public static DpoResult Compute(ReadOnlySpan<double> pc, ReadOnlySpan<double> pr, ReadOnlySpan<double> rc, ReadOnlySpan<double> rr, double beta, DpoLossType type = DpoLossType.Sigmoid, double labelSmoothing = 0)
    {
        int n = pc.Length;
        if (pr.Length != n || rc.Length != n || rr.Length != n || n == 0) throw new ArgumentException("DPO needs four equal, non-empty log-prob vectors");
        if (type == DpoLossType.Robust && labelSmoothing >= 0.5) throw new TemperException("robust DPO needs --label-smoothing < 0.5");
        if (type == DpoLossType.ExoPair && !(labelSmoothing > 0 && labelSmoothing < 1)) throw new TemperException("exo_pair needs --label-smoothing in (0, 1) (the EXO paper uses 1e-3)");
        double ls = labelSmoothing, loss = 0, b = beta;
        var dc = new double[n];
        var dr = new double[n];
        var rwc = new double[n];
        var rwr = new double[n];
        for (int i = 0; i < n; i++)
        {
            double cl = pc[i] - rc[i], rl = pr[i] - rr[i], d = cl - rl, x = b * d;
            double l, dcl, drl; // the loss and its partials in cl and rl
            switch (type)
            {
                case DpoLossType.Sigmoid:
                    l = -(1 - ls) * LogSigmoid(x) - ls * LogSigmoid(-x);
                    (dcl, drl) = Pair(-(1 - ls) * b * Sigmoid(-x) + ls * b * Sigmoid(x));
                    break;
                case DpoLossType.SigmoidNorm:
                    l = -LogSigmoid(x);
                    (dcl, drl) = Pair(-b * Sigmoid(-x));
                    break;
                case DpoLossType.Ipo:
                    l = (d - 1 / (2 * b)) * (d - 1 / (2 * b));
                    (dcl, drl) = Pair(2 * (d - 1 / (2 * b)));
                    break;
                case DpoLossType.Robust:
                    l = (-(1 - ls) * LogSigmoid(x) + ls * LogSigmoid(-x)) / (1 - 2 * ls);
                    (dcl, drl) = Pair((-(1 - ls) * b * Sigmoid(-x) - ls * b * Sigmoid(x)) / (1 - 2 * ls));
                    break;
                case DpoLossType.Hinge:
                    l = Math.Max(0, 1 - x);
                    (dcl, drl) = Pair(1 - x > 0 ? -b : 0);
                    break;
                case DpoLossType.ExoPair:
                {
                    double q = Sigmoid(x), logPw = Math.Log(1 - ls), logPl = Math.Log(ls);
                    l = q * (LogSigmoid(x) - logPw) + (1 - q) * (LogSigmoid(-x) - logPl);
                    (dcl, drl) = Pair(b * q * (1 - q) * (LogSigmoid(x) - logPw - LogSigmoid(-x) + logPl));
                    break;
                }
                case DpoLossType.NcaPair:
                    l = -LogSigmoid(b * cl) - 0.5 * LogSigmoid(-b * cl) - 0.5 * LogSigmoid(-b * rl);
                    dcl = b * (-Sigmoid(-b * cl) + 0.5 * Sigmoid(b * cl));
                    drl = 0.5 * b * Sigmoid(b * rl);
                    break;
                case DpoLossType.BcoPair:
                    l = -LogSigmoid(b * cl) - LogSigmoid(-b * rl);
                    dcl = -b * Sigmoid(-b * cl);
                    drl = b * Sigmoid(b * rl);
                    break;
                case DpoLossType.SppoHard:
                    l = (cl - 0.5 / b) * (cl - 0.5 / b) + (rl + 0.5 / b) * (rl + 0.5 / b);
                    dcl = 2 * (cl - 0.5 / b);
                    drl = 2 * (rl + 0.5 / b);
                    break;
                case DpoLossType.ApoZero:
                    l = 1 - Sigmoid(b * cl) + Sigmoid(b * rl);
                    dcl = -b * SigmoidSlope(b * cl);
                    drl = b * SigmoidSlope(b * rl);
                    break;
                case DpoLossType.ApoDown:
                    l = Sigmoid(b * cl) + 1 - Sigmoid(x);
                    dcl = b * SigmoidSlope(b * cl) - b * SigmoidSlope(x);
                    drl = b * SigmoidSlope(x);
                    break;
                default: // discopop
                {
                    double m = Sigmoid(x / DiscopopTau), dm = m * (1 - m) / DiscopopTau, e = Math.Exp(-x);
                    l = -LogSigmoid(x) * (1 - m) + e * m;
                    (dcl, drl) = Pair(b * (-(1 - m) * Sigmoid(-x) - m * e + dm * (LogSigmoid(x) + e)));
                    break;
                }
            }
            loss += l / n;
            dc[i] = dcl / n;
            dr[i] = drl / n;
            rwc[i] = b * cl;
            rwr[i] = b * rl;
        }
        return new DpoResult(loss, dc, dr, rwc, rwr);
    }

    // A loss of d = cl - rl alone: its partials in cl and rl from dl/dd.
    private static (double, double) Pair(double dd) => (dd, -dd);

    private static double SigmoidSlope(double x) => Sigmoid(x) * (1 - Sigmoid(x));

    internal static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));
    internal static double LogSigmoid(double x) => x >= 0 ? -Math.Log(1 + Math.Exp(-x)) : x - Math.Log(1 + Math.Exp(x));
}
