// RoPE inverse frequencies for one head size, with the scaling variants HF supports that Temper
// implements: default, linear (positions divided by a factor), llama3 (per-frequency smoothing) and
// yarn (a per-frequency ramp between the original and the interpolated frequency, plus an attention
// factor). angle(pos, i) = pos * InvFreq[i] in f32, as transformers computes it; AttentionScaling
// multiplies cos and sin (1 except for yarn), wherever cos/sin are made: the CPU table, the ILGPU and
// PTX-route tables, the CUDA decode graph's tables.
namespace Temper.Core;

public sealed class RopeFrequencies
{
    public RopeFrequencies(float[] invFreq, float attentionScaling = 1f)
    {
        InvFreq = invFreq;
        AttentionScaling = attentionScaling;
    }

    /// <summary>[D/2] inverse frequencies.</summary>
    public float[] InvFreq { get; }
    public float AttentionScaling { get; }
    public int HeadDim => InvFreq.Length * 2;

    /// <summary>HF's default: 1 / theta^(2i/D), computed in f64 then narrowed as torch does with int64 arange in f32.</summary>
    public static float[] DefaultInvFreq(int rotaryDim, double theta)
    {
        var r = new float[rotaryDim / 2];
        for (int i = 0; i < r.Length; i++)
        {
            // torch: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)) in f32.
            float exponent = (float)(2 * i) / rotaryDim;
            r[i] = 1f / MathF.Pow((float)theta, exponent);
        }
        return r;
    }

    public static RopeFrequencies Default(int headDim, double theta) => new(DefaultInvFreq(headDim, theta));

    public static RopeFrequencies Linear(int headDim, double theta, double factor)
    {
        var f = DefaultInvFreq(headDim, theta);
        for (int i = 0; i < f.Length; i++) f[i] = (float)(f[i] / factor);
        return new RopeFrequencies(f);
    }

    /// <summary>Llama 3.1's scaling: long wavelengths divided by factor, short kept, the band between smoothed.</summary>
    public static RopeFrequencies Llama3(int headDim, double theta, double factor, double lowFreqFactor, double highFreqFactor, double originalMaxPositions)
    {
        var f = DefaultInvFreq(headDim, theta);
        double lowWavelen = originalMaxPositions / lowFreqFactor;
        double highWavelen = originalMaxPositions / highFreqFactor;
        for (int i = 0; i < f.Length; i++)
        {
            double inv = f[i];
            double wavelen = 2 * Math.PI / inv;
            double scaled = wavelen > lowWavelen ? inv / factor : inv;
            if (wavelen <= lowWavelen && wavelen >= highWavelen)
            {
                double smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                scaled = (1 - smooth) * inv / factor + smooth * inv;
            }
            f[i] = (float)scaled;
        }
        return new RopeFrequencies(f);
    }

    /// <summary>Llama 3 scaling as a divisor of each default frequency, as llama.cpp's rope_freqs tensor holds it (computed
    /// as convert_hf_to_gguf.py does): 1 for wavelengths under original/high, the factor above original/low, smoothed
    /// between. GGUF export writes these; import recognises them.</summary>
    public static float[] Llama3Factors(int headDim, double theta, double factor, double lowFreqFactor, double highFreqFactor, double originalMaxPositions)
    {
        double lowWavelen = originalMaxPositions / lowFreqFactor, highWavelen = originalMaxPositions / highFreqFactor;
        return DefaultInvFreq(headDim, theta).Select(f =>
        {
            double wavelen = 2 * Math.PI / f;
            if (wavelen < highWavelen) return 1f;
            if (wavelen > lowWavelen) return (float)factor;
            double smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
            return (float)(1 / ((1 - smooth) / factor + smooth));
        }).ToArray();
    }

    /// <summary>
    /// YaRN as transformers' _compute_yarn_parameters computes it (late 4.x and 5, which agree): with
    /// pos[i] = theta^(2i/D) in f32, extrapolation 1/pos, interpolation 1/(factor pos), the correction dims
    /// d(b) = D ln(originalMax / (2 pi b)) / (2 ln theta) give low = d(betaFast), high = d(betaSlow)
    /// (floor and ceil when truncate), clamped to [0, D - 1] (D, not D/2, as transformers clamps); with
    /// ramp[i] = clamp((i - low) / (high - low), 0, 1) (high nudged by 0.001 when equal) and e = 1 - ramp,
    /// invFreq = interpolation (1 - e) + extrapolation e, every step in f32 as torch does it. The attention
    /// factor is attentionFactor when given, else mscale(factor, mscale) / mscale(factor, mscaleAllDim)
    /// when both are non-zero, else mscale(factor, 1), with mscale(s, m) = 1 for s &lt;= 1 and
    /// 0.1 m ln s + 1 otherwise.
    /// </summary>
    public static RopeFrequencies Yarn(int headDim, double theta, double factor, double originalMaxPositions, double betaFast = 32, double betaSlow = 1,
        double? attentionFactor = null, double? mscale = null, double? mscaleAllDim = null, bool truncate = true)
    {
        int half = headDim / 2;
        double CorrectionDim(double rotations) => headDim * Math.Log(originalMaxPositions / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
        double low = CorrectionDim(betaFast), high = CorrectionDim(betaSlow);
        if (truncate)
        {
            low = Math.Floor(low);
            high = Math.Ceiling(high);
        }
        low = Math.Max(low, 0);
        high = Math.Min(high, headDim - 1);
        if (low == high) high += 0.001;
        float lowF = (float)low, span = (float)(high - low);
        var f = new float[half];
        for (int i = 0; i < half; i++)
        {
            float pos = MathF.Pow((float)theta, (float)(2 * i) / headDim);
            float extrapolation = 1f / pos, interpolation = 1f / ((float)factor * pos);
            float ramp = Math.Clamp((i - lowF) / span, 0f, 1f);
            float e = 1f - ramp;
            f[i] = interpolation * (1f - e) + extrapolation * e;
        }
        static double Mscale(double scale, double m) => scale <= 1 ? 1.0 : 0.1 * m * Math.Log(scale) + 1.0;
        double attention = attentionFactor
            ?? (mscale is { } m1 && m1 != 0 && mscaleAllDim is { } m2 && m2 != 0 ? Mscale(factor, m1) / Mscale(factor, m2) : Mscale(factor, 1));
        return new RopeFrequencies(f, (float)attention);
    }
}
