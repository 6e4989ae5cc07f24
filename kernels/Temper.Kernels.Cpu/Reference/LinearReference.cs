// Linear, the oracle: y[N,M] = x[N,K] w[M,K]^T + bias[M], or y += that when accumulating.
// Each dot product is summed in f64 and rounded once. Backward: dx[N,K] = dy w (or += when accumulating),
// dw[M,K] += dy^T x, dBias[M] += sum_n dy.
namespace Temper.Kernels.Cpu.Reference;

public static class LinearReference
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> bias, Span<float> y, int n, int k, int m, bool accumulate)
    {
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < m; j++)
            {
                double sum = bias.IsEmpty ? 0 : bias[j];
                for (int q = 0; q < k; q++) sum += (double)x[i * k + q] * w[j * k + q];
                if (accumulate) sum += y[i * m + j];
                y[i * m + j] = (float)sum;
            }
        }
    }

    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> dx, Span<float> dw, Span<float> dBias,
        int n, int k, int m, bool accumulateDx)
    {
        if (!dx.IsEmpty)
            for (int i = 0; i < n; i++)
                for (int q = 0; q < k; q++)
                {
                    double sum = accumulateDx ? dx[i * k + q] : 0;
                    for (int j = 0; j < m; j++) sum += (double)dy[i * m + j] * w[j * k + q];
                    dx[i * k + q] = (float)sum;
                }
        if (!dw.IsEmpty)
            for (int j = 0; j < m; j++)
                for (int q = 0; q < k; q++)
                {
                    double sum = dw[j * k + q];
                    for (int i = 0; i < n; i++) sum += (double)dy[i * m + j] * x[i * k + q];
                    dw[j * k + q] = (float)sum;
                }
        if (!dBias.IsEmpty)
            for (int j = 0; j < m; j++)
            {
                double sum = dBias[j];
                for (int i = 0; i < n; i++) sum += dy[i * m + j];
                dBias[j] = (float)sum;
            }
    }
}
