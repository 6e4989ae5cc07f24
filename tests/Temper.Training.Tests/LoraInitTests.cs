// PEFT's other LoRA initialisations (init_lora_weights) on the llama-tiny fixture. PiSSA: the model starts equal to
// the base; A A^T and B^T B are the same diagonal S_r / s; the residual base is orthogonal to the adapter's row and
// column spaces and its largest singular value is at most the adapter's smallest (so the adapter holds the top r);
// and the adapter saved converted (rank 2r, for the original base) reproduces the trained model's loss (OLoRA's
// too: B the orthonormalised first r columns of W, A = B^T W). Gaussian:
// A ~ N(0, 1/r), B = 0. Refusals where the base would change under a reference model or a frozen format.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Data;
using Temper.Training.Lora;
using Temper.Training.Preference;
using Temper.Training.Trainers;

namespace Temper.Tests;

public sealed class LoraInitTests
{
    private static readonly int[] Ids = [1, 40, 41, 42, 43, 50, 51, 52, 1, 60, 61, 62, 63, 64, 65, 2];

    private static string Model => Fixtures.Hf("llama-tiny");

    private static SftOptions Sft(string outDir) => new()
    {
        ModelDir = Model, DataPath = Path.Combine(Model, "trainer", "sft.jsonl"), OutDir = outDir,
        LoraInit = LoraInitMethods.Pissa, LoraRank = 4, LoraAlpha = 8, MaxSteps = 3, LearningRate = 1e-3f, BatchSize = 3,
    };

    // The fixture with a fresh adapter started by a base-rewriting method, after checking that its logits are the base's
    // (within 1e-5 x max); returns it with the original weights of every projection.
    private static (LanguageModel Lm, Dictionary<string, float[]> Original) StartedAtTheBase(LoraConfig cfg, string method)
    {
        var lm = LanguageModel.Load(Model, new CpuBackend(1));
        var be = lm.Decoder.Backend;
        using var baseLogits = lm.Logits(Ids, 2);
        var original = lm.Weights.Projections.ToDictionary(p => p.Name, p => p.WeightValues(be));
        LoraInit.Attach(lm.Weights, cfg, be, seed: 1);
        LoraInitMethods.ApplyToBase(lm.Weights, be, method);
        using var start = lm.Logits(Ids, 2);
        float max = baseLogits.Floats.ToArray().Max(MathF.Abs);
        for (int i = 0; i < start.Floats.Length; i++) Assert.True(Math.Abs(start.Floats[i] - baseLogits.Floats[i]) <= 1e-5f * max, $"{method}: logit {i}");
        return (lm, original);
    }

    [Fact]
    public void Pissa_starts_at_the_base_with_the_top_singular_directions()
    {
        var cfg = new LoraConfig(4, 8, false, ["q_proj", "down_proj"], null, 0);
        var (lm, original) = StartedAtTheBase(cfg, LoraInitMethods.Pissa);
        using var _ = lm;
        var be = lm.Decoder.Backend;
        foreach (var p in lm.Weights.Projections.Where(p => p.Lora != null))
        {
            int r = 4, m = p.Out, n = p.In;
            var a = p.Lora!.A.Floats.ToArray();
            var b = p.Lora.B.Floats.ToArray();
            var res = p.WeightValues(be);
            double s = cfg.Scale;
            // A A^T = B^T B = diag(S / s): the singular values S_k, each direction once.
            var sv = new double[r];
            for (int x = 0; x < r; x++)
                for (int y = 0; y < r; y++)
                {
                    double aa = 0, bb = 0;
                    for (int j = 0; j < n; j++) aa += (double)a[x * n + j] * a[y * n + j];
                    for (int i = 0; i < m; i++) bb += (double)b[i * r + x] * b[i * r + y];
                    if (x == y)
                    {
                        Assert.True(Math.Abs(aa - bb) <= 1e-4 * aa, $"{p.Name}: (A A^T)[{x}] {aa} against (B^T B)[{x}] {bb}");
                        sv[x] = aa * s;
                    }
                    else Assert.True(Math.Abs(aa) <= 1e-4 && Math.Abs(bb) <= 1e-4, $"{p.Name}: off-diagonal ({x},{y}): {aa}, {bb}");
                }
            // W_res + s B A = W, and W_res A^T = 0 (the residual has no part along the adapter's directions).
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double ba = 0;
                    for (int k = 0; k < r; k++) ba += (double)b[i * r + k] * a[k * n + j];
                    Assert.True(Math.Abs(res[i * n + j] + s * ba - original[p.Name][i * n + j]) <= 1e-5, $"{p.Name}[{i},{j}]: W_res + s B A is not W");
                }
            for (int i = 0; i < m; i++)
                for (int k = 0; k < r; k++)
                {
                    double dot = 0;
                    for (int j = 0; j < n; j++) dot += (double)res[i * n + j] * a[k * n + j];
                    Assert.True(Math.Abs(dot) <= 1e-4 * Math.Sqrt(sv[k]), $"{p.Name}: residual row {i} along A row {k}: {dot}");
                }
            // The residual's largest singular value (power iteration on W_res^T W_res) is no larger than the adapter's smallest.
            var v = Enumerable.Range(0, n).Select(j => 1.0 + 0.01 * j).ToArray();
            double sigma = 0;
            for (int it = 0; it < 200; it++)
            {
                var u = new double[m];
                for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) u[i] += res[i * n + j] * v[j];
                var w = new double[n];
                for (int i = 0; i < m; i++) for (int j = 0; j < n; j++) w[j] += res[i * n + j] * u[i];
                double norm = Math.Sqrt(w.Sum(x => x * x));
                sigma = Math.Sqrt(norm);
                for (int j = 0; j < n; j++) v[j] = w[j] / norm;
            }
            Assert.True(sigma <= sv.Min() * (1 + 1e-3), $"{p.Name}: the residual keeps a singular value {sigma} above the adapter's smallest {sv.Min()}");
        }
    }

    [Fact]
    public void Olora_starts_at_the_base_with_b_the_orthonormal_first_columns_and_a_b_transpose_w()
    {
        var (lm, original) = StartedAtTheBase(new LoraConfig(4, 8, false, ["k_proj", "up_proj"], null, 0), LoraInitMethods.Olora);
        using var _ = lm;
        foreach (var p in lm.Weights.Projections.Where(p => p.Lora != null))
        {
            int r = 4, m = p.Out, n = p.In;
            var a = p.Lora!.A.Floats.ToArray();
            var b = p.Lora.B.Floats.ToArray();
            var w = original[p.Name];
            for (int x = 0; x < r; x++)
                for (int y = 0; y < r; y++)
                {
                    double bb = 0;
                    for (int i = 0; i < m; i++) bb += (double)b[i * r + x] * b[i * r + y];
                    Assert.True(Math.Abs(bb - (x == y ? 1 : 0)) <= 1e-5, $"{p.Name}: (B^T B)[{x},{y}] = {bb}");
                }
            for (int k = 0; k < r; k++)
                for (int j = 0; j < n; j++)
                {
                    double btw = 0;
                    for (int i = 0; i < m; i++) btw += (double)b[i * r + k] * w[i * n + j];
                    Assert.True(Math.Abs(a[k * n + j] - btw) <= 1e-5, $"{p.Name}: A[{k},{j}] is not (B^T W)");
                }
            // B spans W's first r columns: B B^T reproduces each of them.
            for (int c = 0; c < r; c++)
                for (int i = 0; i < m; i++)
                {
                    double proj = 0;
                    for (int k = 0; k < r; k++) proj += (double)b[i * r + k] * a[k * n + c];
                    Assert.True(Math.Abs(proj - w[i * n + c]) <= 1e-5, $"{p.Name}: column {c} of W is not in B's span");
                }
        }
    }

    [Theory]
    [InlineData(LoraInitMethods.Pissa)]
    [InlineData(LoraInitMethods.Olora)]
    [InlineData("pissa_niter_2")]
    public void A_run_that_rewrote_its_base_saved_converted_reproduces_its_loss_on_the_original_base(string method)
    {
        string dir = TempFolder.Create("temper-pissa");
        var o = Sft(dir) with { LoraInit = method, EvalData = Path.Combine(Model, "trainer", "sft.jsonl"), EvalEvery = 1 };
        new SftTrainer(o, new CpuBackend(1)).Run();
        var metrics = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Select(l => System.Text.Json.Nodes.JsonNode.Parse(l)!).ToArray();
        double trained = metrics[^1]["eval_loss"]!.GetValue<double>();
        Assert.True(trained < metrics[0]["eval_loss"]!.GetValue<double>());
        var cfg = LoraConfig.Load(dir);
        Assert.Equal(8, cfg.Rank);   // 2r
        Assert.Equal(16, cfg.Alpha); // 2 alpha: the same scale
        using var lm = LanguageModel.Load(Model, new CpuBackend(1), dir);
        var eval = SftDataset.Load(o.EvalData!, lm.RequireTokenizer(), lm.Template, new SftDataOptions(o.MaxLength, o.Truncation, false));
        double loaded = SftTrainer.Evaluate(new DecoderBackprop(lm.Decoder), eval, lm.Config.PadTokenId ?? 0);
        Assert.Equal(trained, loaded, 1e-5);
    }

    [Fact]
    public void Gaussian_starts_a_at_n_0_1_over_r_and_b_at_zero()
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend(1));
        LoraInit.Attach(lm.Weights, new LoraConfig(8, 16, false, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], null, 0), lm.Decoder.Backend, seed: 1);
        LoraInitMethods.ApplyGaussian(lm.Weights, lm.Decoder.Backend, seed: 1);
        var a = lm.Weights.Projections.SelectMany(p => p.Lora!.A.Floats.ToArray()).ToArray();
        double mean = a.Average(x => (double)x), sd = Math.Sqrt(a.Average(x => (x - mean) * (x - mean)));
        Assert.True(Math.Abs(mean) < 0.01 && Math.Abs(sd - 1.0 / 8) < 0.01, $"A: mean {mean}, sd {sd} (want 0, {1.0 / 8})");
        Assert.All(lm.Weights.Projections, p => Assert.All(p.Lora!.B.Floats.ToArray(), x => Assert.Equal(0f, x)));
    }

    [Fact]
    public void Pissa_is_refused_where_the_base_must_stay_the_base()
    {
        string Refusal(Action run) => Assert.Throws<TemperException>(run).Message;
        var o = Sft(TempFolder.Create("temper-pissa-refused"));
        Assert.Contains("sft and pretrain only", Refusal(() => new DpoTrainer(o with { DataPath = Path.Combine(Model, "trainer", "dpo.jsonl") }, new PreferenceOptions(), new CpuBackend(1)).Run()));
        Assert.Contains("--use-dora", Refusal(() => new SftTrainer(o with { UseDora = true }, new CpuBackend(1)).Run()));
        Assert.Contains("--init-adapter", Refusal(() => new SftTrainer(o with { InitAdapter = Path.Combine(Model, "adapter") }, new CpuBackend(1)).Run()));
        Assert.Contains("--full", Refusal(() => new SftTrainer(o with { Full = true }, new CpuBackend(1)).Run()));
    }
}
