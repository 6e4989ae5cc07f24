// LoRA linear forward: xa[N,r] = x[N,K] A[r,K]^T, then
//   y[N,M] = x w[M,K]^T + bias + (scale xa) B[M,r]^T,
// three Linear products (the two small LoRA ones through the same GEMM/GEMV), the last accumulated
// straight into y. The scale goes on the small [N,r] factor rather than on the [N,M] product (PEFT's
// order; the reference keeps it): equal up to rounding, exact for a power-of-two scale, and it saves an
// [N,M] temporary, a large-object allocation per call that cost more than the base GEMM itself.
// Backward (the LoRA branch; the base part is Linear's): dxa = scale dy B, dB += scale dy^T xa,
// dA += dxa^T x, dx += dxa A, all through the GEMM.
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
        var scaledXa = new float[n * r];
        xaSpan.CopyTo(scaledXa);
        Scale.Apply(scaledXa, scale);
        Linear.Forward(scaledXa, b, default, y, n, r, m, accumulate: true, threads);
    }

    /// <summary>
    /// Backward of the LoRA branch: dxa = scale dy B [N,r]; dB[M,r] += scale dy^T xa; dA[r,K] += dxa^T x;
    /// dx[N,K] += dxa A when dx is not empty.
    /// </summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> xa, ReadOnlySpan<float> a, ReadOnlySpan<float> b,
        float scale, Span<float> dx, Span<float> dA, Span<float> dB, int n, int k, int m, int r, int threads)
    {
        if (a.Length != (long)r * k || b.Length != (long)m * r || xa.Length != (long)n * r || (!dA.IsEmpty && dA.Length != a.Length) || (!dB.IsEmpty && dB.Length != b.Length))
            throw new ArgumentException($"LoraLinear backward: A {a.Length}, B {b.Length}, xa {xa.Length}, dA {dA.Length}, dB {dB.Length} values for n {n} k {k} m {m} r {r}");
        var dxa = new float[n * r];
        Gemm.MultiplyNN(dy, b, dxa, n, m, r, threads);
        if (!dB.IsEmpty)
        {
            var dBLocal = new float[m * r];
            Gemm.MultiplyTN(dy, xa, dBLocal, m, n, r, threads);
            Add.ScaledInPlace(dBLocal, scale, dB);
        }
        Scale.Apply(dxa, scale);
        if (!dA.IsEmpty) Gemm.MultiplyTN(dxa, x, dA, r, n, k, threads);
        if (!dx.IsEmpty) Gemm.MultiplyNN(dxa, a, dx, n, r, k, threads);
    }
}
