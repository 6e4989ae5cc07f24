// Log-softmax over the last axis of x[N,V]: y = x - max - log(sum exp(x - max)), one thread per row.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class LogSoftmax
{
    public static void Kernel(Index1D n, ArrayView<float> x, ArrayView<float> y, int v)
    {
        int o = n * v;
        float max = float.NegativeInfinity;
        for (int j = 0; j < v; j++) max = IntrinsicMath.Max(max, x[o + j]);
        float sum = 0;
        for (int j = 0; j < v; j++) sum += MathF.Exp(x[o + j] - max);
        float logSum = MathF.Log(sum);
        for (int j = 0; j < v; j++) y[o + j] = x[o + j] - max - logSum;
    }

    public static void Forward(DeviceContext dc, ArrayView<float> x, ArrayView<float> y, int rows, int v)
    {
        if (rows == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, int>>("logsoftmax", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(Kernel))(rows, x, y, v);
    }
}
