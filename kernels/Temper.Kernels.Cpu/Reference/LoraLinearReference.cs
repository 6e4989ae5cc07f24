// LoRA linear, the oracle (PEFT's order): xa[N,r] = x[N,K] A[r,K]^T,
//   y[N,M] = x w[M,K]^T + bias + scale * (xa B[M,r]^T).
// Backward of the LoRA branch (the base part is Linear's): with dxa = scale * dy B [N,r],
//   dB += scale * dy^T xa,  dA += dxa^T x,  dx += dxa A.
namespace Temper.Kernels.Cpu.Reference;

public static class LoraLinearReference
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> bias, ReadOnlySpan<float> a, ReadOnlySpan<float> b,
        float scale, Span<float> y, Span<float> xa, int n, int k, int m, int r)
    {
        var xaLocal = new float[n * r];
        LinearReference.Forward(x, a, default, xaLocal, n, k, r, accumulate: false);
        if (!xa.IsEmpty) xaLocal.CopyTo(xa);
        var lora = new float[n * m];
        LinearReference.Forward(xaLocal, b, default, lora, n, r, m, accumulate: false);
        LinearReference.Forward(x, w, bias, y, n, k, m, accumulate: false);
        for (int i = 0; i < n * m; i++) y[i] += scale * lora[i];
    }

    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> xa, ReadOnlySpan<float> a, ReadOnlySpan<float> b,
        float scale, Span<float> dx, Span<float> dA, Span<float> dB, int n, int k, int m, int r)
    {
        var dxa = new double[n * r];
        for (int i = 0; i < n; i++)
            for (int t = 0; t < r; t++)
            {
                double sum = 0;
                for (int j = 0; j < m; j++) sum += (double)dy[i * m + j] * b[j * r + t];
                dxa[i * r + t] = scale * sum;
            }
        if (!dB.IsEmpty) // empty dA/dB: a frozen adapter, only dx is wanted
            for (int j = 0; j < m; j++)
                for (int t = 0; t < r; t++)
                {
                    double sum = 0;
                    for (int i = 0; i < n; i++) sum += (double)dy[i * m + j] * xa[i * r + t];
                    dB[j * r + t] += (float)(scale * sum);
                }
        if (!dA.IsEmpty)
            for (int t = 0; t < r; t++)
                for (int q = 0; q < k; q++)
                {
                    double sum = 0;
                    for (int i = 0; i < n; i++) sum += dxa[i * r + t] * x[i * k + q];
                    dA[t * k + q] += (float)sum;
                }
        if (!dx.IsEmpty)
            for (int i = 0; i < n; i++)
                for (int q = 0; q < k; q++)
                {
                    double sum = dx[i * k + q];
                    for (int t = 0; t < r; t++) sum += dxa[i * r + t] * a[t * k + q];
                    dx[i * k + q] = (float)sum;
                }
    }
}
