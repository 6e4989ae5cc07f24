// RoPE inverse frequencies for one head size, with the scaling variants HF supports that Temper
// implements: default, linear (positions divided by a factor) and llama3 (per-frequency smoothing).
// angle(pos, i) = pos * InvFreq[i] in f32, as transformers computes it; AttentionScaling multiplies
// cos and sin (1 for these types).
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
}
