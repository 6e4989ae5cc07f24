// Per-row scale in place: x[N,C] row n *= scales[N][n], one thread per element (the scales uploaded
// through the arena, as Embedding's ids are).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class ScaleRows
{
    public static void Kernel(Index1D i, ArrayView<float> x, ArrayView<float> scales, int c) => x[i] *= scales[i / c];

    public static void Apply(DeviceContext dc, ArrayView<float> x, ReadOnlySpan<float> scales, int c)
    {
        if ((long)scales.Length * c == 0) return;
        var dScales = dc.Arena.Upload(scales);
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, int>>("scale.rows", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(Kernel))
            (scales.Length * c, x, dScales, c);
    }
}
