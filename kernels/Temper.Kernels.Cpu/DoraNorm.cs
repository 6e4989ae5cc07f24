// DoRA's weight norm: norm[M] = || W[M,K] + scale (B[M,r] A[r,K]) ||_row (W f32 or bf16), the per-output-row
// L2 norm PEFT's DoRA divides the magnitude by. Rows are split statically over threads; each row is built in
// a K-float buffer as PEFT orders it (the low-rank row sum_t B[j,t] A[t,:] first, then W + scale * it) and
// its squares summed in f64 (SumOfSquares), so the bits do not depend on the thread count.
using System.Buffers;

namespace Temper.Kernels.Cpu;

public static unsafe class DoraNorm
{
    public static void Compute(ReadOnlySpan<float> w, ReadOnlySpan<ushort> wBf16, ReadOnlySpan<float> a, ReadOnlySpan<float> b, float scale, Span<float> norm,
        int m, int k, int r, int threads)
    {
        if ((wBf16.IsEmpty ? w.Length : wBf16.Length) != (long)m * k || a.Length != (long)r * k || b.Length != (long)m * r || norm.Length != m)
            throw new ArgumentException($"DoraNorm: W {(wBf16.IsEmpty ? w.Length : wBf16.Length)}, A {a.Length}, B {b.Length}, norm {norm.Length} values for M {m} K {k} r {r}");
        fixed (float* pw = w, pa = a, pb = b, pn = norm)
        fixed (ushort* pw16 = wBf16)
        {
            float* fw = pw, fa = pa, fb = pb, fn = pn;
            ushort* hw = pw16;
            bool bf16 = !wBf16.IsEmpty;
            int parts = StaticPartition.Parts(threads, m, (long)m * k * (r + 1), 1 << 16);
            StaticPartition.For(m, parts, (j0, j1) =>
            {
                float[] buffer = ArrayPool<float>.Shared.Rent(2 * k);
                try
                {
                    var row = buffer.AsSpan(0, k);
                    var low = buffer.AsSpan(k, k);
                    for (int j = j0; j < j1; j++)
                    {
                        low.Clear();
                        for (int t = 0; t < r; t++) Add.ScaledInPlace(new ReadOnlySpan<float>(fa + (long)t * k, k), fb[(long)j * r + t], low);
                        fixed (float* prow = row)
                        {
                            if (bf16) Bf16.Widen(hw + (long)j * k, prow, k);
                            else new ReadOnlySpan<float>(fw + (long)j * k, k).CopyTo(row);
                        }
                        Add.ScaledInPlace(low, scale, row);
                        fn[j] = (float)Math.Sqrt(SumOfSquares.Compute(row));
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(buffer);
                }
            });
        }
    }
}
