// Inverted dropout over a flat f32 tensor, one thread per element (y may alias x): element i is kept
// when the top 24 bits of SplitMix64's (i+1)-th output for seed are >= threshold (= ceil(p * 2^24),
// computed on the host), and is then x[i] * scale (= 1/(1-p)). Mix below is SplitMix64.Mix, inlined so
// the kernel compiles on its own; the op-check holds it to the CPU backend bit for bit.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class Dropout
{
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public static void Kernel(Index1D i, ArrayView<float> x, ArrayView<float> y, ulong seed, uint threshold, float scale)
    {
        ulong draw = Mix(seed + ((ulong)(int)i + 1UL) * 0x9E3779B97F4A7C15UL);
        y[i] = (uint)(draw >> 40) >= threshold ? x[i] * scale : 0f;
    }

    public static void Forward(DeviceContext dc, ArrayView<float> x, ArrayView<float> y, ulong seed, uint threshold, float scale, int n)
    {
        if (n == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ulong, uint, float>>("dropout",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ulong, uint, float>(Kernel))(n, x, y, seed, threshold, scale);
    }
}
