// Per-row scale in place, the oracle: x[n, j] *= scales[n] for x [N,C], scales [N].
namespace Temper.Kernels.Cpu.Reference;

public static class ScaleRowsReference
{
    public static void Apply(Span<float> x, ReadOnlySpan<float> scales, int c)
    {
        for (int n = 0; n < scales.Length; n++)
            for (int j = 0; j < c; j++)
                x[n * c + j] *= scales[n];
    }
}
