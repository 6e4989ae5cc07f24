// DoRA's magnitude scale. With g[M] = magnitude[M] / norm[M] (the norm detached, DoRA §4.3):
//   Forward            y[N,M] = g * z[N,M] + bias[M]  (y may alias z; z = x W^T + scale (x A^T) B^T, no bias)
//   MagnitudeBackward  dMagnitude[M] += (sum_n dy[n,j] z[n,j]) / norm[j]
// The forward with no bias is also the backward to z (dz = g * dy). Forward splits rows over threads,
// MagnitudeBackward splits columns in 16-wide groups (each column summed over rows in order, in f32), so
// results do not depend on the thread count. Vector512/256/128 paths, scalar tails.
using System.Buffers;
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class DoraScale
{
    public static void Forward(ReadOnlySpan<float> z, ReadOnlySpan<float> magnitude, ReadOnlySpan<float> norm, ReadOnlySpan<float> bias, Span<float> y, int n, int m, int threads)
    {
        if (z.Length != (long)n * m || y.Length != z.Length || magnitude.Length != m || norm.Length != m || (!bias.IsEmpty && bias.Length != m))
            throw new ArgumentException($"DoraScale: z {z.Length}, y {y.Length}, magnitude {magnitude.Length}, norm {norm.Length}, bias {bias.Length} values for N {n} M {m}");
        float[] g = ArrayPool<float>.Shared.Rent(Math.Max(1, 2 * m));
        try
        {
            for (int j = 0; j < m; j++) g[j] = magnitude[j] / norm[j];
            if (bias.IsEmpty) Array.Clear(g, m, m);
            else bias.CopyTo(g.AsSpan(m, m));
            fixed (float* pz = z, py = y, pg = g)
            {
                float* fz = pz, fy = py, fg = pg;
                int parts = StaticPartition.Parts(threads, n, (long)n * m, 1 << 15);
                StaticPartition.For(n, parts, (i0, i1) =>
                {
                    for (int i = i0; i < i1; i++) MulAdd(fz + (long)i * m, fg, fg + m, fy + (long)i * m, m);
                });
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(g);
        }
    }

    public static void MagnitudeBackward(ReadOnlySpan<float> dy, ReadOnlySpan<float> z, ReadOnlySpan<float> norm, Span<float> dMagnitude, int n, int m, int threads)
    {
        if (dy.Length != (long)n * m || z.Length != dy.Length || norm.Length != m || dMagnitude.Length != m)
            throw new ArgumentException($"DoraScale backward: dy {dy.Length}, z {z.Length}, norm {norm.Length}, dMagnitude {dMagnitude.Length} values for N {n} M {m}");
        float[] acc = ArrayPool<float>.Shared.Rent(Math.Max(1, m));
        try
        {
            Array.Clear(acc, 0, m);
            fixed (float* pdy = dy, pz = z, pacc = acc)
            {
                float* fdy = pdy, fz = pz, fa = pacc;
                int groups = (m + 15) / 16;
                int parts = StaticPartition.Parts(threads, groups, (long)n * m, 1 << 15);
                StaticPartition.For(groups, parts, (g0, g1) =>
                {
                    int j0 = g0 * 16, len = Math.Min(m, g1 * 16) - j0;
                    for (int i = 0; i < n; i++) MulAcc(fdy + (long)i * m + j0, fz + (long)i * m + j0, fa + j0, len);
                });
            }
            for (int j = 0; j < m; j++) dMagnitude[j] += acc[j] / norm[j];
        }
        finally
        {
            ArrayPool<float>.Shared.Return(acc);
        }
    }

    // y = z * g + c over len values.
    private static void MulAdd(float* z, float* g, float* c, float* y, int len)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= len - 16; i += 16) (Vector512.Load(z + i) * Vector512.Load(g + i) + Vector512.Load(c + i)).Store(y + i);
        if (Vector256.IsHardwareAccelerated)
            for (; i <= len - 8; i += 8) (Vector256.Load(z + i) * Vector256.Load(g + i) + Vector256.Load(c + i)).Store(y + i);
        if (Vector128.IsHardwareAccelerated)
            for (; i <= len - 4; i += 4) (Vector128.Load(z + i) * Vector128.Load(g + i) + Vector128.Load(c + i)).Store(y + i);
        for (; i < len; i++) y[i] = z[i] * g[i] + c[i];
    }

    // acc += a * b over len values.
    private static void MulAcc(float* a, float* b, float* acc, int len)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= len - 16; i += 16) (Vector512.Load(acc + i) + Vector512.Load(a + i) * Vector512.Load(b + i)).Store(acc + i);
        if (Vector256.IsHardwareAccelerated)
            for (; i <= len - 8; i += 8) (Vector256.Load(acc + i) + Vector256.Load(a + i) * Vector256.Load(b + i)).Store(acc + i);
        if (Vector128.IsHardwareAccelerated)
            for (; i <= len - 4; i += 4) (Vector128.Load(acc + i) + Vector128.Load(a + i) * Vector128.Load(b + i)).Store(acc + i);
        for (; i < len; i++) acc[i] += a[i] * b[i];
    }
}
