// RoPE, the oracle (HF rotate_half layout): x[N,H,D] rotated in place. For row n at position p and
// i < D/2, with angle = p * invFreq[i] as an f32 product (as torch computes it) and
// c = cos(angle) * scaling, s = sin(angle) * scaling:
//   x'[i] = x[i] c - x[i + D/2] s,   x'[i + D/2] = x[i + D/2] c + x[i] s.
// The backward rotation (sign = -1) uses -s.
namespace Temper.Kernels.Cpu.Reference;

public static class RopeReference
{
    public static void Forward(Span<float> x, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scaling, int heads, float sign = 1f)
    {
        int half = invFreq.Length, d = 2 * half;
        for (int n = 0; n < positions.Length; n++)
        {
            for (int i = 0; i < half; i++)
            {
                float angle = positions[n] * invFreq[i];
                float c = MathF.Cos(angle) * scaling;
                float s = sign * (MathF.Sin(angle) * scaling);
                for (int h = 0; h < heads; h++)
                {
                    int o = (n * heads + h) * d;
                    float x1 = x[o + i], x2 = x[o + i + half];
                    x[o + i] = x1 * c - x2 * s;
                    x[o + i + half] = x2 * c + x1 * s;
                }
            }
        }
    }

    /// <summary>The transpose of the rotation: dx rotated by minus the angles.</summary>
    public static void Backward(Span<float> dx, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scaling, int heads) =>
        Forward(dx, positions, invFreq, scaling, heads, sign: -1f);
}
