// DoRA's magnitude scale, the oracle. With g[M] = magnitude[M] / norm[M] (the norm detached, DoRA §4.3):
//   forward   y[N,M] = g * z[N,M] + bias[M]   (z = x W^T + scale (x A^T) B^T, the adapted product without bias)
//   backward  dMagnitude[M] += sum_n dy[n,j] z[n,j] / norm[j]   (dz = g * dy is the forward with no bias)
namespace Temper.Kernels.Cpu.Reference;

public static class DoraScaleReference
{
    public static void Forward(ReadOnlySpan<float> z, ReadOnlySpan<float> magnitude, ReadOnlySpan<float> norm, ReadOnlySpan<float> bias, Span<float> y, int n, int m)
    {
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++)
                y[i * m + j] = magnitude[j] / norm[j] * z[i * m + j] + (bias.IsEmpty ? 0f : bias[j]);
    }

    public static void MagnitudeBackward(ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<float> norm, Span<float> dMagnitude, int n, int m)
    {
        for (int j = 0; j < m; j++)
        {
            double sum = 0;
            for (int i = 0; i < n; i++) sum += (double)dy[i * m + j] * z[i * m + j];
            dMagnitude[j] += (float)(sum / norm[j]);
        }
    }
}
