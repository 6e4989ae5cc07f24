// DPO, KTO and ORPO losses against the TRL/torch values in trainer_reference.json (from the
// log-prob vectors stored there), and their analytic gradients against finite differences.
using System.Text.Json.Nodes;
using Temper.Training.Losses;

namespace Temper.Tests;

public class PreferenceLossTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    private static JsonNode Ref(string model) => JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Hf(model), "trainer", "trainer_reference.json")))!;
    private static double[] V(JsonNode n) => n.AsArray().Select(x => x!.GetValue<double>()).ToArray();

    [Theory, MemberData(nameof(Models))]
    public void Dpo_matches_trl(string model)
    {
        var d = Ref(model)["dpo"]!;
        var r = DpoLoss.Compute(V(d["policy_chosen_logps"]!), V(d["policy_rejected_logps"]!), V(d["ref_chosen_logps"]!), V(d["ref_rejected_logps"]!), d["beta"]!.GetValue<double>());
        Assert.Equal(d["loss"]!.GetValue<double>(), r.Loss, 1e-6);
        Assert.Equal(d["reward_accuracy"]!.GetValue<double>(), r.RewardAccuracy, 1e-12);
    }

    [Theory, MemberData(nameof(Models))]
    public void Kto_matches_trl(string model)
    {
        var k = Ref(model)["kto"]!;
        var lines = File.ReadAllLines(Path.Combine(Fixtures.Hf(model), "trainer", "kto.jsonl")).Where(l => l.Length > 0).ToArray();
        var desirable = lines.Select(l => JsonNode.Parse(l)!["label"]!.GetValue<bool>()).ToArray();
        var r = KtoLoss.Compute(V(k["policy_logps"]!), V(k["ref_logps"]!), V(k["mismatched_policy_logps"]!), V(k["mismatched_ref_logps"]!), desirable, k["beta"]!.GetValue<double>());
        Assert.Equal(k["z0"]!.GetValue<double>(), r.Z0, 1e-5);
        Assert.Equal(k["loss"]!.GetValue<double>(), r.Loss, 1e-6);
        var rewards = V(k["rewards"]!);
        for (int i = 0; i < rewards.Length; i++) Assert.Equal(rewards[i], r.Rewards[i], 1e-4);
    }

    [Fact]
    public void Orpo_odds_ratio_and_gradients_are_consistent()
    {
        var o = Ref("llama-tiny")["orpo"]!;
        var lc = V(o["chosen_mean_logps"]!);
        var lr = V(o["rejected_mean_logps"]!);
        int[] nc = [3, 4, 5, 2], nr = [6, 2, 3, 4];
        var sc = lc.Select((l, i) => l * nc[i]).ToArray();
        var sr = lr.Select((l, i) => l * nr[i]).ToArray();
        var r = OrpoLoss.Compute(sc, nc, sr, nr, o["lambda"]!.GetValue<double>());
        var lor = V(o["log_odds_ratio"]!);
        for (int i = 0; i < lor.Length; i++) Assert.Equal(lor[i], r.LogOddsRatio[i], 1e-4);
        for (int i = 0; i < 4; i++)
        {
            double h = 1e-6;
            var up = (double[])sc.Clone(); up[i] += h;
            var dn = (double[])sc.Clone(); dn[i] -= h;
            double fd = (OrpoLoss.Compute(up, nc, sr, nr, 0.1).Loss - OrpoLoss.Compute(dn, nc, sr, nr, 0.1).Loss) / (2 * h);
            Assert.Equal(fd, r.DChosen[i], 1e-6);
            up = (double[])sr.Clone(); up[i] += h;
            dn = (double[])sr.Clone(); dn[i] -= h;
            fd = (OrpoLoss.Compute(sc, nc, up, nr, 0.1).Loss - OrpoLoss.Compute(sc, nc, dn, nr, 0.1).Loss) / (2 * h);
            Assert.Equal(fd, r.DRejected[i], 1e-6);
        }
    }

    [Theory]
    [InlineData(DpoLossType.Sigmoid, 0.0)]
    [InlineData(DpoLossType.Sigmoid, 0.2)]
    [InlineData(DpoLossType.Ipo, 0.0)]
    [InlineData(DpoLossType.Robust, 0.1)]
    public void Dpo_gradients_match_finite_differences(DpoLossType type, double ls)
    {
        double[] pc = [-10, -12.5, -3], pr = [-11, -9, -4.2], rc = [-10.5, -12, -3.3], rr = [-10.8, -9.5, -4];
        var r = DpoLoss.Compute(pc, pr, rc, rr, 0.1, type, ls);
        for (int i = 0; i < 3; i++)
        {
            double h = 1e-5;
            var up = (double[])pc.Clone(); up[i] += h;
            var dn = (double[])pc.Clone(); dn[i] -= h;
            double fd = (DpoLoss.Compute(up, pr, rc, rr, 0.1, type, ls).Loss - DpoLoss.Compute(dn, pr, rc, rr, 0.1, type, ls).Loss) / (2 * h);
            Assert.Equal(fd, r.DChosen[i], 1e-7);
            Assert.Equal(-r.DChosen[i], r.DRejected[i], 1e-12);
        }
    }

    [Fact]
    public void Kto_gradient_matches_finite_differences()
    {
        double[] p = [-10, -12, -5, -7], rf = [-10.2, -11.5, -5.1, -7.3], mp = [-9, -8, -11, -6], mr = [-9.2, -8.4, -11.1, -6.2];
        bool[] lab = [true, false, true, false];
        var r = KtoLoss.Compute(p, rf, mp, mr, lab, 0.1, 1.0, 1.5);
        for (int i = 0; i < 4; i++)
        {
            double h = 1e-5;
            var up = (double[])p.Clone(); up[i] += h;
            var dn = (double[])p.Clone(); dn[i] -= h;
            double fd = (KtoLoss.Compute(up, rf, mp, mr, lab, 0.1, 1.0, 1.5).Loss - KtoLoss.Compute(dn, rf, mp, mr, lab, 0.1, 1.0, 1.5).Loss) / (2 * h);
            Assert.Equal(fd, r.DPolicy[i], 1e-8);
        }
    }
}
