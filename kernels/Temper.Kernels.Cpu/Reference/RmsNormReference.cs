// RMSNorm, the oracle (HF LlamaRMSNorm in f32): per row of x[N,C],
//   rstd = 1 / sqrt(mean(x^2) + eps),  y = weight * (x * rstd).
// The mean is summed in f64 here; rstd[N] is what backward needs.
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
}
