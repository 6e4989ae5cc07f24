// TRL's CPO (sigmoid, hinge, ipo, simpo; cpo_alpha's NLL; label smoothing) and DPO's rpo_alpha. The expected
// values come from TRL's formulas written out below in float64 (cpo_loss, concatenated_forward's
// average_log_prob and cross_entropy, DPO's rpo term) on per-sequence log-probs the test computes itself
// (summed completion log-probs of the fixture's dpo.jsonl under the fixture adapter), and the expected gradient
// from central differences of those formulas in each sequence's log-prob, pushed through one backward pass.
// The trainer's step-0 loss and LoRA gradient norm must match them.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Data;
using Temper.Training.Losses;
using Temper.Training.Preference;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class CpoTests
{
    private static double LogS(double x) => x >= 0 ? -Math.Log(1 + Math.Exp(-x)) : x - Math.Log(1 + Math.Exp(x));

    // TRL's CPO loss of a batch, from summed completion log-probs S and completion token counts N.
    private static double TrlCpo(string type, double[] sc, int[] nc, double[] sr, int[] nr, double beta, double ls, double gamma, double alpha)
    {
        bool avg = type is "ipo" or "simpo"; // average_log_prob=self.loss_type in ["ipo", "simpo"]
        double losses = 0;
        for (int i = 0; i < sc.Length; i++)
        {
            double logits = (avg ? sc[i] / nc[i] : sc[i]) - (avg ? sr[i] / nr[i] : sr[i]);
            if (type == "simpo") logits -= gamma / beta;
            losses += type switch
            {
                "hinge" => Math.Max(0, 1 - beta * logits),
                "ipo" => Math.Pow(logits - 1 / (2 * beta), 2),
                _ => -LogS(beta * logits) * (1 - ls) - LogS(-beta * logits) * ls,
            };
        }
        double nll = alpha == 0 ? 0 : -sc.Sum() / nc.Sum(); // nn.CrossEntropyLoss() over the chosen rows' completion labels
        return losses / sc.Length + alpha * nll;
    }

    // TRL's sigmoid DPO plus rpo_alpha times the chosen completions' NLL.
    private static double TrlDpoRpo(double[] pc, double[] pr, double[] rc, double[] rr, int[] nc, double beta, double? rpo)
    {
        double losses = Enumerable.Range(0, pc.Length).Average(i => -LogS(beta * ((pc[i] - rc[i]) - (pr[i] - rr[i]))));
        return losses + (rpo ?? 0) * (-pc.Sum() / nc.Sum());
    }

    // d f / d x_i by central differences, each entry in turn.
    private static double[] Derivative(double[] x, Func<double> f, double h = 1e-5)
    {
        var d = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            double keep = x[i];
            x[i] = keep + h; double up = f();
            x[i] = keep - h; double down = f();
            x[i] = keep;
            d[i] = (up - down) / (2 * h);
        }
        return d;
    }

    private static readonly string Model = Fixtures.Hf("llama-tiny");
    private static string Data => Path.Combine(Model, "trainer", "dpo.jsonl");

    /// <summary>The fixture's pairs under base + fixture adapter: rows [chosen...; rejected...], their summed log-probs and counts.</summary>
    private sealed class Pairs : IDisposable
    {
        public readonly LanguageModel Lm = LanguageModel.Load(Model, new CpuBackend(), Path.Combine(Model, "adapter"));
        public readonly List<SftExample> Rows;
        public readonly double[] Sc, Sr;
        public readonly int[] Nc, Nr;
        public readonly DecoderBackprop Bp;

        public Pairs()
        {
            var data = PreferenceDataset.Load(Data, Lm.RequireTokenizer(), Lm.Template, unpaired: false);
            Rows = data.Pairs.Select(p => p.Chosen).Concat(data.Pairs.Select(p => p.Rejected)).ToList();
            Bp = new DecoderBackprop(Lm.Decoder);
            int n = data.Pairs.Count;
            var (sums, counts) = SequenceLogps.Compute(Bp, Rows, 0, Rows.Count);
            (Sc, Sr, Nc, Nr) = (sums[..n], sums[n..], counts[..n], counts[n..]);
        }

        /// <summary>The LoRA gradient norm of a loss whose derivative in each row's summed log-prob is dLdS.</summary>
        public double GradNorm(double[] dLdS)
        {
            using var ps = TrainableParameters.Lora(Lm.Weights, Lm.Decoder.Backend);
            var b = SftBatcher.Pad(Rows, 0);
            Bp.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, ps.GradOf, SequenceLogps.RowScales(dLdS.Select(d => -d).ToArray(), b.Length));
            return Math.Sqrt(ps.All.Sum(p => p.Grad.Floats.ToArray().Sum(g => (double)g * g)));
        }

        public void Dispose() => Lm.Dispose();
    }

    private static SftOptions Options(string dir, int steps = 1) => new()
    {
        ModelDir = Model, DataPath = Data, OutDir = dir, InitAdapter = Path.Combine(Model, "adapter"), BatchSize = 64, MaxSteps = steps,
    };

    private static JsonNode[] Lines(string dir) => File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToArray();

    private static void AssertClose(double want, double got, double rel, string what) =>
        Assert.True(Math.Abs(got - want) <= rel * Math.Abs(want) + 1e-9, $"{what}: {got} vs {want}");

    [Theory]
    [InlineData("sigmoid", 0.1, 0.0, 0.5, 1.0)]
    [InlineData("sigmoid", 0.5, 0.2, 0.5, 0.0)]
    [InlineData("hinge", 2.5, 0.0, 0.5, 1.0)]
    [InlineData("ipo", 0.1, 0.0, 0.5, 1.0)]
    [InlineData("simpo", 2.0, 0.0, 0.5, 0.0)]
    [InlineData("simpo", 2.0, 0.1, 1.4, 0.3)]
    public void Loss_is_trls_and_its_gradients_match_central_differences(string type, double beta, double ls, double gamma, double alpha)
    {
        double[] sc = [-10, -12.5, -3, -6], sr = [-11, -9, -4.2, -6.1];
        int[] nc = [5, 6, 2, 3], nr = [4, 7, 3, 2];
        var got = CpoLoss.Compute(sc, nc, sr, nr, beta, CpoLoss.Parse(type), ls, gamma, alpha);
        Assert.Equal(TrlCpo(type, sc, nc, sr, nr, beta, ls, gamma, alpha), got.Loss, 1e-12);
        Assert.Equal(alpha == 0 ? 0 : -sc.Sum() / nc.Sum(), got.Nll, 1e-12);
        var dc = Derivative(sc, () => TrlCpo(type, sc, nc, sr, nr, beta, ls, gamma, alpha));
        var dr = Derivative(sr, () => TrlCpo(type, sc, nc, sr, nr, beta, ls, gamma, alpha));
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(dc[i], got.DChosen[i], 1e-7);
            Assert.Equal(dr[i], got.DRejected[i], 1e-7);
        }
        bool avg = type is "ipo" or "simpo"; // rewards = beta * (averaged) log-probs, without simpo's gamma
        for (int i = 0; i < 4; i++) Assert.Equal(beta * (avg ? sc[i] / nc[i] : sc[i]), got.RewardsChosen[i], 1e-12);
        if (type == "hinge") Assert.Contains(got.DRejected, g => g == 0);
    }

    [Theory]
    [InlineData("sigmoid", 0.1, 0.0, null, 1.0)]
    [InlineData("sigmoid", 0.1, 0.1, null, 0.0)]
    [InlineData("hinge", 0.1, 0.0, null, 1.0)]
    [InlineData("ipo", 0.1, 0.0, null, 1.0)]
    [InlineData("simpo", 2.0, 0.0, 0.8, 0.0)]
    public void Step0_loss_and_gradient_are_trls_formula(string type, double beta, double ls, double? gamma, double alpha)
    {
        using var pairs = new Pairs();
        string dir = Directory.CreateTempSubdirectory("temper-cpo-").FullName;
        var p = new PreferenceOptions { Beta = beta, CpoLossType = CpoLoss.Parse(type), LabelSmoothing = ls, SimpoGamma = gamma, CpoAlpha = alpha };
        new DpoTrainer(Options(dir), p, new CpuBackend(), PreferenceMethod.Cpo).Run();
        var line = Lines(dir)[0];
        double[] sc = pairs.Sc, sr = pairs.Sr;
        double g = gamma ?? 0.5;
        double Loss() => TrlCpo(type, sc, pairs.Nc, sr, pairs.Nr, beta, ls, g, alpha);
        AssertClose(Loss(), line["loss"]!.GetValue<double>(), 1e-4, "loss");
        AssertClose(alpha == 0 ? 0 : -sc.Sum() / pairs.Nc.Sum(), line["nll_loss"]!.GetValue<double>(), 1e-4, "nll_loss");
        bool avg = type is "ipo" or "simpo";
        var rc = sc.Select((s, i) => beta * (avg ? s / pairs.Nc[i] : s)).ToArray();
        var rr = sr.Select((s, i) => beta * (avg ? s / pairs.Nr[i] : s)).ToArray();
        AssertClose(rc.Average(), line["rewards/chosen"]!.GetValue<double>(), 1e-4, "rewards/chosen");
        AssertClose(rr.Average(), line["rewards/rejected"]!.GetValue<double>(), 1e-4, "rewards/rejected");
        AssertClose(rc.Zip(rr).Average(x => x.First - x.Second), line["rewards/margins"]!.GetValue<double>(), 1e-3, "rewards/margins");
        Assert.Equal(rc.Zip(rr).Average(x => x.First > x.Second ? 1.0 : 0.0), line["rewards/accuracies"]!.GetValue<double>(), 1e-12);
        double norm = pairs.GradNorm(Derivative(sc, Loss).Concat(Derivative(sr, Loss)).ToArray());
        Assert.True(norm > 0);
        AssertClose(norm, line["grad_norm"]!.GetValue<double>(), 1e-3, "grad_norm");
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Rpo_alpha_0_is_plain_dpo_and_alpha_adds_alpha_times_the_chosen_nll()
    {
        using var pairs = new Pairs();
        using var reference = ReferenceModel.AdapterOff(pairs.Lm.Weights);
        var refLogps = reference.Logps(pairs.Bp, pairs.Rows, 0);
        int n = pairs.Sc.Length;
        double[] rc = refLogps[..n], rr = refLogps[n..];
        JsonNode Step0(double? rpo)
        {
            string dir = Directory.CreateTempSubdirectory("temper-rpo-").FullName;
            new DpoTrainer(Options(dir), new PreferenceOptions { Beta = 0.1, RpoAlpha = rpo }, new CpuBackend()).Run();
            var line = Lines(dir)[0];
            Directory.Delete(dir, true);
            return line;
        }
        var plain = Step0(null);
        var zero = Step0(0);
        const double alpha = 0.7;
        var rpoLine = Step0(alpha);
        Assert.Equal(plain["loss"]!.GetValue<double>(), zero["loss"]!.GetValue<double>());
        Assert.Equal(plain["grad_norm"]!.GetValue<double>(), zero["grad_norm"]!.GetValue<double>());
        Assert.Null(plain["nll_loss"]);
        double nll = -pairs.Sc.Sum() / pairs.Nc.Sum();
        AssertClose(nll, rpoLine["nll_loss"]!.GetValue<double>(), 1e-4, "nll_loss");
        AssertClose(alpha * nll, rpoLine["loss"]!.GetValue<double>() - plain["loss"]!.GetValue<double>(), 1e-4, "rpo term");
        double[] sc = pairs.Sc, sr = pairs.Sr;
        double Loss() => TrlDpoRpo(sc, sr, rc, rr, pairs.Nc, 0.1, alpha);
        AssertClose(Loss(), rpoLine["loss"]!.GetValue<double>(), 1e-4, "loss");
        double norm = pairs.GradNorm(Derivative(sc, Loss).Concat(Derivative(sr, Loss)).ToArray());
        AssertClose(norm, rpoLine["grad_norm"]!.GetValue<double>(), 1e-3, "grad_norm");
    }

    [Fact]
    public void Cpo_training_raises_the_reward_margin_and_saves_a_peft_adapter()
    {
        string dir = Directory.CreateTempSubdirectory("temper-cpo-learn-").FullName;
        var o = Options(dir, steps: 15) with { LearningRate = 5e-3f, BatchSize = 4 };
        new DpoTrainer(o, new PreferenceOptions { Beta = 0.1 }, new CpuBackend(), PreferenceMethod.Cpo).Run();
        var lines = Lines(dir);
        Assert.True(lines[^1]["rewards/margins"]!.GetValue<double>() > lines[0]["rewards/margins"]!.GetValue<double>() + 0.05,
            $"rewards/margins {lines[0]["rewards/margins"]} -> {lines[^1]["rewards/margins"]}");
        Assert.True(lines[^1]["loss"]!.GetValue<double>() < lines[0]["loss"]!.GetValue<double>());
        Assert.True(File.Exists(Path.Combine(dir, "adapter_model.safetensors")));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData("kto_pair", "--loss-type must be one of sigmoid, hinge, ipo, simpo for cpo, not 'kto_pair'")]
    [InlineData("alphapo", "--loss-type alphapo (AlphaPO's reward shaping) is not supported by cpo; use simpo")]
    public void Loss_types_cpo_does_not_take_are_refused(string name, string message) =>
        Assert.Equal(message, Assert.Throws<TemperException>(() => CpoLoss.Parse(name)).Message);

    [Fact]
    public void Bad_values_are_refused_naming_the_flag()
    {
        (PreferenceOptions P, PreferenceMethod Method, string Message)[] cases =
        [
            (new() { CpoAlpha = -1 }, PreferenceMethod.Cpo, "--cpo-alpha must be >= 0 (got -1)"),
            (new() { CpoLossType = CpoLossType.Simpo, SimpoGamma = -0.5 }, PreferenceMethod.Cpo, "--simpo-gamma must be >= 0 (got -0.5)"),
            (new() { SimpoGamma = 0.5 }, PreferenceMethod.Cpo, "--simpo-gamma needs --loss-type simpo (got sigmoid)"),
            (new() { CpoLossType = CpoLossType.Hinge, LabelSmoothing = 0.1 }, PreferenceMethod.Cpo, "--label-smoothing applies to the sigmoid and simpo losses, not hinge"),
            (new() { LabelSmoothing = 0.5 }, PreferenceMethod.Cpo, "--label-smoothing must be in [0, 0.5) (got 0.5)"),
            (new() { Beta = 0 }, PreferenceMethod.Cpo, "--beta must be > 0 (got 0)"),
            (new() { RpoAlpha = -0.1 }, PreferenceMethod.Dpo, "--rpo-alpha must be >= 0 (got -0.1)"),
            (new() { RpoAlpha = 1 }, PreferenceMethod.Orpo, "--rpo-alpha is a dpo option"),
        ];
        foreach (var (p, method, message) in cases) Assert.Equal(message, Assert.Throws<TemperException>(() => p.Check(method)).Message);
        new PreferenceOptions { CpoLossType = CpoLossType.Simpo, SimpoGamma = 0, LabelSmoothing = 0.1, CpoAlpha = 0 }.Check(PreferenceMethod.Cpo);
    }
}

public class CpoParityTests
{
    // Step-0 parity with TRL's CPOTrainer formulas in torch (tests/reference/make_cpo_reference.py; owed until a machine
    // with torch runs it): loss, nll_loss, rewards and the LoRA gradient norm for each loss type on llama-tiny's dpo.jsonl.
    [Fact]
    public void Step0_matches_trls_cpo()
    {
        string fixture = Fixtures.Hf("llama-tiny-cpo");
        var cases = JsonNode.Parse(File.ReadAllText(Path.Combine(fixture, "cpo_reference.json")))!["cases"]!.AsArray();
        string model = Fixtures.Hf("llama-tiny");
        foreach (var c in cases)
        {
            string dir = Directory.CreateTempSubdirectory("temper-cpo-parity-").FullName;
            string type = c!["loss_type"]!.GetValue<string>();
            var p = new PreferenceOptions
            {
                Beta = c["beta"]!.GetValue<double>(), CpoLossType = CpoLoss.Parse(type), LabelSmoothing = c["label_smoothing"]!.GetValue<double>(),
                SimpoGamma = type == "simpo" ? c["simpo_gamma"]!.GetValue<double>() : null, CpoAlpha = c["cpo_alpha"]!.GetValue<double>(),
            };
            var o = new SftOptions
            {
                ModelDir = model, DataPath = Path.Combine(model, "trainer", "dpo.jsonl"), OutDir = dir, InitAdapter = Path.Combine(model, "adapter"), BatchSize = 64, MaxSteps = 1,
            };
            new DpoTrainer(o, p, new CpuBackend(), PreferenceMethod.Cpo).Run();
            var line = JsonNode.Parse(File.ReadLines(Path.Combine(dir, "metrics.jsonl")).First())!;
            foreach (var key in new[] { "loss", "nll_loss", "rewards/chosen", "rewards/rejected", "grad_norm" })
            {
                double want = c[key]!.GetValue<double>(), got = line[key]!.GetValue<double>();
                Assert.True(Math.Abs(got - want) <= 1e-3 * Math.Abs(want) + 1e-6, $"{type} {key}: {got} vs TRL {want}");
            }
            Directory.Delete(dir, true);
        }
    }
}
