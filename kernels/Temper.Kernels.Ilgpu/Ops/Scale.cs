// In-place scale: x *= s, one thread per element.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class Scale
{
    public static void Kernel(Index1D i, ArrayView<float> x, float s) => x[i] *= s;

    public static void Apply(DeviceContext dc, ArrayView<float> x, float s, int n)
    {
        if (n == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<float>, float>>("scale", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, float>(Kernel))(n, x, s);
    }
}
