// The speculative sampling rule (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
// Decoding"; Chen et al. 2023): a token x drawn from the proposal q is kept with probability min(1, p(x)/q(x)),
// and on rejection the replacement is drawn from normalize(max(0, p - q)). The kept-or-replaced token is then
// distributed exactly as p. p and q are rows [V]. (A deterministic proposer, q one-hot at x, needs no rule of its
// own: comparing x with a plain draw from p keeps x with probability p(x) and otherwise gives p without x;
// SpeculativeDecoding and the serving engine verify prompt lookup so.)
namespace Temper.Models.Speculative;

public static class SpeculativeSampling
{
    /// <summary>Whether x is kept, for a uniform draw u in [0, 1): u &lt; p(x)/q(x).</summary>
    public static bool Accept(ReadOnlySpan<float> p, ReadOnlySpan<float> q, int x, double u) => u * q[x] < p[x];

    /// <summary>
    /// The distribution to draw from after x was rejected: normalize(max(0, p - q)) into <paramref name="residual"/> [V].
    /// Where rounding leaves nothing (p = q), p itself.
    /// </summary>
    public static void Residual(ReadOnlySpan<float> p, ReadOnlySpan<float> q, Span<float> residual)
    {
        double sum = 0;
        for (int i = 0; i < p.Length; i++)
        {
            float r = Math.Max(0f, p[i] - q[i]);
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
