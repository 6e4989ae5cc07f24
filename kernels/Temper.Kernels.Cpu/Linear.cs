// Linear forward: y[N,M] = x[N,K] w[M,K]^T + bias[M] (w f32 or bf16), or y += that when accumulating.
// y is first set to its starting value (0, bias, y, or y + bias), then the product is added: by the
// GEMV path for a single row (decode) and by the packed GEMM for N > 1.
namespace Temper.Kernels.Cpu;

public static class Linear
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<float> bias, Span<float> y, int n, int k, int m, bool accumulate, int threads)
    {
        Start(bias, y, n, m, accumulate);
        if (n == 1) Gemv.Multiply(x, w, y, k, m, threads);
        else Gemm.Multiply(x, w, y, n, k, m, threads);
    }

    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<ushort> wBf16, ReadOnlySpan<float> bias, Span<float> y, int n, int k, int m, bool accumulate, int threads)
    {
        Start(bias, y, n, m, accumulate);
        if (n == 1) Gemv.Multiply(x, wBf16, y, k, m, threads);
        else Gemm.Multiply(x, wBf16, y, n, k, m, threads);
    }

    private static void Start(ReadOnlySpan<float> bias, Span<float> y, int n, int m, bool accumulate)
    {
        if (y.Length != (long)n * m || (!bias.IsEmpty && bias.Length != m))
            throw new ArgumentException($"Linear: y has {y.Length} values (need {n}x{m}), bias {bias.Length} (need {m})");
        if (!accumulate) y.Clear();
        if (bias.IsEmpty) return;
        for (int i = 0; i < n; i++) Add.Forward(y.Slice(i * m, m), bias, y.Slice(i * m, m));
    }
}
