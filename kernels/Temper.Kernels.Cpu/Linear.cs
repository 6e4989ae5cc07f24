// Linear forward: y[N,M] = x[N,K] w[M,K]^T + bias[M] (w f32 or bf16), or y += that when accumulating.
// y is first set to its starting value (0, bias, y, or y + bias), then the product is added: by the
// GEMV path for up to 4 rows (decode: each weight row streamed once; a row's result is the same bits
// whether it comes alone or batched) and by the packed GEMM beyond, which writes y itself when it starts
// from 0 (no zeroing pass).
// Backward: dx = dy w through the GEMM's NN form, dw += dy^T x through its TN form, dBias += sum_n dy.
namespace Temper.Kernels.Cpu;

public static class Linear
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> bias, Span<float> y, int n, int k, int m, bool accumulate, int threads)
    {
        bool overwrite = Start(bias, y, n, m, accumulate);
        if (n == 0) return;
        if (n == 1) Gemv.Multiply(x, w, y, k, m, threads);
        else if (n <= Gemv.MaxBatch) Gemv.MultiplyBatch(x, w, y, n, k, m, threads);
        else Gemm.Multiply(x, w, y, n, k, m, threads, overwrite: overwrite);
    }

    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<ushort> wBf16, ReadOnlySpan<float> bias, Span<float> y, int n, int k, int m, bool accumulate, int threads)
    {
        bool overwrite = Start(bias, y, n, m, accumulate);
        if (n == 0) return;
        if (n == 1) Gemv.Multiply(x, wBf16, y, k, m, threads);
        else if (n <= Gemv.MaxBatch) Gemv.MultiplyBatch(x, wBf16, y, n, k, m, threads);
        else Gemm.Multiply(x, wBf16, y, n, k, m, threads, overwrite: overwrite);
    }

    /// <summary>
    /// Sets y's starting value; true when that is 0 and the GEMM should write y rather than add to it (y is
    /// left as it was: the GEMV rows, n &lt;= <see cref="Gemv.MaxBatch"/>, get it zeroed here).
    /// </summary>
    internal static bool Start(ReadOnlySpan<float> bias, Span<float> y, int n, int m, bool accumulate)
    {
        if (y.Length != (long)n * m || (!bias.IsEmpty && bias.Length != m))
            throw new ArgumentException($"Linear: y has {y.Length} values (need {n}x{m}), bias {bias.Length} (need {m})");
        if (!accumulate && bias.IsEmpty && n > Gemv.MaxBatch) return true;
        if (!accumulate) y.Clear();
        if (bias.IsEmpty) return false;
        for (int i = 0; i < n; i++) Add.Forward(y.Slice(i * m, m), bias, y.Slice(i * m, m));
        return false;
    }

    /// <summary>
    /// dx[N,K] = dy[N,M] w[M,K] (added to dx when accumulateDx), dw[M,K] += dy^T x, dBias[M] += sum_n dy;
    /// empty spans are skipped. w is f32 here; the bf16 overload below serves frozen bf16 weights.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> dx, Span<float> dw, Span<float> dBias,
        int n, int k, int m, bool accumulateDx, int threads)
    {
        if (!dx.IsEmpty) Gemm.MultiplyNN(dy, w, dx, n, m, k, threads, overwrite: !accumulateDx);
        BackwardWeights(dy, x, dw, dBias, n, k, m, threads);
    }

    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<ushort> wBf16, Span<float> dx, Span<float> dw, Span<float> dBias,
        int n, int k, int m, bool accumulateDx, int threads)
    {
        if (!dx.IsEmpty) Gemm.MultiplyNN(dy, wBf16, dx, n, m, k, threads, overwrite: !accumulateDx);
        BackwardWeights(dy, x, dw, dBias, n, k, m, threads);
    }

    private static void BackwardWeights(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, Span<float> dw, Span<float> dBias, int n, int k, int m, int threads)
    {
        if (!dw.IsEmpty) Gemm.MultiplyTN(dy, x, dw, m, n, k, threads);
        if (dBias.IsEmpty) return;
        if (dBias.Length != m || dy.Length != (long)n * m) throw new ArgumentException($"Linear backward: dBias has {dBias.Length} values (need {m}), dy {dy.Length} (need {n}x{m})");
        for (int i = 0; i < n; i++) Add.Forward(dBias, dy.Slice(i * m, m), dBias);
    }
}
