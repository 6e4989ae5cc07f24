// Per-row scale in place: x[N,C] row n *= scales[N][n] (a mixture-of-experts block's routing weights on
// its experts' output rows); each row takes Scale's Vector512/256/128 paths and scalar tail.
namespace Temper.Kernels.Cpu;

public static class ScaleRows
{
    public static void Apply(Span<float> x, ReadOnlySpan<float> scales, int c)
    {
        if (c <= 0 || x.Length != (long)scales.Length * c)
            throw new ArgumentException($"ScaleRows: x has {x.Length} values, {scales.Length} scales for rows of width {c}");
        for (int n = 0; n < scales.Length; n++) Scale.Apply(x.Slice(n * c, c), scales[n]);
    }
}
