// TRL's GRPO loss types (grpo, bnpo, dr_grpo, dapo), importance sampling levels (token; sequence = GSPO),
// clip-higher (epsilon_high), two-sided clipping (delta) and the KL term, against the objective written out
// here as TRL's tensor code reads ([B, T] rows with a completion mask, a fully masked row included, as
// mask_truncated_completions leaves one): the loss equals it and each token's weight is minus its gradient
// (central differences); then the layout's reward scaling (group, batch, none) and its masking of truncated
// completions; and the CLI refusing bad GRPO settings in one line.
using Temper.Core;
using Temper.Training.Losses;
using Temper.Training.Rl;

namespace Temper.Tests;

public class GrpoLossTests
{
    private const int B = 4, T = 6;

    // TRL's _compute_loss for the four loss types, in doubles over [B, T].
    private static double TrlLoss(double[] lp, double[] old, double[] rf, double[] adv, bool[] mask, GrpoObjective o)
    {
        double low = 1 - o.Epsilon, high = 1 + (o.EpsilonHigh ?? o.Epsilon);
        var ptl = new double[B * T];
        for (int i = 0; i < B; i++)
        {
            int len = Enumerable.Range(0, T).Count(t => mask[i * T + t]);
            double seqLw = Enumerable.Range(0, T).Sum(t => mask[i * T + t] ? lp[i * T + t] - old[i * T + t] : 0) / Math.Max(1, len);
            for (int t = 0; t < T; t++)
            {
                int n = i * T + t;
                double coef1 = Math.Exp(o.SequenceLevel ? seqLw : lp[n] - old[n]);
                double coef2 = Math.Min(Math.Max(coef1, low), high);
                if (o.Delta is double d) coef1 = Math.Min(coef1, d);
                ptl[n] = -Math.Min(coef1 * adv[i], coef2 * adv[i]);
                if (o.Beta != 0) ptl[n] += o.Beta * (Math.Exp(rf[n] - lp[n]) - (rf[n] - lp[n]) - 1);
            }
        }
        double Masked(int i) => Enumerable.Range(0, T).Sum(t => mask[i * T + t] ? ptl[i * T + t] : 0);
        int Count(int i) => Enumerable.Range(0, T).Count(t => mask[i * T + t]);
        return o.LossType switch
        {
            "grpo" => Enumerable.Range(0, B).Average(i => Masked(i) / Math.Max(1, Count(i))),
            "dr_grpo" => Enumerable.Range(0, B).Sum(Masked) / (B * o.MaxCompletionLength),
            _ => Enumerable.Range(0, B).Sum(Masked) / Math.Max(1, Enumerable.Range(0, B).Sum(Count)),
        };
    }

    public static TheoryData<string, bool, double?, double?, double> Settings()
    {
        var d = new TheoryData<string, bool, double?, double?, double>();
        foreach (var type in GrpoObjective.LossTypes)
            foreach (bool seq in new[] { false, true })
            {
                d.Add(type, seq, null, null, 0);
                d.Add(type, seq, 0.28, 1.45, 0.04);
            }
        return d;
    }

    [Theory]
    [MemberData(nameof(Settings))]
    public void Loss_and_weights_are_trls_objective_and_minus_its_gradient(string type, bool sequence, double? epsHigh, double? delta, double beta)
    {
        var o = new GrpoObjective { LossType = type, SequenceLevel = sequence, EpsilonHigh = epsHigh, Delta = delta, Beta = beta, MaxCompletionLength = 8 };
        o.Validate();
        var rng = new Random(11);
        // Row lengths 6, 3, 0 (a masked, truncated completion) and 5; log-ratios spread over +-0.4 about a row shift, so clip bounds are crossed.
        int[] lengths = [6, 3, 0, 5];
        var mask = new bool[B * T];
        for (int i = 0; i < B; i++) for (int t = 0; t < lengths[i]; t++) mask[i * T + t] = true;
        var lp = Enumerable.Range(0, B * T).Select(_ => -0.2 - 3 * rng.NextDouble()).ToArray();
        double[] rowShift = [0.45, -0.4, 0, 0.05]; // rows 0 and 1 clipped at the sequence level too (A > 0 above, A < 0 below)
        var old = lp.Select((x, n) => x - (rowShift[n / T] + rng.NextDouble() * 0.8 - 0.4)).ToArray();
        var rf = lp.Select(x => x + (rng.NextDouble() * 0.8 - 0.4)).ToArray();
        double[] adv = [(float)1.3, (float)-0.9, (float)0.7, (float)-1.6]; // exactly the float32 values the loss reads
        var advSlots = Enumerable.Range(0, B * T).Select(n => mask[n] ? (float)adv[n / T] : 0f).ToArray();
        float[] F(double[] x) => x.Select(v => (float)v).ToArray();
        double[] D(float[] x) => x.Select(v => (double)v).ToArray();
        var lpf = F(lp);
        var w = new float[B * T];
        var got = GrpoLoss.Compute(o, lpf, F(old), F(rf), advSlots, mask, T, w);

        // The reference reads the same float32 inputs the loss reads.
        double[] lpd = D(lpf), oldd = D(F(old)), rfd = D(F(rf));
        Assert.Equal(TrlLoss(lpd, oldd, rfd, adv, mask, o), got.Loss, 1e-9);
        for (int n = 0; n < B * T; n++)
        {
            if (!mask[n])
            {
                Assert.Equal(0, w[n]);
                continue;
            }
            const double h = 1e-6;
            var up = (double[])lpd.Clone();
            up[n] += h;
            var dn = (double[])lpd.Clone();
            dn[n] -= h;
            double fd = (TrlLoss(up, oldd, rfd, adv, mask, o) - TrlLoss(dn, oldd, rfd, adv, mask, o)) / (2 * h);
            Assert.True(Math.Abs(fd + w[n]) < 1e-6, $"slot {n}: d loss / d logp {fd:G6}, weight {w[n]:G6}");
        }
        Assert.True(got.Clipped > 0, "no slot was clipped: the data do not exercise the clip");
    }

    [Fact]
    public void Advantages_scale_by_the_group_the_batch_or_nothing_and_truncated_completions_are_masked()
    {
        int[][] prompts = [[1, 5], [1, 6]];
        int[][] completions = [[7, 2], [8, 9, 2], [10], [11, 12, 2]];
        double[] rewards = [1, 0, 3, 0.5];
        double Std(IEnumerable<double> x) { var a = x.ToArray(); double m = a.Average(); return Math.Sqrt(a.Sum(v => (v - m) * (v - m)) / (a.Length - 1)); }
        double[] groupMean = [0.5, 0.5, 1.75, 1.75];
        double[] groupSd = [Std([1, 0]), Std([1, 0]), Std([3, 0.5]), Std([3, 0.5])];
        foreach (var scale in new[] { "group", "batch", "none" })
        {
            var layout = GrpoTrainer.Layout(prompts, completions, rewards, 2, pad: 0, scale, masked: [false, false, true, false]);
            int t = layout.Batch.Length;
            for (int row = 0; row < 4; row++)
            {
                var slots = Enumerable.Range(row * t, t).Where(n => layout.Counted[n]).ToArray();
                if (row == 2)
                {
                    Assert.Empty(slots); // the truncated completion takes no part
                    continue;
                }
                Assert.Equal(completions[row].Length, slots.Length);
                double want = (rewards[row] - groupMean[row]) / (scale switch { "group" => groupSd[row] + 1e-4, "batch" => Std(rewards) + 1e-4, _ => 1 });
                Assert.All(slots, n => Assert.Equal(want, layout.Advantage[n], 1e-5));
            }
            Assert.Equal(2 + 3 + 3, layout.Tokens);
        }
    }

    [Theory]
    [InlineData("--loss-type", "ppo", "--loss-type 'ppo' is not one of grpo, bnpo, dr_grpo, dapo")]
    [InlineData("--importance-sampling-level", "batch", "--importance-sampling-level 'batch' is not one of token, sequence")]
    [InlineData("--scale-rewards", "global", "--scale-rewards 'global' is not one of group, batch, none")]
    [InlineData("--delta", "1.1", "--delta must be > 1 + epsilon-high (got 1.1), as TRL requires")]
    [InlineData("--epsilon-high", "-0.1", "--epsilon-high must be > 0 (got -0.1)")]
    public void Bad_settings_are_refused_by_name(string flag, string value, string message)
    {
        var g = new GrpoOptions
        {
            LossType = flag == "--loss-type" ? value : "dapo",
            ImportanceSamplingLevel = flag == "--importance-sampling-level" ? value : "token",
            ScaleRewards = flag == "--scale-rewards" ? value : "group",
            Delta = flag == "--delta" ? double.Parse(value, System.Globalization.CultureInfo.InvariantCulture) : null,
            EpsilonHigh = flag == "--epsilon-high" ? double.Parse(value, System.Globalization.CultureInfo.InvariantCulture) : null,
        };
        Assert.Equal(message, Assert.Throws<TemperException>(g.Validate).Message);
    }
}
