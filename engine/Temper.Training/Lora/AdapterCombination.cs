// Several LoRA adapters of one base combined into one, as PEFT's add_weighted_adapter(adapters, weights,
// combination_type, ...) combines them (peft/tuners/lora/model.py), per module, with w_i the adapter's weight and
// s_i its scale of that module (alpha/r, rsLoRA and the patterns as it was trained); A_i [r_i,In], B_i [Out,r_i].
// The result has r = lora_alpha = its rank, so its delta is B A:
//   cat     A = [w_1 s_1 A_1; w_2 s_2 A_2; ...] (rows), B = [B_1 | B_2 | ...] (columns), zero-padded to the rank
//           R = the largest per-module sum of ranks: B A = sum_i w_i s_i B_i A_i exactly.
//   linear, ties, dare_linear, dare_ties, magnitude_prune (all adapters of one rank r, which the result keeps):
//           the A_i and the B_i are merged separately (TaskArithmetic) with weights sqrt|w_i s_i| sign(w_i s_i) for
//           A and sqrt|w_i s_i| for B. Beware, as in PEFT: linear's B A = (sum_i c_i B_i)(sum_j c'_j A_j) has the
//           cross terms B_i A_j, so it is NOT the weighted sum of the deltas unless the adapters share factors; and
//           pruning and sign election act on the factors, not on the deltas.
//   svd, ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune_svd: the dense deltas D_i = s_i B_i A_i merged
//           (task_arithmetic for svd) with weights w_i (svd: sum_i w_i s_i B_i A_i, as PEFT 0.21 does; PEFT before
//           it weighted the deltas by w_i s_i, counting each scale twice), then truncated to rank --svd-rank (default the largest
//           adapter rank) by TruncatedSvd: A = Vh_k, B = U_k S_k. With svd_clamp q, both are clamped to [-h, h],
//           h = the q-quantile (linear interpolation, torch.quantile) of all their values: a q under about 0.5
//           makes h negative, and then every value becomes h, as torch.clamp(min > max) does; h depends on the
//           singular vectors' signs, which Temper fixes (TruncatedSvd) and torch leaves to its driver.
// Where Temper differs: PEFT copies the first adapter's use_rslora (which would rescale the result by sqrt(r));
// the combination is written with use_rslora false so it means what the weights say. PEFT turns a call with one
// adapter into linear; Temper needs two. A --svd-rank above min(Out, In) pads with zeros (PEFT fails there).
// DARE's random masks come from SplitMix64(seed), drawn module by module in name order, each module's A tensors
// then B tensors (or deltas) in adapter order: one seed gives one adapter, never torch's. Modules an adapter lacks
// are combined from the adapters that have them (PEFT's valid adapters). Options a type does not use are refused,
// not ignored, as are DoRA adapters (their magnitudes do not add), modules_to_save and adapters of another base.
using Temper.Core;
using Temper.Models;

namespace Temper.Training.Lora;

/// <summary>PEFT's add_weighted_adapter arguments beyond the adapters and weights; null = not given.</summary>
public sealed record CombinationOptions(string Type = "cat")
{
    public double? Density { get; init; }
    public MajoritySignMethod? MajoritySign { get; init; }
    public int? SvdRank { get; init; }
    public double? SvdClamp { get; init; }
    public ulong? Seed { get; init; }
}

public static class AdapterCombination
{
    public static readonly string[] Types = ["cat", "linear", "ties", "dare_linear", "dare_ties", "magnitude_prune",
        "svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd"];

    /// <summary>Writes the "cat" combination of <paramref name="adapters"/> (each with its weight) to <paramref name="outDir"/>.</summary>
    public static LoraConfig Cat(IReadOnlyList<(LoraAdapter Adapter, double Weight)> adapters, string outDir, string baseModel) =>
        Combine(adapters, outDir, baseModel, new CombinationOptions());

    /// <summary>Writes the combination of <paramref name="adapters"/> (each with its weight) that <paramref name="options"/> names to <paramref name="outDir"/>.</summary>
    public static LoraConfig Combine(IReadOnlyList<(LoraAdapter Adapter, double Weight)> adapters, string outDir, string baseModel, CombinationOptions options)
    {
        string type = options.Type;
        if (!Types.Contains(type)) throw new TemperException($"unknown combination type '{type}' (one of {string.Join(", ", Types)})");
        bool svd = type.EndsWith("svd", StringComparison.Ordinal);
        string core = svd ? (type == "svd" ? "linear" : type[..^4]) : type;
        bool pruned = core is "ties" or "dare_linear" or "dare_ties" or "magnitude_prune";
        bool elects = core is "ties" or "dare_ties", dare = core.StartsWith("dare", StringComparison.Ordinal);
        if (pruned && options.Density is not (> 0 and <= 1))
            throw new TemperException(options.Density is { } d ? $"combination type {type}: density must be in (0, 1], got {d}" : $"combination type {type} needs a density in (0, 1] (--density)");
        Unused(!pruned && options.Density != null, type, "a density (--density)");
        Unused(!elects && options.MajoritySign != null, type, "a majority sign method (--majority-sign-method)");
        Unused(!dare && options.Seed != null, type, "a seed (--seed): only the dare types draw random masks");
        Unused(!svd && options.SvdRank != null, type, "an SVD rank (--svd-rank)");
        Unused(!svd && options.SvdClamp != null, type, "an SVD clamp (--svd-clamp)");
        if (options.SvdRank is <= 0) throw new TemperException($"combination type {type}: the SVD rank must be positive, got {options.SvdRank}");
        if (options.SvdClamp is { } q && !(q >= 0 && q <= 1)) throw new TemperException($"combination type {type}: the SVD clamp is a quantile in [0, 1], got {q}");

        if (adapters.Count < 2) throw new TemperException("combining needs at least two adapters");
        foreach (var (a, _) in adapters)
        {
            if (a.Config.UseDora) throw new TemperException($"{a.Directory}: a DoRA adapter (use_dora) cannot be combined: its magnitudes do not add; merge it into the base (temper merge)");
            if (a.SavedModules.Count > 0) throw new TemperException($"{a.Directory}: an adapter with modules_to_save cannot be combined");
        }
        var names = adapters.SelectMany(x => x.Adapter.Modules.Keys).Distinct().Order(StringComparer.Ordinal).ToList();
        foreach (var name in names) CheckShapes(adapters, name);

        // PEFT's rank of an adapter: r, or the largest of r and its rank_pattern.
        var ranks = adapters.Select(x => x.Adapter.Config.RankPattern.Select(p => p.Rank).Append(x.Adapter.Config.Rank).Max()).ToArray();
        int rank;
        if (type == "cat") rank = names.Max(n => adapters.Sum(x => x.Adapter.Modules.TryGetValue(n, out var m) ? m.A.Shape[0] : 0));
        else if (svd) rank = options.SvdRank ?? ranks.Max();
        else
        {
            rank = ranks[0];
            for (int i = 1; i < adapters.Count; i++)
                if (ranks[i] != rank)
                    throw new TemperException($"{adapters[i].Adapter.Directory}: rank {ranks[i]}, but {adapters[0].Adapter.Directory} has rank {rank}: combination type {type} needs adapters of one rank (cat and the svd types do not)");
            foreach (var (a, _) in adapters)
                foreach (var (name, m) in a.Modules)
                    if (m.A.Shape[0] != rank)
                        throw new TemperException($"{a.Directory}: module '{name}' has rank {m.A.Shape[0]} (rank_pattern), but combination type {type} needs every module at the adapters' rank {rank}");
        }

        var rng = new SplitMix64(options.Seed ?? 0);
        var modules = new List<(string, Tensor, Tensor, Tensor?)>();
        foreach (var name in names)
        {
            var present = adapters.Where(x => x.Adapter.Modules.ContainsKey(name)).ToList();
            var (a, b) = type == "cat" ? Concatenated(present, name, rank)
                : svd ? Truncated(present, name, rank, core, options, rng)
                : Factorwise(present, name, core, options, rng);
            int inDim = present[0].Adapter.Modules[name].A.Shape[1], outDim = present[0].Adapter.Modules[name].B.Shape[0];
            modules.Add((name, Tensor.FromFloats(new Shape(rank, inDim), [.. a.Select(v => (float)v)], name + ".lora_A"),
                Tensor.FromFloats(new Shape(outDim, rank), [.. b.Select(v => (float)v)], name + ".lora_B"), null));
        }
        var targets = names.Select(n => n[(n.LastIndexOf('.') + 1)..]).Distinct().Order(StringComparer.Ordinal).ToList();
        var cfg = new LoraConfig(rank, rank, false, targets, null, 0);
        PeftAdapterWriter.Write(outDir, modules, cfg, baseModel);
        return cfg;
    }

    private static void Unused(bool given, string type, string what)
    {
        if (given) throw new TemperException($"combination type {type} does not use {what}; refusing rather than ignoring it");
    }

    private static void CheckShapes(IReadOnlyList<(LoraAdapter Adapter, double Weight)> adapters, string name)
    {
        var present = adapters.Where(x => x.Adapter.Modules.ContainsKey(name)).ToList();
        var (a0, b0) = present[0].Adapter.Modules[name];
        foreach (var (adapter, _) in present)
        {
            var (ai, bi) = adapter.Modules[name];
            if (ai.Shape[1] != a0.Shape[1] || bi.Shape[0] != b0.Shape[0])
                throw new TemperException($"{adapter.Directory}: module '{name}' has A {ai.Shape} and B {bi.Shape}, but {present[0].Adapter.Directory}'s are {a0.Shape} and {b0.Shape}: the adapters are not of one base");
        }
    }

    private static double[] Doubles(Tensor t) => [.. t.ToFloatArray().Select(v => (double)v)];

    // cat: A [R,In] = the w_i s_i A_i stacked, B [Out,R] = the B_i side by side, zero-padded to R.
    private static (double[] A, double[] B) Concatenated(List<(LoraAdapter Adapter, double Weight)> present, string name, int rank)
    {
        int inDim = present[0].Adapter.Modules[name].A.Shape[1], outDim = present[0].Adapter.Modules[name].B.Shape[0];
        var a = new double[rank * inDim];
        var b = new double[outDim * rank];
        int row = 0;
        foreach (var (adapter, weight) in present)
        {
            var (ai, bi) = adapter.Modules[name];
            int r = ai.Shape[0];
            double scale = weight * adapter.Config.ScaleFor(name);
            var af = ai.ToFloatArray();
            var bf = bi.ToFloatArray();
            for (int x = 0; x < r; x++)
                for (int j = 0; j < inDim; j++) a[(row + x) * inDim + j] = af[x * inDim + j] * scale;
            for (int i = 0; i < outDim; i++)
                for (int x = 0; x < r; x++) b[i * rank + row + x] = bf[i * r + x];
            row += r;
        }
        return (a, b);
    }

    // linear, ties, dare_*, magnitude_prune: the A_i and the B_i merged separately, the weight's square root on each side.
    private static (double[] A, double[] B) Factorwise(List<(LoraAdapter Adapter, double Weight)> present, string name, string core, CombinationOptions options, SplitMix64 rng)
    {
        var scaled = present.Select(x => x.Weight * x.Adapter.Config.ScaleFor(name)).ToArray();
        var weightsA = scaled.Select(w => Math.Sqrt(Math.Abs(w)) * (w >= 0 ? 1 : -1)).ToArray();
        var weightsB = scaled.Select(w => Math.Sqrt(Math.Abs(w))).ToArray();
        var a = Merge(core, [.. present.Select(x => Doubles(x.Adapter.Modules[name].A))], weightsA, options, rng);
        var b = Merge(core, [.. present.Select(x => Doubles(x.Adapter.Modules[name].B))], weightsB, options, rng);
        return (a, b);
    }

    // The svd types: the deltas s_i B_i A_i merged with weights w_i, truncated to rank k (zero-padded past min(Out, In)).
    private static (double[] A, double[] B) Truncated(List<(LoraAdapter Adapter, double Weight)> present, string name, int rank, string core, CombinationOptions options, SplitMix64 rng)
    {
        int inDim = present[0].Adapter.Modules[name].A.Shape[1], outDim = present[0].Adapter.Modules[name].B.Shape[0];
        int k = Math.Min(rank, Math.Min(inDim, outDim));
        double[] us, vh;
        if (core == "linear")
        {
            // sum_i (w_i s_i B_i) A_i: the factors stacked, [Out, sum r_i] and [sum r_i, In].
            int p = present.Sum(x => x.Adapter.Modules[name].A.Shape[0]);
            var bs = new double[outDim * p];
            var stacked = new List<double>(p * inDim);
            int col = 0;
            foreach (var (adapter, weight) in present)
            {
                var (ai, bi) = adapter.Modules[name];
                int r = ai.Shape[0];
                double c = weight * adapter.Config.ScaleFor(name);
                var bf = bi.ToFloatArray();
                for (int i = 0; i < outDim; i++)
                    for (int x = 0; x < r; x++) bs[i * p + col + x] = c * bf[i * r + x];
                stacked.AddRange(Doubles(ai));
                col += r;
            }
            (us, vh) = TruncatedSvd.OfProduct(bs, [.. stacked], outDim, p, inDim, k);
        }
        else
        {
            var deltas = present.Select(x =>
            {
                var (ai, bi) = x.Adapter.Modules[name];
                int r = ai.Shape[0];
                double s = x.Adapter.Config.ScaleFor(name);
                var (af, bf) = (Doubles(ai), Doubles(bi));
                var d = new double[outDim * inDim];                 // s_i B_i A_i [Out,In]
                for (int i = 0; i < outDim; i++)
                    for (int t = 0; t < r; t++) TaskArithmetic.Axpy(d.AsSpan(i * inDim, inDim), s * bf[i * r + t], af.AsSpan(t * inDim, inDim));
                return d;
            }).ToList();
            var weights = present.Select(x => x.Weight).ToArray();
            (us, vh) = TruncatedSvd.OfDense(Merge(core, deltas, weights, options, rng), outDim, inDim, k);
        }
        if (options.SvdClamp is { } q)
        {
            double high = Quantile([.. us, .. vh], q), low = -high;
            for (int i = 0; i < us.Length; i++) us[i] = Math.Min(Math.Max(us[i], low), high);
            for (int i = 0; i < vh.Length; i++) vh[i] = Math.Min(Math.Max(vh[i], low), high);
        }
        var a = new double[rank * inDim];
        var b = new double[outDim * rank];
        vh.CopyTo(a, 0);
        for (int i = 0; i < outDim; i++)
            for (int x = 0; x < k; x++) b[i * rank + x] = us[i * k + x];
        return (a, b);
    }

    private static double[] Merge(string core, IReadOnlyList<double[]> tensors, double[] weights, CombinationOptions options, SplitMix64 rng)
    {
        var sign = options.MajoritySign ?? MajoritySignMethod.Total;
        return core switch
        {
            "linear" => TaskArithmetic.Linear(tensors, weights),
            "ties" => TaskArithmetic.Ties(tensors, weights, options.Density!.Value, sign),
            "dare_linear" => TaskArithmetic.DareLinear(tensors, weights, options.Density!.Value, rng),
            "dare_ties" => TaskArithmetic.DareTies(tensors, weights, options.Density!.Value, sign, rng),
            "magnitude_prune" => TaskArithmetic.MagnitudePrune(tensors, weights, options.Density!.Value),
            _ => throw new TemperException($"unknown combination type '{core}'"),
        };
    }

    /// <summary>torch.quantile(values, q): linear interpolation between the sorted values at q (n - 1).</summary>
    internal static double Quantile(double[] values, double q)
    {
        var sorted = (double[])values.Clone();
        Array.Sort(sorted);
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
    }
}
