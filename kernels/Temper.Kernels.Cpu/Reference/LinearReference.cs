// Linear, the oracle: y[N,M] = x[N,K] w[M,K]^T + bias[M], or y += that when accumulating.
// Each dot product is summed in f64 and rounded once.
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
}
