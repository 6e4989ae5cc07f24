// Gathered (BGMV) LoRA linear, the oracle: for each row n of x[N,K] with i = rowAdapter[n] >= 0,
//   y[n, m] += scales[i] * sum_t (sum_k x[n,k] A[i,t,k]) B[i,m,t],
// A [L,r,K] and B [L,M,r] stacking L adapters. Rows with i < 0 are left as they are. Sums in f64.
namespace Temper.Kernels.Cpu.Reference;

public static class GatheredLoraLinearReference
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter,
        Span<float> y, int k, int m, int r)
    {
        var xa = new double[r];
        for (int n = 0; n < rowAdapter.Length; n++)
        {
            int i = rowAdapter[n];
            if (i < 0) continue;
            for (int t = 0; t < r; t++)
            {
                double s = 0;
                for (int q = 0; q < k; q++) s += (double)x[n * k + q] * a[(i * r + t) * k + q];
                xa[t] = s;
            }
            for (int j = 0; j < m; j++)
            {
                double s = 0;
                for (int t = 0; t < r; t++) s += xa[t] * b[(i * m + j) * r + t];
                y[n * m + j] = (float)(y[n * m + j] + scales[i] * s);
            }
        }
    }
}
