// The speculative sampling rule (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
// Decoding"; Chen et al. 2023): a token x drawn from the proposal q is kept with probability min(1, p(x)/q(x)),
// and on rejection the replacement is drawn from normalize(max(0, p - q)). The kept-or-replaced token is then
// distributed exactly as p. A deterministic proposer (prompt lookup, a greedy draft) has q one-hot at x: x is
// kept with probability p(x), and the residual is p with x removed. p and q are rows [V].
namespace Temper.Models.Speculative;

public static class SpeculativeSampling
{
    /// <summary>Whether x is kept, for a uniform draw u in [0, 1): u &lt; p(x)/q(x), q empty meaning one-hot at x.</summary>
    public static bool Accept(ReadOnlySpan<float> p, ReadOnlySpan<float> q, int x, double u) =>
        q.IsEmpty ? u < p[x] : u * q[x] < p[x];

    /// <summary>
    /// The distribution to draw from after x was rejected: normalize(max(0, p - q)) into <paramref name="residual"/> [V]
    /// (q empty: one-hot at x). Where rounding leaves nothing (p = q), p itself.
    /// </summary>
    public static void Residual(ReadOnlySpan<float> p, ReadOnlySpan<float> q, int x, Span<float> residual)
    {
        double sum = 0;
        for (int i = 0; i < p.Length; i++)
        {
            float r = q.IsEmpty ? (i == x ? Math.Max(0f, p[i] - 1f) : p[i]) : Math.Max(0f, p[i] - q[i]);
            residual[i] = r;
            sum += r;
        }
        if (!(sum > 0))
        {
            p.CopyTo(residual);
            return;
        }
        for (int i = 0; i < p.Length; i++) residual[i] = (float)(residual[i] / sum);
    }
}
