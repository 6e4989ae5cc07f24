// LoRA initialisations beside PEFT's default (LoraInit: A kaiming-uniform, B = 0), as PEFT's init_lora_weights names them:
//   gaussian  A ~ N(0, 1/r), B = 0 (seeded; not torch's draws)
//   olora     OLoRA (Büyükakyüz 2024): B = the orthonormalised first r columns of W, A = B^T W (the first r rows of W's
//             QR), the base keeping W - s B A likewise
//   pissa     PiSSA (Meng et al. 2024): each adapted projection's top-r singular triplets of W [Out,In] become the
//             adapter, A = sqrt(S_r / s) Vh_r [r,In] and B = U_r sqrt(S_r / s) [Out,r] (s the LoRA scale), and the base
//             keeps the residual W - s B A, so the model starts equal to the base and trains its principal directions.
//             The SVD is TruncatedSvd.OfDense (seeded subspace iteration, so a resumed run rebuilds the same start);
//             pissa_niter_N runs N iterations only (PEFT's fast SVD), much quicker on large weights, approximate.
// A PiSSA or OLoRA run changes the base it trains over, so it is saved as PEFT saves one converted for the original base
// (path_initial_model_for_weight_conversion): a rank-2r LoRA with A = [A_t; A_0], B = [B_t | -B_0] and lora_alpha
// doubled (times sqrt 2 with rsLoRA), whose s (B_t A_t - B_0 A_0) is exactly the change the run made.
using Temper.Core;
using Temper.Models;

namespace Temper.Training.Lora;

public static class LoraInitMethods
{
    public const string Default = "default", Gaussian = "gaussian", Pissa = "pissa", Olora = "olora";

    /// <summary>Whether the method rewrites the base weights (PiSSA, OLoRA), so the run's save is converted.</summary>
    public static bool ChangesBase(string method) => method is Olora || method.StartsWith(Pissa, StringComparison.Ordinal);

    /// <summary>default, gaussian, pissa, pissa_niter_N (N >= 1: PiSSA from N subspace iterations, PEFT's fast SVD) or olora.</summary>
    public static string Parse(string s)
    {
        string v = s.ToLowerInvariant();
        if (v.StartsWith("pissa_niter_", StringComparison.Ordinal))
            return int.TryParse(v["pissa_niter_".Length..], out int n) && n >= 1 ? v
                : throw new TemperException($"--lora-init {s}: pissa_niter_N needs a whole number of iterations N >= 1");
        return v switch
        {
            "default" or "true" => Default,
            Gaussian => Gaussian,
            Pissa => Pissa,
            Olora => Olora,
            _ => throw new TemperException($"--lora-init must be default, gaussian, pissa, pissa_niter_N or olora (got '{s}')"),
        };
    }

    /// <summary>gaussian: A ~ N(0, 1/r) in every view LoraInit attached (B stays 0).</summary>
    public static void ApplyGaussian(ModelWeights w, IBackend be, int seed)
    {
        var rng = new SplitMix64(SplitMix64.Mix((ulong)(uint)seed ^ 0x4741555353UL));
        foreach (var p in w.Projections)
            if (p.Lora is { } l)
            {
                double sd = 1 / (double)l.Rank;
                var a = new float[l.A.Shape.Elements];
                for (int i = 0; i < a.Length; i++) a[i] = (float)(sd * Gaussian01(rng));
                be.CopyInto(Tensor.FromFloats(l.A.Shape, a), l.A);
            }
    }

    /// <summary>
    /// PiSSA or OLoRA: the views' A and B from W (its top-r SVD, or the QR of its first r columns) and W replaced by
    /// W - s B A; returns each projection's initial (A_0, B_0) host copies, for the converted save.
    /// </summary>
    public static Dictionary<string, (float[] A0, float[] B0)> ApplyToBase(ModelWeights w, IBackend be, string method)
    {
        var initial = new Dictionary<string, (float[], float[])>();
        foreach (var p in w.Projections)
        {
            if (p.Lora is not { } l) continue;
            if (l.Magnitude != null) throw new TemperException($"{p.Name}: {method} initialisation is not combined with DoRA (use_dora)");
            int r = l.Rank, m = p.Out, n = p.In;
            var weight = p.WeightValues(be);
            var (a, b) = method == Olora ? OloraFactors(weight, m, n, r) : PissaFactors(weight, m, n, r, l.Scale, Iterations(method));
            for (int i = 0; i < m; i++)                               // W_res = W - s B A
                for (int j = 0; j < n; j++)
                {
                    double acc = 0;
                    for (int k = 0; k < r; k++) acc += (double)b[i * r + k] * a[k * n + j];
                    weight[i * n + j] -= (float)(l.Scale * acc);
                }
            p.ReplaceWeight(be, weight);
            be.CopyInto(Tensor.FromFloats(l.A.Shape, a), l.A);
            be.CopyInto(Tensor.FromFloats(l.B.Shape, b), l.B);
            initial[p.Name] = (a, b);
        }
        return initial;
    }

    // pissa_niter_N: N; pissa: null (iterate until the top r settle).
    private static int? Iterations(string method) => method.StartsWith("pissa_niter_", StringComparison.Ordinal) ? int.Parse(method["pissa_niter_".Length..]) : null;

    // PiSSA: A = sqrt(S_r / s) Vh_r [r,n], B = U_r sqrt(S_r / s) [m,r], from TruncatedSvd's (U S, Vh).
    private static (float[] A, float[] B) PissaFactors(float[] weight, int m, int n, int r, float scale, int? iterations)
    {
        var (us, vh) = TruncatedSvd.OfDense(weight.Select(x => (double)x).ToArray(), m, n, r, iterations);
        var a = new float[r * n];
        var b = new float[m * r];
        for (int k = 0; k < r; k++)
        {
            double sk = 0;
            for (int i = 0; i < m; i++) sk += us[i * r + k] * us[i * r + k];
            sk = Math.Sqrt(sk);                                   // ||U_k S_k|| = S_k
            double root = Math.Sqrt(sk / scale);                  // sqrt(S_k / s)
            for (int j = 0; j < n; j++) a[k * n + j] = (float)(root * vh[k * n + j]);
            for (int i = 0; i < m; i++) b[i * r + k] = sk == 0 ? 0 : (float)(us[i * r + k] / sk * root);
        }
        return (a, b);
    }

    // OLoRA (PEFT's olora_init: Q, R = qr(W); B = Q[:, :r], A = R[:r]): B is the orthonormalised first r columns of W
    // (Gram-Schmidt, twice, in float64) and A = B^T W, the first r rows of R. Column signs may differ from LAPACK's;
    // B A does not depend on them.
    private static (float[] A, float[] B) OloraFactors(float[] weight, int m, int n, int r)
    {
        var q = new double[m * r];
        for (int k = 0; k < r; k++)
        {
            for (int i = 0; i < m; i++) q[i * r + k] = weight[i * n + k];
            for (int pass = 0; pass < 2; pass++)
                for (int c = 0; c < k; c++)
                {
                    double dot = 0;
                    for (int i = 0; i < m; i++) dot += q[i * r + c] * q[i * r + k];
                    for (int i = 0; i < m; i++) q[i * r + k] -= dot * q[i * r + c];
                }
            double norm = 0;
            for (int i = 0; i < m; i++) norm += q[i * r + k] * q[i * r + k];
            norm = Math.Sqrt(norm);
            for (int i = 0; i < m; i++) q[i * r + k] = norm == 0 ? 0 : q[i * r + k] / norm;
        }
        var a = new float[r * n];
        for (int k = 0; k < r; k++)
            for (int j = 0; j < n; j++)
            {
                double acc = 0;
                for (int i = 0; i < m; i++) acc += q[i * r + k] * weight[i * n + j];
                a[k * n + j] = (float)acc;
            }
        return (a, q.Select(x => (float)x).ToArray());
    }

    /// <summary>The converted adapter's modules: per trained view, A = [A_t; A_0] [2r,In] and B = [B_t | -B_0] [Out,2r].</summary>
    public static List<(string Module, Tensor A, Tensor B, Tensor? Magnitude)> Converted(ModelWeights w, IBackend be, IReadOnlyDictionary<string, (float[] A0, float[] B0)> initial)
    {
        var modules = new List<(string, Tensor, Tensor, Tensor?)>();
        foreach (var p in w.Projections)
        {
            if (p.Lora is not { } l || !initial.TryGetValue(p.Name, out var init)) continue;
            int r = l.Rank, m = p.Out, n = p.In;
            float[] Host(Tensor t)
            {
                using var copy = t.IsHost ? null : be.ToHost(t);
                return (copy ?? t).ToFloatArray();
            }
            var at = Host(l.A);
            var bt = Host(l.B);
            var a = new float[2 * r * n];
            at.CopyTo(a, 0);
            init.A0.CopyTo(a, r * n);
            var b = new float[m * 2 * r];
            for (int i = 0; i < m; i++)
                for (int k = 0; k < r; k++)
                {
                    b[i * 2 * r + k] = bt[i * r + k];
                    b[i * 2 * r + r + k] = -init.B0[i * r + k];
                }
            modules.Add((p.Name, Tensor.FromFloats(new Shape(2 * r, n), a), Tensor.FromFloats(new Shape(m, 2 * r), b), null));
        }
        return modules;
    }

    // Box-Muller from two uniforms in (0, 1].
    private static double Gaussian01(SplitMix64 rng)
    {
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }
}
