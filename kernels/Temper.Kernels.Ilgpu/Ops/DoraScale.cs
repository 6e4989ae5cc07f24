// DoRA's magnitude scale. With g[M] = magnitude[M] / norm[M] (the norm detached, DoRA §4.3):
//   Forward            y[N,M] = g * z[N,M] + bias[M] (y may alias z), one thread per element
//   MagnitudeBackward  dMagnitude[M] += (sum_n dy[n,j] z[n,j]) / norm[j], one thread per column (rows in order, f32)
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class DoraScale
{
    public static void ForwardKernel(Index1D i, ArrayView<float> z, ArrayView<float> magnitude, ArrayView<float> norm, ArrayView<float> bias, ArrayView<float> y, int m, int hasBias)
    {
        int j = i % m;
        float g = magnitude[j] / norm[j];
        y[i] = z[i] * g + (hasBias != 0 ? bias[j] : 0f);
    }

    public static void MagnitudeBackwardKernel(Index1D j, ArrayView<float> dy, ArrayView<float> z, ArrayView<float> norm, ArrayView<float> dMagnitude, int n, int m)
    {
        float sum = 0;
        for (int i = 0; i < n; i++) sum += dy[i * m + j] * z[i * m + j];
        dMagnitude[j] += sum / norm[j];
    }

    public static void Forward(DeviceContext dc, ArrayView<float> z, ArrayView<float> magnitude, ArrayView<float> norm, ArrayView<float>? bias, ArrayView<float> y, int n, int m)
    {
        if ((long)n * m == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>>("dora.scale",
            acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(ForwardKernel))
            (n * m, z, magnitude, norm, bias ?? magnitude, y, m, bias.HasValue ? 1 : 0);
    }

    public static void MagnitudeBackward(DeviceContext dc, ArrayView<float> dy, ArrayView<float> z, ArrayView<float> norm, ArrayView<float> dMagnitude, int n, int m)
    {
        if (m == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>>("dora.magnitude.bwd",
            acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(MagnitudeBackwardKernel))
            (m, dy, z, norm, dMagnitude, n, m);
    }
}
