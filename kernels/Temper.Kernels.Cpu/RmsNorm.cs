// RMSNorm forward (HF LlamaRMSNorm, f32): for each row of x[N,C],
//   rstd[n] = 1 / sqrt(mean(x[n]^2) + eps),  y[n] = weight[C] * (x[n] * rstd[n]).
// SIMD over the row (sum of squares, then the scaled product); rows split across threads.
// Backward: dx = rstd (g - xhat mean(g xhat)) with xhat = x rstd, g = dy weight; dWeight += sum_n dy xhat.
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class RmsNorm
{
    /// <summary>x, y [rows, c]; weight [c]; rstd [rows] or empty.</summary>
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> y, Span<float> rstd, int c, int threads = 1)
    {
        if (c <= 0 || x.Length % c != 0 || y.Length != x.Length || weight.Length != c || (!rstd.IsEmpty && rstd.Length != x.Length / c))
            throw new ArgumentException($"RmsNorm: x has {x.Length} values, y {y.Length}, weight {weight.Length}, rstd {rstd.Length}, for rows of {c}");
        int rows = x.Length / c;
        fixed (float* px0 = x) fixed (float* pw0 = weight) fixed (float* py0 = y) fixed (float* pr0 = rstd)
        {
            nint px = (nint)px0, pw = (nint)pw0, py = (nint)py0, pr = (nint)pr0;
            int parts = StaticPartition.Parts(threads, rows, (long)rows * c, 1 << 15);
            StaticPartition.For(rows, parts, (r0, r1) =>
            {
                for (int n = r0; n < r1; n++)
                {
                    float r = Row((float*)px + (long)n * c, (float*)pw, eps, (float*)py + (long)n * c, c);
                    if (pr != 0) ((float*)pr)[n] = r;
                }
            });
        }
    }

    private static float Row(float* x, float* w, float eps, float* y, int c)
    {
        float r = 1f / MathF.Sqrt(Reductions.SumOfSquares(x, c) / c + eps);
        int i = 0;
        if (Vector512.IsHardwareAccelerated && c >= 16)
        {
            var rv = Vector512.Create(r);
            for (; i <= c - 16; i += 16) (Vector512.Load(w + i) * (Vector512.Load(x + i) * rv)).Store(y + i);
        }
        else if (Vector256.IsHardwareAccelerated && c >= 8)
        {
            var rv = Vector256.Create(r);
            for (; i <= c - 8; i += 8) (Vector256.Load(w + i) * (Vector256.Load(x + i) * rv)).Store(y + i);
        }
        else if (Vector128.IsHardwareAccelerated && c >= 4)
        {
            var rv = Vector128.Create(r);
            for (; i <= c - 4; i += 4) (Vector128.Load(w + i) * (Vector128.Load(x + i) * rv)).Store(y + i);
        }
        for (; i < c; i++) y[i] = w[i] * (x[i] * r);
        return r;
    }

    /// <summary>
    /// dx = rstd (g - xhat mean(g xhat)) with xhat = x rstd, g = dy weight (rows split across threads);
    /// dWeight[j] += sum_n dy[n,j] xhat[n,j] (columns split across threads, rows summed in order).
    /// </summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> rstd,
        Span<float> dx, Span<float> dWeight, int c, int threads = 1)
    {
        if (c <= 0 || x.Length % c != 0 || dy.Length != x.Length || dx.Length != x.Length || weight.Length != c || rstd.Length != x.Length / c
            || (!dWeight.IsEmpty && dWeight.Length != c))
            throw new ArgumentException($"RmsNorm backward: dy {dy.Length}, x {x.Length}, dx {dx.Length}, weight {weight.Length}, rstd {rstd.Length}, dWeight {dWeight.Length} values for rows of {c}");
        int rows = x.Length / c;
        fixed (float* pdy0 = dy) fixed (float* px0 = x) fixed (float* pw0 = weight) fixed (float* pr0 = rstd) fixed (float* pdx0 = dx) fixed (float* pdw0 = dWeight)
        {
            nint pdy = (nint)pdy0, px = (nint)px0, pw = (nint)pw0, pr = (nint)pr0, pdx = (nint)pdx0, pdw = (nint)pdw0;
            StaticPartition.For(rows, StaticPartition.Parts(threads, rows, (long)rows * c, 1 << 15), (r0, r1) =>
            {
                var g = new float[c];
                fixed (float* pg = g)
                {
                    for (int n = r0; n < r1; n++)
                    {
                        float* dyr = (float*)pdy + (long)n * c, xr = (float*)px + (long)n * c, dxr = (float*)pdx + (long)n * c;
                        float r = ((float*)pr)[n];
                        for (int j = 0; j < c; j++) pg[j] = dyr[j] * ((float*)pw)[j];
                        float mean = Reductions.Dot(pg, xr, c) * r / c; // mean(g xhat)
                        for (int j = 0; j < c; j++) dxr[j] = r * (pg[j] - xr[j] * r * mean);
                    }
                }
            });
            if (pdw == 0) return;
            StaticPartition.For(c, StaticPartition.Parts(threads, c, (long)rows * c, 1 << 15), (j0, j1) =>
            {
                var acc = new float[j1 - j0];
                for (int n = 0; n < rows; n++)
                {
                    float r = ((float*)pr)[n];
                    float* dyr = (float*)pdy + (long)n * c, xr = (float*)px + (long)n * c;
                    for (int j = j0; j < j1; j++) acc[j - j0] += dyr[j] * (xr[j] * r);
                }
                for (int j = j0; j < j1; j++) ((float*)pdw)[j] += acc[j - j0];
            });
        }
    }
}
