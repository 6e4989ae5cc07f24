// TRL's DPO loss types beyond sigmoid/ipo/robust (hinge, exo_pair, nca_pair, bco_pair, sppo_hard, apo_zero,
// apo_down, discopop, sigmoid_norm): each loss against the per-pair formula written out here as TRL's torch
// code reads, and d loss / d log p of chosen and rejected against central differences; the names TRL has
// and Temper does not run are refused by name.
using Temper.Core;
using Temper.Training.Losses;

namespace Temper.Tests;

public class DpoLossTypesTests
{
    private static double S(double x) => 1 / (1 + Math.Exp(-x));
    private static double LogS(double x) => -Math.Log(1 + Math.Exp(-x));

    // TRL's per_sequence_loss for one pair (chosen/rejected log-ratios c and r, beta b, label smoothing e).
    private static double Trl(string type, double c, double r, double b, double e)
    {
        double d = c - r;
        switch (type)
        {
            case "hinge": return Math.Max(0, 1 - b * d);
            case "exo_pair":
                return S(b * d) * (LogS(b * d) - Math.Log(1 - e)) + S(-b * d) * (LogS(-b * d) - Math.Log(e));
            case "nca_pair": return -LogS(b * c) - 0.5 * LogS(-b * c) - 0.5 * LogS(-b * r);
            case "bco_pair": return -LogS(b * c) - LogS(-b * r);
            case "sppo_hard": return Math.Pow(c - 0.5 / b, 2) + Math.Pow(r + 0.5 / b, 2);
            case "apo_zero": return 1 - S(b * c) + S(b * r);
            case "apo_down": return S(b * c) + 1 - S(b * d);
            case "discopop":
            {
                double x = d * b, m = S(x / 0.05);
                return -LogS(x) * (1 - m) + Math.Exp(-x) * m;
            }
            default: return -LogS(b * d); // sigmoid_norm, on averaged log-probs
        }
    }

    [Theory]
    [InlineData("hinge", 0.0)]
    [InlineData("exo_pair", 1e-3)]
    [InlineData("nca_pair", 0.0)]
    [InlineData("bco_pair", 0.0)]
    [InlineData("sppo_hard", 0.0)]
    [InlineData("apo_zero", 0.0)]
    [InlineData("apo_down", 0.0)]
    [InlineData("discopop", 0.0)]
    [InlineData("sigmoid_norm", 0.0)]
    public void Each_loss_is_trls_and_its_gradients_match_central_differences(string name, double ls)
    {
        var type = DpoLoss.Parse(name);
        Assert.Equal(name, DpoLoss.Name(type));
        double b = name == "hinge" ? 2.5 : 0.5; // hinge: some pairs past the margin (zero gradient), some inside it
        double[] pc = [-10, -12.5, -3, -6], pr = [-11, -9, -4.2, -6.1], rc = [-10.5, -12, -3.3, -7.2], rr = [-10.8, -9.5, -4, -5.5];
        var got = DpoLoss.Compute(pc, pr, rc, rr, b, type, ls);
        double want = Enumerable.Range(0, 4).Average(i => Trl(name, pc[i] - rc[i], pr[i] - rr[i], b, ls));
        Assert.Equal(want, got.Loss, 1e-12);
        for (int i = 0; i < 4; i++)
        {
            const double h = 1e-6;
            foreach (bool chosen in new[] { true, false })
            {
                var up = (double[])(chosen ? pc : pr).Clone();
                var dn = (double[])up.Clone();
                up[i] += h;
                dn[i] -= h;
                double fd = chosen
                    ? (DpoLoss.Compute(up, pr, rc, rr, b, type, ls).Loss - DpoLoss.Compute(dn, pr, rc, rr, b, type, ls).Loss) / (2 * h)
                    : (DpoLoss.Compute(pc, up, rc, rr, b, type, ls).Loss - DpoLoss.Compute(pc, dn, rc, rr, b, type, ls).Loss) / (2 * h);
                Assert.Equal(fd, chosen ? got.DChosen[i] : got.DRejected[i], 1e-7);
            }
        }
        if (name == "hinge") Assert.Contains(got.DChosen, g => g == 0);
    }

    [Theory]
    [InlineData("aot", "--loss-type aot (sorted across the batch) is not supported")]
    [InlineData("sft", "--loss-type sft (an NLL term on the chosen completions) is not supported; train SFT first")]
    [InlineData("kto_pair", "--loss-type must be one of sigmoid, ipo, robust, hinge, exo_pair, nca_pair, bco_pair, sppo_hard, apo_zero, apo_down, discopop, sigmoid_norm, not 'kto_pair'")]
    public void Unsupported_names_are_refused(string name, string message) =>
        Assert.Equal(message, Assert.Throws<TemperException>(() => DpoLoss.Parse(name)).Message);

    [Fact]
    public void Exo_pair_needs_label_smoothing() =>
        Assert.Equal("exo_pair needs --label-smoothing in (0, 1) (the EXO paper uses 1e-3)",
            Assert.Throws<TemperException>(() => DpoLoss.Compute([-1.0], [-2.0], [-1.5], [-1.5], 0.1, DpoLossType.ExoPair)).Message);
}
