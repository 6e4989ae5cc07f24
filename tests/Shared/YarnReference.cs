// YaRN's inverse frequencies and attention factor in float64, written for the tests straight from
// transformers' _compute_yarn_parameters (modeling_rope_utils.py, late 4.x / 5), apart from
// RopeFrequencies.Yarn (which computes them in f32 as torch does):
//   find_correction_dim(r) = dim ln(original / (r 2 pi)) / (2 ln base)
//   low, high = floor/ceil (when truncate) of find_correction_dim(beta_fast), find_correction_dim(beta_slow),
//               clamped to max(low, 0), min(high, dim - 1)
//   ramp[i]   = clamp((i - low) / (high - low), 0, 1) over i < dim/2 (high += 0.001 when low == high)
//   inv_freq  = inv_interp (1 - extrap_factor) + inv_extrap extrap_factor, extrap_factor = 1 - ramp
//   attention = attention_factor ?? (mscale and mscale_all_dim ? get_mscale(f, mscale) / get_mscale(f, mscale_all_dim) : get_mscale(f))
namespace Temper.Tests;

public static class YarnReference
{
    public static double[] InvFreq(int dim, double theta, double factor, double original, double betaFast = 32, double betaSlow = 1, bool truncate = true)
    {
        double lo = dim * Math.Log(original / (betaFast * 2 * Math.PI)) / (2 * Math.Log(theta));
        double hi = dim * Math.Log(original / (betaSlow * 2 * Math.PI)) / (2 * Math.Log(theta));
        if (truncate) (lo, hi) = (Math.Floor(lo), Math.Ceiling(hi));
        lo = Math.Max(lo, 0);
        hi = Math.Min(hi, dim - 1);
        if (lo == hi) hi += 0.001;
        var r = new double[dim / 2];
        for (int i = 0; i < r.Length; i++)
        {
            double extrapolated = Math.Pow(theta, -2.0 * i / dim);
            double ramp = Math.Min(1, Math.Max(0, (i - lo) / (hi - lo)));
            // ramp 0: the original frequency (extrapolation); ramp 1: divided by the factor (interpolation).
            r[i] = extrapolated * (1 - ramp) + extrapolated / factor * ramp;
        }
        return r;
    }

    public static double AttentionFactor(double factor, double? attentionFactor = null, double? mscale = null, double? mscaleAllDim = null)
    {
        if (attentionFactor is { } a) return a;
        double M(double m) => factor <= 1 ? 1 : 0.1 * m * Math.Log(factor) + 1;
        return mscale is > 0 or < 0 && mscaleAllDim is > 0 or < 0 ? M(mscale.Value) / M(mscaleAllDim.Value) : M(1);
    }
}
