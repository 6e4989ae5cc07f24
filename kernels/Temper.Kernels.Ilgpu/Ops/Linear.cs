// Linear: y[N,M] = x[N,K] w[M,K]^T + bias[M] (w f32 or bf16), or y += that when accumulating.
// Backward: dx[N,K] = dy w (or +=), dWeight[M,K] += dy^T x, dBias[M] += sum_n dy (one thread per
// column, rows in order). The products are Gemm's kernels.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class Linear
{
    public static void BiasGradKernel(Index1D j, ArrayView<float> dy, ArrayView<float> dBias, int rows, int m)
    {
        float sum = 0;
        for (int n = 0; n < rows; n++) sum += dy[n * m + j];
        dBias[j] += sum;
    }

    public static void Forward(DeviceContext dc, ArrayView<float> x, WeightView w, ArrayView<float>? bias, ArrayView<float> y, int n, int k, int m, bool accumulate) =>
        Gemm.NT(dc, x, w, bias, y, n, k, m, 1f, accumulate);

    public static void Backward(DeviceContext dc, ArrayView<float> dy, ArrayView<float> x, WeightView w, ArrayView<float>? dx, ArrayView<float>? dWeight, ArrayView<float>? dBias,
        int n, int k, int m, bool accumulateDx)
    {
        if (dWeight is { } dw) Gemm.TN(dc, dy, x, dw, n, k, m, 1f, accumulate: true);
        if (dBias is { } db && m > 0)
            dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, int, int>>("linear.bwd.bias", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int>(BiasGradKernel))
                (m, dy, db, n, m);
        if (dx is { } dxv) Gemm.NN(dc, dy, w, dxv, n, k, m, 1f, accumulateDx);
    }
}
