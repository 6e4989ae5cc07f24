// LoRA linear forward: xa[N,r] = x[N,K] A[r,K]^T, then
//   y[N,M] = x w[M,K]^T + bias + (scale xa) B[M,r]^T.
// Beyond the GEMV's few rows, the second line is one GEMM over the joined reduction [x | scale xa] [w | B]^T
// (Gemm's second segment), so the adapter's product costs no second pass over y; otherwise it is two Linear
// products, the last accumulated into y. The scale goes on the small [N,r] factor rather than on the [N,M]
// product (PEFT's order; the reference keeps it): equal up to rounding, exact for a power-of-two scale.
// Backward (the LoRA branch; the base part is Linear's): dxa = scale dy B, dB += dy^T (scale xa),
// dA += dxa^T x, dx += dxa A, all through the GEMM (its 24 x 16 tiles for the rank-wide dxa and dB).
using System.Buffers;

namespace Temper.Kernels.Cpu;

public static class LoraLinear
{
    /// <summary>w is f32 (wBf16 empty) or bf16 (w empty); xa [n, r] receives x A^T when not empty.</summary>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<ushort> wBf16, ReadOnlySpan<float> bias,
        ReadOnlySpan<float> a, ReadOnlySpan<float> b, float scale, Span<float> y, Span<float> xa, int n, int k, int m, int r, int threads)
    {
        if (a.Length != (long)r * k || b.Length != (long)m * r || (!xa.IsEmpty && xa.Length != (long)n * r))
            throw new ArgumentException($"LoraLinear: A has {a.Length} values (need {r}x{k}), B {b.Length} (need {m}x{r}), xa {xa.Length} (need {n}x{r})");
        float[] buffer = ArrayPool<float>.Shared.Rent(2 * n * r); // xa when the caller keeps none, and scale xa
        try
        {
            Span<float> xaSpan = xa.IsEmpty ? buffer.AsSpan(n * r, n * r) : xa, scaledXa = buffer.AsSpan(0, n * r);
            Linear.Forward(x, a, default, xaSpan, n, k, r, accumulate: false, threads);
            xaSpan.CopyTo(scaledXa);
            Scale.Apply(scaledXa, scale);
            if (n > Gemv.MaxBatch && r > 0 && r <= Gemm.KC)
            {
                bool overwrite = Linear.Start(bias, y, n, m, accumulate: false);
                Gemm.Multiply(x, w, wBf16, scaledXa, b, y, n, k, r, m, threads, overwrite: overwrite);
                return;
            }
            if (wBf16.IsEmpty) Linear.Forward(x, w, bias, y, n, k, m, accumulate: false, threads);
            else Linear.Forward(x, wBf16, bias, y, n, k, m, accumulate: false, threads);
            Linear.Forward(scaledXa, b, default, y, n, r, m, accumulate: true, threads);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
        }
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
        float[] buffer = ArrayPool<float>.Shared.Rent(2 * n * r); // dxa, and scale xa
        try
        {
            Span<float> dxa = buffer.AsSpan(0, n * r), scaledXa = buffer.AsSpan(n * r, n * r);
            Gemm.MultiplyNN(dy, b, dxa, n, m, r, threads, overwrite: true);
            if (!dB.IsEmpty)
            {
                xa.CopyTo(scaledXa); // scaling the [N,r] factor, not an [M,r] product
                Scale.Apply(scaledXa, scale);
                Gemm.MultiplyTN(dy, scaledXa, dB, m, n, r, threads);
            }
            Scale.Apply(dxa, scale);
            if (!dA.IsEmpty) Gemm.MultiplyTN(dxa, x, dA, r, n, k, threads);
            if (!dx.IsEmpty) Gemm.MultiplyNN(dxa, a, dx, n, r, k, threads);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(buffer);
        }
    }
}
