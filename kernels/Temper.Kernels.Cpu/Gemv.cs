// Gemv: y[M] += w[M,K] x[K] with w f32 or bf16 (the Linear forward of a single token row, decode).
// Memory-bound: each weight row is streamed once, f32 rows four at a time for independent FMA chains,
// bf16 rows one at a time (see RowsBf16) and widened in registers. Every row's dot product has the same
// order (one SIMD accumulator over the k chunks, then its lanes summed, then the scalar tail), whichever
// group or thread it falls in.
// Rows are split across threads by a static partition. MultiplyBatch does the same for up to four x
// rows at once (batched decode), streaming each weight row once; every element gets exactly the
// arithmetic of a single-row call, so a token's output does not depend on what it was batched with.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class Gemv
{
    /// <summary>y[m] += sum_k w[m,k] x[k], f32 weights.</summary>
    public static void Multiply(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int k, int m, int threads)
    {
        Check(x.Length, w.Length, y.Length, k, m);
        fixed (float* px0 = x) fixed (float* pw0 = w) fixed (float* py0 = y)
        {
            nint px = (nint)px0, pw = (nint)pw0, py = (nint)py0;
            StaticPartition.For(m, StaticPartition.Parts(threads, m, (long)m * k, 1 << 14), (r0, r1) =>
                RowsF32((float*)px, (float*)pw, (float*)py, k, r0, r1));
        }
    }

    /// <summary>y[m] += sum_k w[m,k] x[k], bf16 weights.</summary>
    public static void Multiply(ReadOnlySpan<float> x, ReadOnlySpan<ushort> wBf16, Span<float> y, int k, int m, int threads)
    {
        Check(x.Length, wBf16.Length, y.Length, k, m);
        fixed (float* px0 = x) fixed (ushort* pw0 = wBf16) fixed (float* py0 = y)
        {
            nint px = (nint)px0, pw = (nint)pw0, py = (nint)py0;
            StaticPartition.For(m, StaticPartition.Parts(threads, m, (long)m * k, 1 << 14), (r0, r1) =>
                RowsBf16((float*)px, (ushort*)pw, (float*)py, k, r0, r1));
        }
    }

    /// <summary>Most x rows <see cref="MultiplyBatch(ReadOnlySpan{float}, ReadOnlySpan{float}, Span{float}, int, int, int, int)"/> takes.</summary>
    public const int MaxBatch = 4;

    /// <summary>y[i,m] += sum_k w[m,k] x[i,k] for n &lt;= 4 rows of x [n,K], y [n,M]; f32 weights.</summary>
    public static void MultiplyBatch(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int k, int m, int threads)
    {
        CheckBatch(x.Length, w.Length, y.Length, n, k, m);
        fixed (float* px0 = x) fixed (float* pw0 = w) fixed (float* py0 = y)
        {
            nint px = (nint)px0, pw = (nint)pw0, py = (nint)py0;
            StaticPartition.For(m, StaticPartition.Parts(threads, m, (long)m * k, 1 << 14), (r0, r1) =>
                BatchRowsF32((float*)px, (float*)pw, (float*)py, n, k, m, r0, r1));
        }
    }

    /// <summary>y[i,m] += sum_k w[m,k] x[i,k] for n &lt;= 4 rows; bf16 weights.</summary>
    public static void MultiplyBatch(ReadOnlySpan<float> x, ReadOnlySpan<ushort> wBf16, Span<float> y, int n, int k, int m, int threads)
    {
        CheckBatch(x.Length, wBf16.Length, y.Length, n, k, m);
        fixed (float* px0 = x) fixed (ushort* pw0 = wBf16) fixed (float* py0 = y)
        {
            nint px = (nint)px0, pw = (nint)pw0, py = (nint)py0;
            StaticPartition.For(m, StaticPartition.Parts(threads, m, (long)m * k, 1 << 14), (r0, r1) =>
                BatchRowsBf16((float*)px, (ushort*)pw, (float*)py, n, k, m, r0, r1));
        }
    }

    private static void CheckBatch(int xl, int wl, int yl, int n, int k, int m)
    {
        if (n < 1 || n > MaxBatch || xl != (long)n * k || wl != (long)m * k || yl != (long)n * m)
            throw new ArgumentException($"gemv batch: x has {xl} (need {n}x{k}, 1 <= n <= {MaxBatch}), w {wl} (need {m}x{k}), y {yl} (need {n}x{m})");
    }

    private static void BatchRowsF32(float* x, float* w, float* y, int n, int k, int m, int r0, int r1)
    {
        for (int r = r0; r < r1; r++)
        {
            float* wr = w + (long)r * k;
            if (!Vector512.IsHardwareAccelerated)
            {
                for (int t = 0; t < n; t++) y[(long)t * m + r] += RowF32(x + (long)t * k, wr, k);
                continue;
            }
            float* x1 = x + k, x2 = x1 + k, x3 = x2 + k;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            int i = 0;
            for (; i <= k - 16; i += 16)
            {
                var wv = Vector512.Load(wr + i);
                a0 = Vector512.FusedMultiplyAdd(wv, Vector512.Load(x + i), a0);
                if (n > 1) a1 = Vector512.FusedMultiplyAdd(wv, Vector512.Load(x1 + i), a1);
                if (n > 2) a2 = Vector512.FusedMultiplyAdd(wv, Vector512.Load(x2 + i), a2);
                if (n > 3) a3 = Vector512.FusedMultiplyAdd(wv, Vector512.Load(x3 + i), a3);
            }
            y[r] += TailF32(x, wr, i, k, Vector512.Sum(a0));
            if (n > 1) y[m + r] += TailF32(x1, wr, i, k, Vector512.Sum(a1));
            if (n > 2) y[2L * m + r] += TailF32(x2, wr, i, k, Vector512.Sum(a2));
            if (n > 3) y[3L * m + r] += TailF32(x3, wr, i, k, Vector512.Sum(a3));
        }
    }

    private static void BatchRowsBf16(float* x, ushort* w, float* y, int n, int k, int m, int r0, int r1)
    {
        for (int r = r0; r < r1; r++)
        {
            ushort* wr = w + (long)r * k;
            if (!Vector512.IsHardwareAccelerated)
            {
                for (int t = 0; t < n; t++) y[(long)t * m + r] += RowBf16(x + (long)t * k, wr, k);
                continue;
            }
            float* x1 = x + k, x2 = x1 + k, x3 = x2 + k;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            int i = 0;
            for (; i <= k - 32; i += 32)
            {
                var u = Vector512.Load(wr + i);
                Vector512<float> lo = Vector512.ShiftLeft(Vector512.WidenLower(u), 16).AsSingle(), hi = Vector512.ShiftLeft(Vector512.WidenUpper(u), 16).AsSingle();
                a0 = Vector512.FusedMultiplyAdd(hi, Vector512.Load(x + i + 16), Vector512.FusedMultiplyAdd(lo, Vector512.Load(x + i), a0));
                if (n > 1) a1 = Vector512.FusedMultiplyAdd(hi, Vector512.Load(x1 + i + 16), Vector512.FusedMultiplyAdd(lo, Vector512.Load(x1 + i), a1));
                if (n > 2) a2 = Vector512.FusedMultiplyAdd(hi, Vector512.Load(x2 + i + 16), Vector512.FusedMultiplyAdd(lo, Vector512.Load(x2 + i), a2));
                if (n > 3) a3 = Vector512.FusedMultiplyAdd(hi, Vector512.Load(x3 + i + 16), Vector512.FusedMultiplyAdd(lo, Vector512.Load(x3 + i), a3));
            }
            y[r] += TailBf16(x, wr, i, k, Vector512.Sum(a0));
            if (n > 1) y[m + r] += TailBf16(x1, wr, i, k, Vector512.Sum(a1));
            if (n > 2) y[2L * m + r] += TailBf16(x2, wr, i, k, Vector512.Sum(a2));
            if (n > 3) y[3L * m + r] += TailBf16(x3, wr, i, k, Vector512.Sum(a3));
        }
    }

    private static void Check(int xl, int wl, int yl, int k, int m)
    {
        if (xl != k || wl != (long)m * k || yl != m)
            throw new ArgumentException($"gemv: x has {xl} (need {k}), w {wl} (need {m}x{k}), y {yl} (need {m})");
    }

    private static void RowsF32(float* x, float* w, float* y, int k, int r0, int r1)
    {
        int r = r0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; r <= r1 - 4; r += 4)
            {
                float* w0 = w + (long)r * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                int i = 0;
                for (; i <= k - 16; i += 16)
                {
                    var xv = Vector512.Load(x + i);
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w0 + i), xv, a0);
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Load(w1 + i), xv, a1);
                    a2 = Vector512.FusedMultiplyAdd(Vector512.Load(w2 + i), xv, a2);
                    a3 = Vector512.FusedMultiplyAdd(Vector512.Load(w3 + i), xv, a3);
                }
                y[r] += TailF32(x, w0, i, k, Vector512.Sum(a0));
                y[r + 1] += TailF32(x, w1, i, k, Vector512.Sum(a1));
                y[r + 2] += TailF32(x, w2, i, k, Vector512.Sum(a2));
                y[r + 3] += TailF32(x, w3, i, k, Vector512.Sum(a3));
            }
        }
        for (; r < r1; r++) y[r] += RowF32(x, w + (long)r * k, k);
    }

    // One row with exactly the arithmetic of the four-row loop above (or of its Vector256 / scalar twin).
    private static float RowF32(float* x, float* w, int k)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a = default;
            for (; i <= k - 16; i += 16) a = Vector512.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a);
            return TailF32(x, w, i, k, Vector512.Sum(a));
        }
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> a = default;
            for (; i <= k - 8; i += 8) a = Vector256.FusedMultiplyAdd(Vector256.Load(w + i), Vector256.Load(x + i), a);
            return TailF32(x, w, i, k, Vector256.Sum(a));
        }
        return TailF32(x, w, 0, k, 0f);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float TailF32(float* x, float* w, int i, int k, float sum)
    {
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(w[i], x[i], sum);
        return sum;
    }

    // Row by row, unlike f32: a bf16 row is half as long, and four short interleaved streams kept fewer
    // loads in flight than the thread's rows read as one contiguous stream (measured: 18 -> 29 GB/s on
    // one thread). f32 rows measured the other way round, so they stay four at a time.
    private static void RowsBf16(float* x, ushort* w, float* y, int k, int r0, int r1)
    {
        for (int r = r0; r < r1; r++) y[r] += RowBf16(x, w + (long)r * k, k);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step512(ushort* w, Vector512<float> xl, Vector512<float> xh, ref Vector512<float> acc)
    {
        var u = Vector512.Load(w);
        acc = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(Vector512.WidenLower(u), 16).AsSingle(), xl, acc);
        acc = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(Vector512.WidenUpper(u), 16).AsSingle(), xh, acc);
    }

    private static float RowBf16(float* x, ushort* w, int k)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> a = default;
            for (; i <= k - 32; i += 32) Step512(w + i, Vector512.Load(x + i), Vector512.Load(x + i + 16), ref a);
            return TailBf16(x, w, i, k, Vector512.Sum(a));
        }
        if (Vector256.IsHardwareAccelerated)
        {
            Vector256<float> a = default;
            for (; i <= k - 16; i += 16)
            {
                var u = Vector256.Load(w + i);
                a = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(Vector256.WidenLower(u), 16).AsSingle(), Vector256.Load(x + i), a);
                a = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(Vector256.WidenUpper(u), 16).AsSingle(), Vector256.Load(x + i + 8), a);
            }
            return TailBf16(x, w, i, k, Vector256.Sum(a));
        }
        return TailBf16(x, w, 0, k, 0f);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float TailBf16(float* x, ushort* w, int i, int k, float sum)
    {
        for (; i < k; i++) sum = MathF.FusedMultiplyAdd(BitConverter.Int32BitsToSingle(w[i] << 16), x[i], sum);
        return sum;
    }
}
