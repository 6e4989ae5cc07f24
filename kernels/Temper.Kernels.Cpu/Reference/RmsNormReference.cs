// RMSNorm, the oracle (HF LlamaRMSNorm in f32): per row of x[N,C],
//   rstd = 1 / sqrt(mean(x^2) + eps),  y = weight * (x * rstd).
// The mean is summed in f64 here; rstd[N] is what backward needs. Backward, with xhat = x * rstd and
// g = dy * weight: dx = rstd * (g - xhat * mean(g * xhat)) and dWeight += sum_n dy * xhat.
namespace Temper.Kernels.Cpu.Reference;

public static class RmsNormReference
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> y, Span<float> rstd, int c)
    {
        int rows = c == 0 ? 0 : x.Length / c;
        for (int n = 0; n < rows; n++)
        {
            double sumSq = 0;
            for (int j = 0; j < c; j++) sumSq += (double)x[n * c + j] * x[n * c + j];
            float r = 1f / MathF.Sqrt((float)(sumSq / c) + eps);
            if (!rstd.IsEmpty) rstd[n] = r;
            for (int j = 0; j < c; j++) y[n * c + j] = weight[j] * (x[n * c + j] * r);
        }
    }

    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> rstd,
        Span<float> dx, Span<float> dWeight, int c)
    {
        int rows = c == 0 ? 0 : x.Length / c;
        var dw = new double[c];
        for (int n = 0; n < rows; n++)
        {
            double r = rstd[n], dot = 0;
            for (int j = 0; j < c; j++)
            {
                double xhat = x[n * c + j] * r;
                dot += dy[n * c + j] * (double)weight[j] * xhat;
                dw[j] += dy[n * c + j] * xhat;
            }
            double mean = dot / c;
            for (int j = 0; j < c; j++)
                dx[n * c + j] = (float)(r * (dy[n * c + j] * (double)weight[j] - x[n * c + j] * r * mean));
        }
        if (!dWeight.IsEmpty)
            for (int j = 0; j < c; j++) dWeight[j] += (float)dw[j];
    }
}
