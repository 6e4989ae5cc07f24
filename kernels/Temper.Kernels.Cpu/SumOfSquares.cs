// Sum of squares of all elements in f64 (for global gradient norms). The span is cut into fixed chunks
// of 64K elements whatever the thread count; each chunk is summed with f64 SIMD lanes, and the chunk sums
// are added in chunk order, so the result does not depend on the threads.
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class SumOfSquares
{
    private const int Chunk = 1 << 16;

    public static double Compute(ReadOnlySpan<float> x, int threads = 1)
    {
        int chunks = (x.Length + Chunk - 1) / Chunk;
        if (chunks == 0) return 0;
        var partial = new double[chunks];
        int length = x.Length;
        fixed (float* p0 = x)
        {
            nint p = (nint)p0;
            StaticPartition.For(chunks, Math.Min(threads, chunks), (c0, c1) =>
            {
                for (int c = c0; c < c1; c++)
                {
                    int start = c * Chunk;
                    partial[c] = Run((float*)p + start, Math.Min(Chunk, length - start));
                }
            });
        }
        double sum = 0;
        foreach (var s in partial) sum += s;
        return sum;
    }

    private static double Run(float* x, int n)
    {
        int i = 0;
        double sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            Vector512<double> a0 = Vector512<double>.Zero, a1 = Vector512<double>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var v = Vector512.Load(x + i);
                var lo = Vector512.WidenLower(v);
                var hi = Vector512.WidenUpper(v);
                a0 = Vector512.FusedMultiplyAdd(lo, lo, a0);
                a1 = Vector512.FusedMultiplyAdd(hi, hi, a1);
            }
            sum = Vector512.Sum(a0 + a1);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            Vector256<double> a0 = Vector256<double>.Zero, a1 = Vector256<double>.Zero;
            for (; i <= n - 8; i += 8)
            {
                var v = Vector256.Load(x + i);
                var lo = Vector256.WidenLower(v);
                var hi = Vector256.WidenUpper(v);
                a0 = Vector256.FusedMultiplyAdd(lo, lo, a0);
                a1 = Vector256.FusedMultiplyAdd(hi, hi, a1);
            }
            sum = Vector256.Sum(a0 + a1);
        }
        for (; i < n; i++) sum += (double)x[i] * x[i];
        return sum;
    }
}
