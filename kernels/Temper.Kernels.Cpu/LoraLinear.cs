// LoRA linear forward, in PEFT's order: xa[N,r] = x[N,K] A[r,K]^T, then
//   y[N,M] = x w[M,K]^T + bias + scale * (xa B[M,r]^T),
// three Linear products (the two small LoRA ones through the same GEMM/GEMV) and a scaled add.
namespace Temper.Kernels.Cpu;

public static class LoraLinear
{
    /// <summary>w is f32 (wBf16 empty) or bf16 (w empty); xa [n, r] receives x A^T when not empty.</summary>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<ushort> wBf16, ReadOnlySpan<float> bias,
        ReadOnlySpan<float> a, ReadOnlySpan<float> b, float scale, Span<float> y, Span<float> xa, int n, int k, int m, int r, int threads)
    {
        if (a.Length != (long)r * k || b.Length != (long)m * r || (!xa.IsEmpty && xa.Length != (long)n * r))
            throw new ArgumentException($"LoraLinear: A has {a.Length} values (need {r}x{k}), B {b.Length} (need {m}x{r}), xa {xa.Length} (need {n}x{r})");
        float[] xaBuf = xa.IsEmpty ? new float[n * r] : [];
        Span<float> xaSpan = xa.IsEmpty ? xaBuf : xa;
        Linear.Forward(x, a, default, xaSpan, n, k, r, accumulate: false, threads);
        if (wBf16.IsEmpty) Linear.Forward(x, w, bias, y, n, k, m, accumulate: false, threads);
        else Linear.Forward(x, wBf16, bias, y, n, k, m, accumulate: false, threads);
        var lora = new float[n * m];
        Linear.Forward(xaSpan, b, default, lora, n, r, m, accumulate: false, threads);
        Add.ScaledInPlace(lora, scale, y);
    }
}
