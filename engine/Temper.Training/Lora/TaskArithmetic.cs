// The task-arithmetic merges PEFT's add_weighted_adapter is built from (peft/utils/merge_utils.py), over "task
// tensors": n flat arrays of one shape (the adapters' lora_A [r,In] or lora_B [Out,r], or their dense deltas
// [Out,In], row-major) with one weight each; every merge returns one array of that shape.
//   linear           sum_t w_t x_t                                   (PEFT's task_arithmetic)
//   magnitude_prune  sum_t w_t prune_magnitude(x_t)
//   ties             disjoint_merge(w_t prune_magnitude(x_t)) under the majority sign of the pruned, UNweighted x_t
//   dare_linear      sum_t w_t prune_random(x_t) / density
//   dare_ties        disjoint_merge(w_t prune_random(x_t) / density) under their (unweighted) majority sign
// As PEFT does: a density >= 1 prunes nothing (and DARE then does not rescale); magnitude pruning keeps the
// k = floor(density * numel) largest |x| (torch.topk; at equal |x| Temper keeps the lower index, torch's pick is
// unspecified); the majority sign of an element is +1 when the sum of the values ("total") or of their signs
// ("frequency") is >= 0, else -1; the disjoint merge sums the weighted values whose own sign is the majority's
// (a zero never counts) and divides by how many there were (at least 1). The sign is elected on the unweighted
// tensors, so a negative weight does not flip the vote, it only flips what the elected entries add.
// DARE's masks are Bernoulli(density) per element, drawn from Temper's SplitMix64 in row-major order (PEFT
// draws them from torch's RNG, which cannot be reproduced): one seed gives one result, on any machine.
using System.Numerics;
using Temper.Core;

namespace Temper.Training.Lora;

public enum MajoritySignMethod { Total, Frequency }

public static class TaskArithmetic
{
    /// <summary>PEFT's task_arithmetic: sum_t w_t x_t.</summary>
    public static double[] Linear(IReadOnlyList<double[]> tensors, IReadOnlyList<double> weights) => WeightedSum(tensors, weights);

    /// <summary>PEFT's magnitude_prune: each tensor pruned to its largest |x|, then the weighted sum.</summary>
    public static double[] MagnitudePrune(IReadOnlyList<double[]> tensors, IReadOnlyList<double> weights, double density) =>
        WeightedSum([.. tensors.Select(t => PruneByMagnitude(t, density))], weights);

    /// <summary>PEFT's ties: magnitude pruning, sign election, disjoint merge.</summary>
    public static double[] Ties(IReadOnlyList<double[]> tensors, IReadOnlyList<double> weights, double density, MajoritySignMethod method) =>
        ElectAndMerge([.. tensors.Select(t => PruneByMagnitude(t, density))], weights, method);

    /// <summary>PEFT's dare_linear: random pruning with rescale, then the weighted sum.</summary>
    public static double[] DareLinear(IReadOnlyList<double[]> tensors, IReadOnlyList<double> weights, double density, SplitMix64 rng) =>
        WeightedSum([.. tensors.Select(t => PruneAtRandom(t, density, rng))], weights);

    /// <summary>PEFT's dare_ties: random pruning with rescale, sign election, disjoint merge.</summary>
    public static double[] DareTies(IReadOnlyList<double[]> tensors, IReadOnlyList<double> weights, double density, MajoritySignMethod method, SplitMix64 rng) =>
        ElectAndMerge([.. tensors.Select(t => PruneAtRandom(t, density, rng))], weights, method);

    /// <summary>PEFT's magnitude_based_pruning: zeros all but the k = floor(density * n) largest |x| (density >= 1: unchanged).</summary>
    public static double[] PruneByMagnitude(double[] x, double density)
    {
        if (density >= 1) return x;
        int k = (int)(density * x.Length);
        var result = new double[x.Length];
        if (k == 0) return result;
        var magnitudes = new double[x.Length];
        for (int i = 0; i < x.Length; i++) magnitudes[i] = Math.Abs(x[i]);
        double threshold = Select(magnitudes, x.Length - k);
        int ties = k;
        for (int i = 0; i < x.Length; i++)
            if (Math.Abs(x[i]) > threshold) { result[i] = x[i]; ties--; }
        for (int i = 0; i < x.Length && ties > 0; i++)
            if (Math.Abs(x[i]) == threshold) { result[i] = x[i]; ties--; }
        return result;
    }

    /// <summary>The value at <paramref name="index"/> of v sorted ascending (quickselect; v is reordered): O(n), where a
    /// sort of a dense 8192 x 2048 delta takes seconds.</summary>
    internal static double Select(double[] v, int index)
    {
        int lo = 0, hi = v.Length - 1;
        while (lo < hi)
        {
            double a = v[lo], b = v[(lo + hi) >>> 1], c = v[hi];
            double pivot = Math.Max(Math.Min(a, b), Math.Min(Math.Max(a, b), c));   // median of three
            int i = lo, j = hi;
            while (i <= j)
            {
                while (v[i] < pivot) i++;
                while (v[j] > pivot) j--;
                if (i <= j) { (v[i], v[j]) = (v[j], v[i]); i++; j--; }
            }
            if (index <= j) hi = j;                 // v[lo..j] <= pivot <= v[i..hi], and v[j+1..i-1] == pivot
            else if (index >= i) lo = i;
            else return v[index];
        }
        return v[index];
    }

    /// <summary>PEFT's random_pruning with rescale: each x kept with probability density (one draw per element,
    /// in order) and divided by density (density >= 1: unchanged, no draws).</summary>
    public static double[] PruneAtRandom(double[] x, double density, SplitMix64 rng)
    {
        if (density >= 1) return x;
        var result = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
            if (rng.NextDouble() < density) result[i] = x[i] / density;
        return result;
    }

    /// <summary>PEFT's calculate_majority_sign_mask: mask[t][e] = sign(x_t[e]) == the elected sign of element e.</summary>
    public static bool[][] MajoritySignMask(IReadOnlyList<double[]> tensorList, MajoritySignMethod method)
    {
        var tensors = tensorList.ToArray();
        int n = tensors[0].Length;
        var mask = tensors.Select(_ => new bool[n]).ToArray();
        for (int e = 0; e < n; e++)
        {
            double vote = 0;
            for (int t = 0; t < tensors.Length; t++) vote += method == MajoritySignMethod.Total ? tensors[t][e] : Math.Sign(tensors[t][e]);
            int elected = vote >= 0 ? 1 : -1;
            for (int t = 0; t < tensors.Length; t++) mask[t][e] = Math.Sign(tensors[t][e]) == elected;
        }
        return mask;
    }

    /// <summary>PEFT's disjoint_merge: per element, the sum of the masked values over how many there are (at least 1).</summary>
    public static double[] DisjointMerge(IReadOnlyList<double[]> weightedList, bool[][] mask)
    {
        var weighted = weightedList.ToArray();
        var result = new double[weighted[0].Length];
        for (int e = 0; e < result.Length; e++)
        {
            double sum = 0;
            int kept = 0;
            for (int t = 0; t < weighted.Length; t++)
                if (mask[t][e]) { sum += weighted[t][e]; kept++; }
            result[e] = sum / Math.Max(kept, 1);
        }
        return result;
    }

    private static double[] ElectAndMerge(double[][] pruned, IReadOnlyList<double> weights, MajoritySignMethod method)
    {
        var mask = MajoritySignMask(pruned, method);
        return DisjointMerge([.. pruned.Select((x, t) => Scaled(x, weights[t]))], mask);
    }

    private static double[] WeightedSum(IReadOnlyList<double[]> tensors, IReadOnlyList<double> weights)
    {
        var sum = new double[tensors[0].Length];
        for (int t = 0; t < tensors.Count; t++) Axpy(sum, weights[t], tensors[t]);
        return sum;
    }

    private static double[] Scaled(double[] x, double w)
    {
        var y = new double[x.Length];
        Axpy(y, w, x);
        return y;
    }

    /// <summary>y += a x.</summary>
    internal static void Axpy(Span<double> y, double a, ReadOnlySpan<double> x)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var va = new Vector<double>(a);
            for (; i <= y.Length - Vector<double>.Count; i += Vector<double>.Count)
                (new Vector<double>(y[i..]) + va * new Vector<double>(x[i..])).CopyTo(y[i..]);
        }
        for (; i < y.Length; i++) y[i] += a * x[i];
    }
}
