// Log-softmax over the last axis: y[n, j] = (x[n, j] - max_n) - log(sum_j exp(x[n, j] - max_n)),
// x, y [N,V]. Max, exp-sum and the shift are SIMD; rows split across threads.
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class LogSoftmax
{
    public static void Forward(ReadOnlySpan<float> x, Span<float> y, int v, int threads = 1)
    {
        if (v <= 0 || x.Length % v != 0 || y.Length != x.Length)
            throw new ArgumentException($"LogSoftmax: x has {x.Length} values, y {y.Length}, for rows of {v}");
        int rows = x.Length / v;
        fixed (float* px0 = x) fixed (float* py0 = y)
        {
            nint px = (nint)px0, py = (nint)py0;
            StaticPartition.For(rows, StaticPartition.Parts(threads, rows, (long)rows * v, 1 << 15), (r0, r1) =>
            {
                for (int n = r0; n < r1; n++) Row((float*)px + (long)n * v, (float*)py + (long)n * v, v);
            });
        }
    }

    private static void Row(float* x, float* y, int v)
    {
        float max = Reductions.Max(x, v);
        float logSum = MathF.Log(Reductions.SumExpShifted(x, v, max));
        int i = 0;
        if (Vector512.IsHardwareAccelerated && v >= 16)
        {
            Vector512<float> m = Vector512.Create(max), l = Vector512.Create(logSum);
            for (; i <= v - 16; i += 16) (Vector512.Load(x + i) - m - l).Store(y + i);
        }
        else if (Vector256.IsHardwareAccelerated && v >= 8)
        {
            Vector256<float> m = Vector256.Create(max), l = Vector256.Create(logSum);
            for (; i <= v - 8; i += 8) (Vector256.Load(x + i) - m - l).Store(y + i);
        }
        else if (Vector128.IsHardwareAccelerated && v >= 4)
        {
            Vector128<float> m = Vector128.Create(max), l = Vector128.Create(logSum);
            for (; i <= v - 4; i += 4) (Vector128.Load(x + i) - m - l).Store(y + i);
        }
        for (; i < v; i++) y[i] = x[i] - max - logSum;
    }
}
