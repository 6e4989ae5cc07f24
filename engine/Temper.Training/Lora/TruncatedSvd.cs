// The rank-k truncated SVD the SVD combinations need, in float64: M [m,n] ~ U_k S_k Vh_k, returned as PEFT's
// add_weighted_adapter stores it, B = U_k S_k [m,k] and A = Vh_k [k,n], so B A is the best rank-k approximation
// of M. Two ways in:
//   OfProduct(B [m,p], A [p,n]): M = B A already low rank (the plain "svd" type: the deltas' factors stacked);
//     exact: B = Q R (Gram-Schmidt, twice), then the SVD of the small R A [p,n].
//   OfDense(M [m,n]): a dense M (the pruned types); block subspace iteration (Halko, Martinsson & Tropp 2011,
//     alg. 4.4) on l = min(2k + 10, m, n) seeded random vectors, re-orthonormalised each half-step, until the
//     top k Ritz values change by under 1e-12 of the largest (at most 60 rounds), then the SVD of Q^T M [l,n].
//     When l reaches min(m, n) the subspace is the whole range and the result is exact; otherwise it converges
//     at (s_{l+1}/s_k)^2 per round: at real sizes (8192 x 2048, k 16) a round is two products of 8192*2048*42.
// The small SVDs are one-sided Jacobi (Hestenes) on the rows. Singular vectors are only defined up to sign (and
// rotation within equal singular values): Temper makes the largest |entry| of each row of A positive; torch's
// signs depend on its LAPACK driver. B A does not depend on that choice, a clamp on the values (svd_clamp) can.
// Where k exceeds min(m, n) the extra rows of A and columns of B are zero.
using System.Numerics;
using Temper.Core;

namespace Temper.Training.Lora;

public static class TruncatedSvd
{
    /// <summary>Rank-k SVD of the product b [m,p] times a [p,n]: (B = U S [m,k], A = Vh [k,n]).</summary>
    public static (double[] B, double[] A) OfProduct(double[] b, double[] a, int m, int p, int n, int k)
    {
        var q = (double[])b.Clone();
        var r = Orthonormalize(q, m, p);                     // b = q [m,p] r [p,p]
        var core = Multiply(r, a, p, p, n);                  // [p,n]
        return FromSubspace(q, core, m, p, n, k);
    }

    /// <summary>Rank-k SVD of a dense m [rows,cols] (row-major): (B = U S [rows,k], A = Vh [k,cols]). With
    /// <paramref name="rounds"/> the iteration runs exactly that many rounds, without the convergence test (torch's
    /// svd_lowrank niter, as PEFT's pissa_niter_N asks; faster, approximate where the spectrum is flat).</summary>
    public static (double[] B, double[] A) OfDense(double[] mat, int m, int n, int k, int? rounds = null)
    {
        int l = Math.Min(2 * k + 10, Math.Min(m, n));
        var rng = new SplitMix64(0x5EED5u);
        var z = new double[n * l];                            // [n,l]
        for (int i = 0; i < z.Length; i++) z[i] = rng.NextDouble() - 0.5;
        var q = new double[m * l];                            // [m,l]
        double[] previous = [];
        for (int round = 0; ; round++)
        {
            MultiplyInto(mat, z, q, m, n, l);                 // q = M z
            Orthonormalize(q, m, l);
            MultiplyTransposedInto(mat, q, z, m, n, l);       // z = M^T q = (Q^T M)^T
            if (rounds is int fixedRounds)
            {
                if (round + 1 >= fixedRounds || l == Math.Min(m, n)) return FromSubspace(q, Transpose(z, n, l), m, l, n, k);
                Orthonormalize(z, n, l);
                continue;
            }
            var ritz = SingularValues(Transpose(z, n, l), l, n);
            bool converged = previous.Length > 0 && Enumerable.Range(0, Math.Min(k, l)).All(i => Math.Abs(ritz[i] - previous[i]) <= 1e-12 * ritz[0]);
            if (converged || round == 59 || l == Math.Min(m, n)) return FromSubspace(q, Transpose(z, n, l), m, l, n, k);
            previous = ritz;
            Orthonormalize(z, n, l);
        }
    }

    // M ~ q [m,l] c [l,n] with orthonormal columns of q: the SVD of c gives M's top k triples.
    private static (double[] B, double[] A) FromSubspace(double[] q, double[] c, int m, int l, int n, int k)
    {
        var (w, s, vh) = RowSvd(c, l, n);                     // c = w [l,l] diag(s) vh [l,n], s descending
        var b = new double[m * k];
        var a = new double[k * n];
        for (int j = 0; j < Math.Min(k, l); j++)
        {
            int big = 0;
            for (int x = 1; x < n; x++) if (Math.Abs(vh[j * n + x]) > Math.Abs(vh[j * n + big])) big = x;
            double sign = vh[j * n + big] < 0 ? -1 : 1;
            for (int x = 0; x < n; x++) a[j * n + x] = sign * vh[j * n + x];
            for (int i = 0; i < m; i++)
            {
                double u = 0;
                for (int t = 0; t < l; t++) u += q[i * l + t] * w[t * l + j];
                b[i * k + j] = sign * s[j] * u;
            }
        }
        return (b, a);
    }

    /// <summary>SVD of c [p,n] by one-sided Jacobi on its rows: (w [p,p], s [p] descending, vh [p,n]) with c = w diag(s) vh.</summary>
    internal static (double[] W, double[] S, double[] Vh) RowSvd(double[] c, int p, int n)
    {
        var rows = (double[])c.Clone();
        var g = new double[p * p];                            // the accumulated rotation: rows = g c
        for (int i = 0; i < p; i++) g[i * p + i] = 1;
        for (int sweep = 0; sweep < 60; sweep++)
        {
            bool rotated = false;
            for (int i = 0; i < p - 1; i++)
                for (int j = i + 1; j < p; j++)
                {
                    var ri = rows.AsSpan(i * n, n);
                    var rj = rows.AsSpan(j * n, n);
                    double alpha = Dot(ri, ri), beta = Dot(rj, rj), gamma = Dot(ri, rj);
                    if (Math.Abs(gamma) <= 1e-14 * Math.Sqrt(alpha * beta) || gamma == 0) continue;
                    rotated = true;
                    double zeta = (beta - alpha) / (2 * gamma);
                    double t = Math.Sign(zeta == 0 ? 1 : zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    double cs = 1 / Math.Sqrt(1 + t * t), sn = cs * t;
                    Rotate(ri, rj, cs, sn);
                    Rotate(g.AsSpan(i * p, p), g.AsSpan(j * p, p), cs, sn);
                }
            if (!rotated) break;
        }
        var norms = Enumerable.Range(0, p).Select(i => Math.Sqrt(Dot(rows.AsSpan(i * n, n), rows.AsSpan(i * n, n)))).ToArray();
        var order = Enumerable.Range(0, p).OrderByDescending(i => norms[i]).ThenBy(i => i).ToArray();
        var w = new double[p * p];
        var s = new double[p];
        var vh = new double[p * n];
        for (int j = 0; j < p; j++)
        {
            int src = order[j];
            s[j] = norms[src];
            for (int t = 0; t < p; t++) w[t * p + j] = g[src * p + t];   // c = g^T rows: column j of w is row src of g
            if (s[j] > 0)
                for (int x = 0; x < n; x++) vh[j * n + x] = rows[src * n + x] / s[j];
        }
        return (w, s, vh);
    }

    private static double[] SingularValues(double[] c, int p, int n) => RowSvd(c, p, n).S;

    // ri, rj <- c ri - s rj, s ri + c rj.
    private static void Rotate(Span<double> ri, Span<double> rj, double c, double s)
    {
        for (int x = 0; x < ri.Length; x++)
        {
            double a = ri[x], b = rj[x];
            ri[x] = c * a - s * b;
            rj[x] = s * a + c * b;
        }
    }

    /// <summary>Orthonormalises the columns of q [m,l] in place (classical Gram-Schmidt, twice) and returns r [l,l]
    /// with q_in = q r; a column that is (numerically) in the span of the earlier ones becomes zero.</summary>
    internal static double[] Orthonormalize(double[] q, int m, int l)
    {
        var r = new double[l * l];
        var col = new double[m];
        var other = new double[m];
        for (int j = 0; j < l; j++)
        {
            for (int i = 0; i < m; i++) col[i] = q[i * l + j];
            double original = Math.Sqrt(Dot(col, col));
            for (int pass = 0; pass < 2; pass++)
                for (int t = 0; t < j; t++)
                {
                    for (int i = 0; i < m; i++) other[i] = q[i * l + t];
                    double proj = Dot(other, col);
                    r[t * l + j] += proj;
                    TaskArithmetic.Axpy(col, -proj, other);
                }
            double norm = Math.Sqrt(Dot(col, col));
            bool dependent = norm <= 1e-13 * original || norm == 0;
            r[j * l + j] = dependent ? 0 : norm;
            for (int i = 0; i < m; i++) q[i * l + j] = dependent ? 0 : col[i] / norm;
        }
        return r;
    }

    // out [m,l] = mat [m,n] z [n,l], rows in parallel.
    private static void MultiplyInto(double[] mat, double[] z, double[] result, int m, int n, int l) =>
        Parallel.For(0, m, i =>
        {
            var row = result.AsSpan(i * l, l);
            row.Clear();
            for (int j = 0; j < n; j++)
            {
                double v = mat[(long)i * n + j];
                if (v != 0) TaskArithmetic.Axpy(row, v, z.AsSpan(j * l, l));
            }
        });

    // out [n,l] = mat^T [n,m] q [m,l], blocks of 256 output rows in parallel.
    private static void MultiplyTransposedInto(double[] mat, double[] q, double[] result, int m, int n, int l) =>
        Parallel.For(0, (n + 255) / 256, block =>
        {
            int from = block * 256, to = Math.Min(n, from + 256);
            result.AsSpan(from * l, (to - from) * l).Clear();
            for (int i = 0; i < m; i++)
            {
                var qi = q.AsSpan(i * l, l);
                for (int j = from; j < to; j++)
                {
                    double v = mat[(long)i * n + j];
                    if (v != 0) TaskArithmetic.Axpy(result.AsSpan(j * l, l), v, qi);
                }
            }
        });

    private static double[] Multiply(double[] a, double[] b, int m, int p, int n)
    {
        var c = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int t = 0; t < p; t++)
                if (a[i * p + t] != 0) TaskArithmetic.Axpy(c.AsSpan(i * n, n), a[i * p + t], b.AsSpan(t * n, n));
        return c;
    }

    private static double[] Transpose(double[] x, int rows, int cols)
    {
        var t = new double[x.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = x[i * cols + j];
        return t;
    }

    private static double Dot(ReadOnlySpan<double> x, ReadOnlySpan<double> y)
    {
        double sum = 0;
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var acc = Vector<double>.Zero;
            for (; i <= x.Length - Vector<double>.Count; i += Vector<double>.Count) acc += new Vector<double>(x[i..]) * new Vector<double>(y[i..]);
            sum = Vector.Sum(acc);
        }
        for (; i < x.Length; i++) sum += x[i] * y[i];
        return sum;
    }
}
