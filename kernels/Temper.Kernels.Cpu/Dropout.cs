// Inverted dropout over a flat f32 tensor of any shape: y[i] = keep(i) ? x[i] * 1/(1-p) : 0, y may
// alias x. keep(i) uses element i's own draw, SplitMix64's counter form: Mix(seed + (i+1) * golden),
// its top 24 bits against threshold = p * 2^24, so every element is independent of the others, of the
// thread split and of the backend; applying the op to dy with the same seed is the backward.
using Temper.Core;

namespace Temper.Kernels.Cpu;

public static class Dropout
{
    public const ulong Golden = 0x9E3779B97F4A7C15UL;

    /// <summary>The integer threshold of p: an element is dropped when its 24-bit draw is below it.</summary>
    public static uint Threshold(float p)
    {
        if (!(p >= 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "dropout probability must be in [0, 1)");
        return (uint)Math.Ceiling(p * (double)(1 << 24));
    }

    public static void Forward(ReadOnlySpan<float> x, Span<float> y, ulong seed, float p)
    {
        if (x.Length != y.Length) throw new ArgumentException($"Dropout: x has {x.Length} values, y {y.Length}");
        uint threshold = Threshold(p);
        float scale = 1f / (1f - p);
        ulong state = seed;
        for (int i = 0; i < x.Length; i++)
        {
            state += Golden;
            y[i] = (uint)(SplitMix64.Mix(state) >> 40) >= threshold ? x[i] * scale : 0f;
        }
    }
}
