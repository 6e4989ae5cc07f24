// PEFT's add_weighted_adapter combination types (AdapterCombination.Combine): for every type, the combined adapter's
// per-module delta (s_new B A) against PEFT's definition evaluated here in float64, written from merge_utils.py and
// model.py and not from Temper's code: two adapters of rank 3 (alpha 6; alpha 2 with rsLoRA) on three small modules,
// the second lacking one, weights 0.7 and -0.4; the truncation of the svd types by a float64 Jacobi eigensolver of
// M^T M. Then the parts: majority sign by total and by frequency, DARE's masks (one seed one adapter, kept
// fraction, rescale), TruncatedSvd exact on low-rank matrices and against the reference on dense ones, and every
// refusal. Where the llama-tiny-combine fixture exists (tests/reference/make_combine_reference.py: PEFT's own
// combinations), the deterministic types are compared with it.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Lora;

namespace Temper.Tests;

public sealed class CombinationTypesTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("temper-combine-types-").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly (string Name, int Out, int In)[] Shapes =
        [("model.layers.0.self_attn.q_proj", 12, 10), ("model.layers.0.mlp.up_proj", 14, 9), ("model.layers.1.self_attn.v_proj", 8, 11)];

    // An adapter of random A and B on the given modules.
    private string Adapter(string name, int rank, double alpha, bool rsLora, int seed, int modules = 3, bool dora = false)
    {
        var rng = new Random(seed);
        float[] Random(int n) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var list = Shapes.Take(modules).Select(s => (s.Name, Tensor.FromFloats(new Shape(rank, s.In), Random(rank * s.In), "a"),
            Tensor.FromFloats(new Shape(s.Out, rank), Random(s.Out * rank), "b"), dora ? Tensor.FromFloats(new Shape(s.Out), Random(s.Out), "m") : (Tensor?)null)).ToList();
        string dir = Path.Combine(_dir, name);
        PeftAdapterWriter.Write(dir, list, new LoraConfig(rank, alpha, rsLora, ["q_proj", "up_proj", "v_proj"], null, 0) { UseDora = dora }, "tiny");
        return dir;
    }

    private static double[] D(Tensor t) => [.. t.ToFloatArray().Select(v => (double)v)];

    private static double[] Product(double[] b, double[] a, int m, int r, int n, double s = 1)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double acc = 0;
                for (int x = 0; x < r; x++) acc += b[i * r + x] * a[x * n + j];
                c[i * n + j] = s * acc;
            }
        return c;
    }

    // ---- PEFT's definitions, float64 ----

    private static double[] RefMagnitude(double[] x, double density)
    {
        if (density >= 1) return x;
        int k = (int)(density * x.Length);
        var keep = Enumerable.Range(0, x.Length).OrderByDescending(i => Math.Abs(x[i])).ThenBy(i => i).Take(k).ToHashSet();
        return [.. x.Select((v, i) => keep.Contains(i) ? v : 0)];
    }

    private static double[] RefRandom(double[] x, double density, SplitMix64 rng) =>
        density >= 1 ? x : [.. x.Select(v => rng.NextDouble() < density ? v / density : 0)];

    // merge_utils: prune, then (ties) elect the sign on the pruned tensors and average the agreeing weighted values,
    // or (linear) sum the weighted values.
    private static double[] RefMerge(string core, List<double[]> xs, double[] w, double density, bool frequency, SplitMix64 rng)
    {
        var pruned = core switch
        {
            "linear" => xs,
            "ties" or "magnitude_prune" => xs.Select(x => RefMagnitude(x, density)).ToList(),
            _ => xs.Select(x => RefRandom(x, density, rng)).ToList(),
        };
        int n = xs[0].Length;
        var result = new double[n];
        for (int e = 0; e < n; e++)
        {
            if (core is "ties" or "dare_ties")
            {
                double vote = pruned.Sum(x => frequency ? Math.Sign(x[e]) : x[e]);
                int sign = vote >= 0 ? 1 : -1;
                var agree = Enumerable.Range(0, xs.Count).Where(t => Math.Sign(pruned[t][e]) == sign).ToList();
                result[e] = agree.Sum(t => w[t] * pruned[t][e]) / Math.Max(1, agree.Count);
            }
            else result[e] = Enumerable.Range(0, xs.Count).Sum(t => w[t] * pruned[t][e]);
        }
        return result;
    }

    // The rank-k truncation of m [rows,cols] as the factors U_k S_k = M V_k and V_k^T, V from the Jacobi eigenvectors of M^T M.
    internal static (double[] Us, double[] Vh) RefTruncate(double[] m, int rows, int cols, int k)
    {
        var g = new double[cols * cols];
        for (int i = 0; i < cols; i++)
            for (int j = 0; j < cols; j++)
                for (int t = 0; t < rows; t++) g[i * cols + j] += m[t * cols + i] * m[t * cols + j];
        var v = new double[cols * cols];
        for (int i = 0; i < cols; i++) v[i * cols + i] = 1;
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int p = 0; p < cols; p++) for (int q = p + 1; q < cols; q++) off += g[p * cols + q] * g[p * cols + q];
            if (off < 1e-30) break;
            for (int p = 0; p < cols; p++)
                for (int q = p + 1; q < cols; q++)
                {
                    if (g[p * cols + q] == 0) continue;
                    double theta = (g[q * cols + q] - g[p * cols + p]) / (2 * g[p * cols + q]);
                    double t = Math.Sign(theta == 0 ? 1 : theta) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    for (int x = 0; x < cols; x++) // G <- J^T G J, V <- V J
                    {
                        double gp = g[x * cols + p], gq = g[x * cols + q];
                        g[x * cols + p] = c * gp - s * gq; g[x * cols + q] = s * gp + c * gq;
                    }
                    for (int x = 0; x < cols; x++)
                    {
                        double gp = g[p * cols + x], gq = g[q * cols + x];
                        g[p * cols + x] = c * gp - s * gq; g[q * cols + x] = s * gp + c * gq;
                    }
                    for (int x = 0; x < cols; x++)
                    {
                        double vp = v[x * cols + p], vq = v[x * cols + q];
                        v[x * cols + p] = c * vp - s * vq; v[x * cols + q] = s * vp + c * vq;
                    }
                }
        }
        var order = Enumerable.Range(0, cols).OrderByDescending(i => g[i * cols + i]).Take(Math.Min(k, Math.Min(rows, cols))).ToArray();
        var vh = new double[order.Length * cols];
        for (int j = 0; j < order.Length; j++)
        {
            var col = Enumerable.Range(0, cols).Select(x => v[x * cols + order[j]]).ToArray();
            double sign = col.MaxBy(Math.Abs) < 0 ? -1 : 1;   // Temper's sign convention, for the clamp
            for (int x = 0; x < cols; x++) vh[j * cols + x] = sign * col[x];
        }
        var us = new double[rows * order.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < order.Length; j++)
                for (int x = 0; x < cols; x++) us[i * order.Length + j] += m[i * cols + x] * vh[j * cols + x];
        return (us, vh);
    }

    private static double RefQuantile(double[] v, double q)
    {
        var s = v.Order().ToArray();
        double pos = q * (s.Length - 1);
        int lo = (int)pos;
        return lo + 1 < s.Length ? s[lo] + (pos - lo) * (s[lo + 1] - s[lo]) : s[lo];
    }

    // PEFT's delta of a module of the combination: add_weighted_adapter's per-type recipe, its result's scale 1; DARE's
    // masks from one SplitMix64(seed) for the whole adapter, modules in name order, A tensors then B tensors (or the deltas).
    private static double[] RefDelta(string type, IReadOnlyList<(LoraAdapter A, double W)> adapters, string name, int rank, CombinationOptions o, SplitMix64 rng)
    {
        var present = adapters.Where(x => x.A.Modules.ContainsKey(name)).ToList();
        int rows = present[0].A.Modules[name].B.Shape[0], cols = present[0].A.Modules[name].A.Shape[1];
        double density = o.Density ?? 1;
        bool frequency = o.MajoritySign == MajoritySignMethod.Frequency;
        if (type == "cat")
            return present.Select(x => Product(D(x.A.Modules[name].B), D(x.A.Modules[name].A), rows, x.A.Modules[name].A.Shape[0], cols, x.W * x.A.Config.ScaleFor(name)))
                .Aggregate((p, q) => [.. p.Zip(q, (u, v) => u + v)]);
        if (!type.EndsWith("svd", StringComparison.Ordinal))
        {
            var ws = present.Select(x => x.W * x.A.Config.ScaleFor(name)).ToArray();
            var a = RefMerge(type, [.. present.Select(x => D(x.A.Modules[name].A))], [.. ws.Select(w => Math.Sign(w) * Math.Sqrt(Math.Abs(w)))], density, frequency, rng);
            var b = RefMerge(type, [.. present.Select(x => D(x.A.Modules[name].B))], [.. ws.Select(w => Math.Sqrt(Math.Abs(w)))], density, frequency, rng);
            return Product(b, a, rows, rank, cols);
        }
        var deltas = present.Select(x => Product(D(x.A.Modules[name].B), D(x.A.Modules[name].A), rows, x.A.Modules[name].A.Shape[0], cols, x.A.Config.ScaleFor(name))).ToList();
        var merged = RefMerge(type == "svd" ? "linear" : type[..^4], deltas, [.. present.Select(x => x.W)], density, frequency, rng); // PEFT 0.21: w_i (s_i once, in the delta)
        var (us, vh) = RefTruncate(merged, rows, cols, rank);
        if (o.SvdClamp is { } q)
        {
            double hi = RefQuantile([.. us, .. vh], q);
            us = [.. us.Select(v => Math.Min(Math.Max(v, -hi), hi))];
            vh = [.. vh.Select(v => Math.Min(Math.Max(v, -hi), hi))];
        }
        return Product(us, vh, rows, vh.Length / cols, cols);
    }

    private static void AssertClose(double[] want, double[] got, double tolerance, string what)
    {
        double max = want.Max(Math.Abs);
        Assert.True(max > 0, what + ": the reference is zero");
        for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(got[i] - want[i]) <= tolerance * max, $"{what}[{i}]: {got[i]} vs {want[i]} (max {max})");
    }

    public static TheoryData<string, double?, string?, int?, double?> Cases => new()
    {
        { "cat", null, null, null, null },
        { "linear", null, null, null, null },
        { "ties", 0.5, null, null, null },
        { "ties", 0.4, "frequency", null, null },
        { "ties", 1.0, "total", null, null },
        { "dare_linear", 0.6, null, null, null },
        { "dare_ties", 0.5, "frequency", null, null },
        { "dare_ties", 0.7, "total", null, null },
        { "magnitude_prune", 0.3, null, null, null },
        { "svd", null, null, null, null },
        { "svd", null, null, 2, 0.9 },
        { "svd", null, null, null, 0.2 },
        { "ties_svd", 0.5, "total", null, null },
        { "ties_svd", 0.6, "frequency", 5, null },
        { "dare_linear_svd", 0.5, null, 2, null },
        { "dare_ties_svd", 0.5, null, null, 0.95 },
        { "magnitude_prune_svd", 0.4, null, 4, null },
        { "magnitude_prune_svd", 0.4, null, 20, null },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_type_gives_the_delta_peft_defines(string type, double? density, string? sign, int? svdRank, double? clamp)
    {
        using var x = LoraAdapter.Load(Adapter("x", 3, 6, false, 1));
        using var y = LoraAdapter.Load(Adapter("y", 3, 2, true, 2, modules: 2)); // lacks v_proj
        var options = new CombinationOptions(type)
        {
            Density = density,
            MajoritySign = sign == null ? null : sign == "total" ? MajoritySignMethod.Total : MajoritySignMethod.Frequency,
            SvdRank = svdRank,
            SvdClamp = clamp,
            Seed = type.StartsWith("dare", StringComparison.Ordinal) ? 42UL : null, // non-dare types draw nothing
        };
        (LoraAdapter, double)[] adapters = [(x, 0.7), (y, -0.4)];
        string outDir = Path.Combine(_dir, "out");
        var cfg = AdapterCombination.Combine(adapters, outDir, "tiny", options);
        int expectedRank = type == "cat" ? 6 : svdRank ?? 3;
        Assert.Equal(expectedRank, cfg.Rank);
        using var c = LoraAdapter.Load(outDir);
        Assert.Equal(expectedRank, c.Config.Rank);
        Assert.Equal(Shapes.Select(s => s.Name).Order(), c.Modules.Keys.Order());
        var rng = new SplitMix64(42);
        foreach (var (name, rows, cols) in Shapes.OrderBy(s => s.Name, StringComparer.Ordinal))
        {
            var (ca, cb) = c.Modules[name];
            var got = Product(D(cb), D(ca), rows, expectedRank, cols, c.Config.ScaleFor(name));
            AssertClose(RefDelta(type, adapters, name, expectedRank, options, rng), got, 2e-6, $"{type} {name}");
        }
    }

    [Fact]
    public void Majority_sign_by_total_and_by_frequency()
    {
        // element 0: +0.1 +0.1 -1 (total -0.8: minus; frequency +1: plus); element 1: a tie by frequency elects plus; element 2: zeros never count.
        double[][] xs = [[0.1, 2, 0], [0.1, -3, 0], [-1, 0, 0]];
        var total = TaskArithmetic.MajoritySignMask(xs, MajoritySignMethod.Total);
        var frequency = TaskArithmetic.MajoritySignMask(xs, MajoritySignMethod.Frequency);
        Assert.Equal([false, false, true], xs.Select((_, t) => total[t][0]));
        Assert.Equal([true, true, false], xs.Select((_, t) => frequency[t][0]));
        Assert.Equal([false, true, false], xs.Select((_, t) => total[t][1]));
        Assert.Equal([true, false, false], xs.Select((_, t) => frequency[t][1]));
        Assert.All(xs.Select((_, t) => total[t][2] || frequency[t][2]), Assert.False);
        Assert.Equal([-1, -3, 0], TaskArithmetic.Ties(xs, [1, 1, 1], 1, MajoritySignMethod.Total));
        Assert.Equal([0.1, 2, 0], TaskArithmetic.Ties(xs, [1, 1, 1], 1, MajoritySignMethod.Frequency));
        // The vote ignores the weights; the merge takes them: a weight of -2 on the minus entry adds +2.
        Assert.Equal(2, TaskArithmetic.Ties(xs, [1, 1, -2], 1, MajoritySignMethod.Total)[0]);
    }

    [Fact]
    public void Dare_masks_are_seeded_keep_about_density_and_rescale()
    {
        var ones = Enumerable.Repeat(1.0, 100_000).ToArray();
        var pruned = TaskArithmetic.PruneAtRandom(ones, 0.3, new SplitMix64(7));
        int kept = pruned.Count(v => v != 0);
        Assert.InRange(kept / 1e5, 0.294, 0.306);                   // 4 standard deviations
        Assert.All(pruned.Where(v => v != 0), v => Assert.Equal(1 / 0.3, v, 12));
        Assert.Equal(pruned, TaskArithmetic.PruneAtRandom(ones, 0.3, new SplitMix64(7)));
        Assert.NotEqual(pruned, TaskArithmetic.PruneAtRandom(ones, 0.3, new SplitMix64(8)));
        Assert.Same(ones, TaskArithmetic.PruneAtRandom(ones, 1, new SplitMix64(7))); // density 1: nothing pruned, nothing rescaled

        using var x = LoraAdapter.Load(Adapter("x", 3, 6, false, 1));
        using var y = LoraAdapter.Load(Adapter("y", 3, 6, false, 2));
        byte[] Combined(ulong seed, string name)
        {
            AdapterCombination.Combine([(x, 1), (y, 1)], Path.Combine(_dir, name), "tiny", new CombinationOptions("dare_ties") { Density = 0.5, Seed = seed });
            return File.ReadAllBytes(Path.Combine(_dir, name, "adapter_model.safetensors"));
        }
        Assert.Equal(Combined(3, "a"), Combined(3, "b"));
        Assert.NotEqual(Combined(3, "a"), Combined(4, "c"));
    }

    [Fact]
    public void Magnitude_pruning_keeps_the_floor_of_density_times_n_largest()
    {
        double[] x = [0.5, -3, 2, -0.1, 1, 2];
        Assert.Equal([0, -3, 2, 0, 0, 2], TaskArithmetic.PruneByMagnitude(x, 0.55)); // floor(3.3) = 3; the tie at 2 fills it
        Assert.Equal([0, -3, 2, 0, 0, 0], TaskArithmetic.PruneByMagnitude(x, 0.34));  // floor(2.04) = 2: the earlier 2
        Assert.Equal(new double[6], TaskArithmetic.PruneByMagnitude(x, 0.1));         // floor(0.6) = 0
    }

    private static double[] RandomMatrix(Random rng, int m, int n) => Enumerable.Range(0, m * n).Select(_ => rng.NextDouble() * 2 - 1).ToArray();

    [Fact]
    public void Truncated_svd_is_exact_on_low_rank_matrices_and_matches_the_jacobi_reference()
    {
        var rng = new Random(3);
        // Rank 3, as a product and dense: any k >= 3 gives it back.
        var b = RandomMatrix(rng, 40, 3);
        var a = RandomMatrix(rng, 3, 30);
        var m = Product(b, a, 40, 3, 30);
        foreach (int k in new[] { 3, 5 })
        {
            var (pb, pa) = TruncatedSvd.OfProduct(b, a, 40, 3, 30, k);
            AssertClose(m, Product(pb, pa, 40, k, 30), 1e-12, $"OfProduct k={k}");
            var (db, da) = TruncatedSvd.OfDense(m, 40, 30, k);
            AssertClose(m, Product(db, da, 40, k, 30), 1e-12, $"OfDense k={k}");
        }

        // Dense with a decaying spectrum, k = 4 (l = 18 of 50 columns: the iteration, not the whole range).
        var u = RandomMatrix(rng, 70, 50);
        var dense = new double[70 * 50];
        for (int i = 0; i < 70; i++)
            for (int j = 0; j < 50; j++) dense[i * 50 + j] = u[i * 50 + j] * Math.Pow(0.8, j);
        var (rb, ra) = RefTruncate(dense, 70, 50, 4);
        var (fb, fa) = TruncatedSvd.OfDense(dense, 70, 50, 4);
        AssertClose(Product(rb, ra, 70, 4, 50), Product(fb, fa, 70, 4, 50), 1e-9, "OfDense vs Jacobi");
        AssertClose(rb, fb, 1e-6, "U S (signs by the largest entry of each row of A)");
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                Assert.Equal(i == j ? 1 : 0, Enumerable.Range(0, 50).Sum(x => fa[i * 50 + x] * fa[j * 50 + x]), 10);

        // A flat spectrum: at least as good an approximation as the exact truncation, to 1e-6.
        var flat = RandomMatrix(rng, 60, 45);
        var (xb, xa) = RefTruncate(flat, 60, 45, 6);
        var (yb, ya) = TruncatedSvd.OfDense(flat, 60, 45, 6);
        double Residual(double[] p) => Math.Sqrt(flat.Zip(p, (s, t) => (s - t) * (s - t)).Sum());
        Assert.True(Residual(Product(yb, ya, 60, 6, 45)) <= Residual(Product(xb, xa, 60, 6, 45)) * (1 + 1e-6));
    }

    [Fact]
    public void Combinations_that_cannot_be_made_are_refused_in_one_line()
    {
        string xDir = Adapter("x", 3, 6, false, 1), zDir = Adapter("z", 2, 2, false, 3);
        using var x = LoraAdapter.Load(xDir);
        using var x2 = LoraAdapter.Load(Adapter("x2", 3, 6, false, 4));
        using var z = LoraAdapter.Load(zDir);
        using var dora = LoraAdapter.Load(Adapter("dora", 3, 6, false, 5, dora: true), allowDora: true);
        string Refused(CombinationOptions o, LoraAdapter first, LoraAdapter second) =>
            Assert.Throws<TemperException>(() => AdapterCombination.Combine([(first, 1), (second, 1)], Path.Combine(_dir, "refused"), "tiny", o)).Message;

        Assert.Equal($"{zDir}: rank 2, but {xDir} has rank 3: combination type linear needs adapters of one rank (cat and the svd types do not)", Refused(new("linear"), x, z));
        Assert.Contains("needs adapters of one rank", Refused(new("ties") { Density = 0.5 }, x, z));
        Assert.Equal("combination type ties needs a density in (0, 1] (--density)", Refused(new("ties"), x, x2));
        Assert.Equal("combination type dare_linear: density must be in (0, 1], got 0", Refused(new("dare_linear") { Density = 0 }, x, x2));
        Assert.Equal("combination type magnitude_prune_svd: density must be in (0, 1], got 1.5", Refused(new("magnitude_prune_svd") { Density = 1.5 }, x, x2));
        Assert.Equal("combination type svd: the SVD rank must be positive, got 0", Refused(new("svd") { SvdRank = 0 }, x, z));
        Assert.Equal("combination type svd: the SVD clamp is a quantile in [0, 1], got 1.5", Refused(new("svd") { SvdClamp = 1.5 }, x, z));
        Assert.StartsWith("unknown combination type 'slerp' (one of cat, linear, ties,", Refused(new("slerp"), x, x2));
        Assert.Equal("combination type linear does not use a density (--density); refusing rather than ignoring it", Refused(new("linear") { Density = 0.5 }, x, x2));
        Assert.Contains("does not use a majority sign method", Refused(new("dare_linear") { Density = 0.5, MajoritySign = MajoritySignMethod.Total }, x, x2));
        Assert.Contains("does not use a seed (--seed)", Refused(new("ties") { Density = 0.5, Seed = 1 }, x, x2));
        Assert.Contains("does not use an SVD rank", Refused(new("cat") { SvdRank = 4 }, x, x2));
        Assert.Contains("does not use an SVD clamp", Refused(new("ties") { Density = 0.5, SvdClamp = 0.9 }, x, x2));
        Assert.StartsWith($"{dora.Directory}: a DoRA adapter (use_dora) cannot be combined", Refused(new("svd"), x, dora));
        Assert.Equal("combining needs at least two adapters",
            Assert.Throws<TemperException>(() => AdapterCombination.Combine([(x, 1)], Path.Combine(_dir, "one"), "tiny", new("svd"))).Message);

        // Another base: the same module with other widths.
        string otherDir = Path.Combine(_dir, "other");
        PeftAdapterWriter.Write(otherDir, [(Shapes[0].Name, Tensor.FromFloats(new Shape(3, 32), new float[96], "a"), Tensor.FromFloats(new Shape(12, 3), new float[36], "b"), null)],
            new LoraConfig(3, 3, false, ["q_proj"], null, 0), "another");
        using var other = LoraAdapter.Load(otherDir);
        Assert.EndsWith("the adapters are not of one base", Refused(new("ties_svd") { Density = 0.5 }, x, other));

        // A rank_pattern module at another rank: the adapters' ranks agree, the module's does not.
        string patternDir = Path.Combine(_dir, "pattern");
        PeftAdapterWriter.Write(patternDir, [(Shapes[0].Name, Tensor.FromFloats(new Shape(2, 10), new float[20], "a"), Tensor.FromFloats(new Shape(12, 2), new float[24], "b"), null)],
            new LoraConfig(3, 6, false, ["q_proj"], null, 0) { RankPattern = [("q_proj", 2)] }, "tiny");
        using var pattern = LoraAdapter.Load(patternDir);
        Assert.Equal($"{patternDir}: module '{Shapes[0].Name}' has rank 2 (rank_pattern), but combination type linear needs every module at the adapters' rank 3",
            Refused(new("linear"), x, pattern));
    }

    // PEFT's own combinations of two LoRA adapters of llama-tiny (make_combine_reference.py), when that fixture exists.
    [Fact]
    public void The_deterministic_types_match_peft_on_the_llama_tiny_fixture()
    {
        string root = Fixtures.Hf("llama-tiny-combine");
        var reference = JsonNode.Parse(File.ReadAllText(Path.Combine(root, "reference.json")))!;
        double[] weights = [.. reference["weights"]!.AsArray().Select(n => n!.GetValue<double>())];
        using var first = LoraAdapter.Load(Path.Combine(root, "first"));
        using var second = LoraAdapter.Load(Path.Combine(root, "second"));
        foreach (var entry in reference["combinations"]!.AsArray())
        {
            string name = entry!["name"]!.GetValue<string>(), type = entry["type"]!.GetValue<string>();
            var options = new CombinationOptions(type)
            {
                Density = entry["density"]?.GetValue<double>(),
                MajoritySign = entry["majority_sign_method"]?.GetValue<string>() switch { null => null, "total" => MajoritySignMethod.Total, _ => MajoritySignMethod.Frequency },
            };
            string ours = Path.Combine(_dir, name);
            AdapterCombination.Combine([(first, weights[0]), (second, weights[1])], ours, "llama-tiny", options);
            using var peft = LoraAdapter.Load(Path.Combine(root, name));
            using var temper = LoraAdapter.Load(ours);
            Assert.Equal(peft.Modules.Keys.Order(), temper.Modules.Keys.Order());
            foreach (var (module, (pa, pb)) in peft.Modules)
            {
                var (ta, tb) = temper.Modules[module];
                int rows = pb.Shape[0], cols = pa.Shape[1];
                var want = Product(D(pb), D(pa), rows, pa.Shape[0], cols, peft.Config.ScaleFor(module));
                var got = Product(D(tb), D(ta), rows, ta.Shape[0], cols, temper.Config.ScaleFor(module));
                AssertClose(want, got, 1e-4, $"{name} {module}");
            }
        }
    }
}
