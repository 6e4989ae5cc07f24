// Residual add: y = a + b elementwise (y may alias a), one thread per element.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class Add
{
    public static void Kernel(Index1D i, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y) => y[i] = a[i] + b[i];

    public static void Forward(DeviceContext dc, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, int n)
    {
        if (n == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>>("add", acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(Kernel))
            (n, a, b, y);
    }
}
