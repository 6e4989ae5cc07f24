// RMSNorm forward (HF LlamaRMSNorm, f32): for each row of x[N,C],
//   rstd[n] = 1 / sqrt(mean(x[n]^2) + eps),  y[n] = weight[C] * (x[n] * rstd[n]).
// SIMD over the row (sum of squares, then the scaled product); rows split across threads.
// Backward: dx = rstd (g - xhat mean(g xhat)) with xhat = x rstd, g = dy weight (or dx += that: accumulate, a residual
// stream's gradient); dWeight += sum_n dy xhat.
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
        Span<float> dx, Span<float> dWeight, int c, int threads = 1, bool accumulate = false)
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
                        Multiply(dyr, (float*)pw, pg, c);
                        float mean = Reductions.Dot(pg, xr, c) * r / c; // mean(g xhat)
                        InputGradient(pg, xr, r, mean, dxr, c, accumulate);
                    }
                }
            });
            if (pdw == 0) return;
            StaticPartition.For(c, StaticPartition.Parts(threads, c, (long)rows * c, 1 << 15), (j0, j1) =>
            {
                var acc = new float[j1 - j0];
                fixed (float* pa = acc)
                {
                    for (int n = 0; n < rows; n++)
                    {
                        long o = (long)n * c + j0;
                        AccumulateWeightGradient((float*)pdy + o, (float*)px + o, ((float*)pr)[n], pa, j1 - j0);
                    }
                    Add.Forward(new Span<float>((float*)pdw + j0, j1 - j0), acc, new Span<float>((float*)pdw + j0, j1 - j0));
                }
            });
        }
    }

    // g = dy * w
    private static void Multiply(float* dy, float* w, float* g, int c)
    {
        int j = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; j <= c - 16; j += 16) (Vector512.Load(dy + j) * Vector512.Load(w + j)).Store(g + j);
        if (Vector256.IsHardwareAccelerated)
            for (; j <= c - 8; j += 8) (Vector256.Load(dy + j) * Vector256.Load(w + j)).Store(g + j);
        for (; j < c; j++) g[j] = dy[j] * w[j];
    }

    // dx = r (g - (x r) mean), or dx += that
    private static void InputGradient(float* g, float* x, float r, float mean, float* dx, int c, bool accumulate)
    {
        int j = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> rv = Vector512.Create(r), mv = Vector512.Create(mean);
            for (; j <= c - 16; j += 16)
            {
                var v = rv * (Vector512.Load(g + j) - Vector512.Load(x + j) * rv * mv);
                (accumulate ? Vector512.Load(dx + j) + v : v).Store(dx + j);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> rv = Vector256.Create(r), mv = Vector256.Create(mean);
            for (; j <= c - 8; j += 8)
            {
                var v = rv * (Vector256.Load(g + j) - Vector256.Load(x + j) * rv * mv);
                (accumulate ? Vector256.Load(dx + j) + v : v).Store(dx + j);
            }
        }
        for (; j < c; j++) dx[j] = (accumulate ? dx[j] : 0f) + r * (g[j] - x[j] * r * mean);
    }

    // acc += dy * (x r)
    private static void AccumulateWeightGradient(float* dy, float* x, float r, float* acc, int c)
    {
        int j = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var rv = Vector512.Create(r);
            for (; j <= c - 16; j += 16) (Vector512.Load(acc + j) + Vector512.Load(dy + j) * (Vector512.Load(x + j) * rv)).Store(acc + j);
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var rv = Vector256.Create(r);
            for (; j <= c - 8; j += 8) (Vector256.Load(acc + j) + Vector256.Load(dy + j) * (Vector256.Load(x + j) * rv)).Store(acc + j);
        }
        for (; j < c; j++) acc[j] += dy[j] * (x[j] * r);
    }
}
