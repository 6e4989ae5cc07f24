// Inverted dropout, the oracle: walks a SplitMix64 generator seeded with seed, one draw per element in
// order; element i is kept when the draw's top 24 bits are >= ceil(p * 2^24), and is then x[i] / (1-p).
using Temper.Core;

namespace Temper.Kernels.Cpu.Reference;

public static class DropoutReference
{
    public static void Forward(ReadOnlySpan<float> x, Span<float> y, ulong seed, float p)
    {
        var rng = new SplitMix64(seed);
        double threshold = Math.Ceiling(p * (double)(1 << 24));
        for (int i = 0; i < x.Length; i++)
            y[i] = (rng.Next() >> 40) >= threshold ? x[i] * (1f / (1f - p)) : 0f;
    }
}
