// Gemv: y[M] += w[M,K] x[K] with w f32 or bf16 (the Linear forward of a single token row, decode).
// Memory-bound: each weight row is streamed once, f32 rows four at a time for independent FMA chains,
// bf16 rows one at a time (see RowsBf16) and widened in registers. Every row's dot product has the same
// order (one SIMD accumulator over the k chunks, then its lanes summed, then the scalar tail), whichever
// group or thread it falls in.
// Rows are split across threads by a static partition. MultiplyBatch does the same for up to 12 x rows
// (batched decode), in tiles of 4 weight rows x 4 x rows, reading each weight row from memory once;
// every element gets exactly the arithmetic of a single-row call, so a token's output does not depend on
// what it was batched with.
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
    // Up to 12 rows the tiles beat the GEMM (which packs the weights each call) at the SmolLM-135M shapes,
    // 30 layers, 2 threads: f32 n 4/8/12 19.4/26.2/26.5 -> 16.1/20.6/24.0 ms a step, bf16 n 4 14.1 -> 9.6,
    // n 8 20.2 -> 17.8, n 12 even; at 16 they are even for f32 and 2% behind for bf16.
    public const int MaxBatch = 12;

    /// <summary>y[i,m] += sum_k w[m,k] x[i,k] for n &lt;= 12 rows of x [n,K], y [n,M]; f32 weights.</summary>
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

    /// <summary>y[i,m] += sum_k w[m,k] x[i,k] for n &lt;= 12 rows; bf16 weights.</summary>
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

    // Tiles of 4 weight rows x 4 x rows (16 accumulators; each weight row is read from memory once), the
    // x rows past the last whole four and the weight rows past the last whole four by FewRows. Each dot
    // product is summed exactly as RowF32 / RowBf16 sum it.
    private static void BatchRowsF32(float* x, float* w, float* y, int n, int k, int m, int r0, int r1)
    {
        int r = r0;
        if (Vector512.IsHardwareAccelerated)
            for (; r <= r1 - 4; r += 4)
            {
                int t = 0;
                for (; t <= n - 4; t += 4) Tile4x4F32(x + (long)t * k, w + (long)r * k, y + (long)t * m + r, k, m);
                if (t < n)
                    for (int i = 0; i < 4; i++) FewRowsF32(x + (long)t * k, w + (long)(r + i) * k, y + (long)t * m + r + i, n - t, k, m);
            }
        for (; r < r1; r++)
            for (int t = 0; t < n; t += 4) FewRowsF32(x + (long)t * k, w + (long)r * k, y + (long)t * m + r, Math.Min(4, n - t), k, m);
    }

    private static void Tile4x4F32(float* x, float* w, float* y, int k, int m)
    {
        float* x1 = x + k, x2 = x1 + k, x3 = x2 + k, w1 = w + k, w2 = w1 + k, w3 = w2 + k;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default,
            a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default, a32 = default, a33 = default;
        int i = 0;
        for (; i <= k - 16; i += 16)
        {
            Vector512<float> v0 = Vector512.Load(x + i), v1 = Vector512.Load(x1 + i), v2 = Vector512.Load(x2 + i), v3 = Vector512.Load(x3 + i);
            var wv = Vector512.Load(w + i);
            a00 = Vector512.FusedMultiplyAdd(wv, v0, a00); a01 = Vector512.FusedMultiplyAdd(wv, v1, a01); a02 = Vector512.FusedMultiplyAdd(wv, v2, a02); a03 = Vector512.FusedMultiplyAdd(wv, v3, a03);
            wv = Vector512.Load(w1 + i);
            a10 = Vector512.FusedMultiplyAdd(wv, v0, a10); a11 = Vector512.FusedMultiplyAdd(wv, v1, a11); a12 = Vector512.FusedMultiplyAdd(wv, v2, a12); a13 = Vector512.FusedMultiplyAdd(wv, v3, a13);
            wv = Vector512.Load(w2 + i);
            a20 = Vector512.FusedMultiplyAdd(wv, v0, a20); a21 = Vector512.FusedMultiplyAdd(wv, v1, a21); a22 = Vector512.FusedMultiplyAdd(wv, v2, a22); a23 = Vector512.FusedMultiplyAdd(wv, v3, a23);
            wv = Vector512.Load(w3 + i);
            a30 = Vector512.FusedMultiplyAdd(wv, v0, a30); a31 = Vector512.FusedMultiplyAdd(wv, v1, a31); a32 = Vector512.FusedMultiplyAdd(wv, v2, a32); a33 = Vector512.FusedMultiplyAdd(wv, v3, a33);
        }
        PutF32(y, m, x, w, i, k, a00, a01, a02, a03);
        PutF32(y + 1, m, x, w1, i, k, a10, a11, a12, a13);
        PutF32(y + 2, m, x, w2, i, k, a20, a21, a22, a23);
        PutF32(y + 3, m, x, w3, i, k, a30, a31, a32, a33);
    }

    // y[t * m] += weight row w . x row t for t < 4, from their accumulators and the scalar tail from i.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PutF32(float* y, int m, float* x, float* w, int i, int k, Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3)
    {
        y[0] += TailF32(x, w, i, k, Vector512.Sum(a0));
        y[m] += TailF32(x + k, w, i, k, Vector512.Sum(a1));
        y[2L * m] += TailF32(x + 2L * k, w, i, k, Vector512.Sum(a2));
        y[3L * m] += TailF32(x + 3L * k, w, i, k, Vector512.Sum(a3));
    }

    // One weight row against n <= 4 x rows (y[t * m] for x row t), streaming the row once.
    private static void FewRowsF32(float* x, float* wr, float* y, int n, int k, int m)
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            for (int t = 0; t < n; t++) y[(long)t * m] += RowF32(x + (long)t * k, wr, k);
            return;
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
        y[0] += TailF32(x, wr, i, k, Vector512.Sum(a0));
        if (n > 1) y[m] += TailF32(x1, wr, i, k, Vector512.Sum(a1));
        if (n > 2) y[2L * m] += TailF32(x2, wr, i, k, Vector512.Sum(a2));
        if (n > 3) y[3L * m] += TailF32(x3, wr, i, k, Vector512.Sum(a3));
    }

    private static void BatchRowsBf16(float* x, ushort* w, float* y, int n, int k, int m, int r0, int r1)
    {
        int r = r0;
        if (Vector512.IsHardwareAccelerated)
            for (; r <= r1 - 4; r += 4)
            {
                int t = 0;
                for (; t <= n - 4; t += 4) Tile4x4Bf16(x + (long)t * k, w + (long)r * k, y + (long)t * m + r, k, m);
                if (t < n)
                    for (int i = 0; i < 4; i++) FewRowsBf16(x + (long)t * k, w + (long)(r + i) * k, y + (long)t * m + r + i, n - t, k, m);
            }
        for (; r < r1; r++)
            for (int t = 0; t < n; t += 4) FewRowsBf16(x + (long)t * k, w + (long)r * k, y + (long)t * m + r, Math.Min(4, n - t), k, m);
    }

    private static void Tile4x4Bf16(float* x, ushort* w, float* y, int k, int m)
    {
        float* x1 = x + k, x2 = x1 + k, x3 = x2 + k;
        ushort* w1 = w + k, w2 = w1 + k, w3 = w2 + k;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default,
            a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default, a32 = default, a33 = default;
        int i = 0;
        for (; i <= k - 32; i += 32)
        {
            Vector512<float> l0 = Vector512.Load(x + i), h0 = Vector512.Load(x + i + 16), l1 = Vector512.Load(x1 + i), h1 = Vector512.Load(x1 + i + 16),
                l2 = Vector512.Load(x2 + i), h2 = Vector512.Load(x2 + i + 16), l3 = Vector512.Load(x3 + i), h3 = Vector512.Load(x3 + i + 16);
            Step4(w + i, l0, h0, l1, h1, l2, h2, l3, h3, ref a00, ref a01, ref a02, ref a03);
            Step4(w1 + i, l0, h0, l1, h1, l2, h2, l3, h3, ref a10, ref a11, ref a12, ref a13);
            Step4(w2 + i, l0, h0, l1, h1, l2, h2, l3, h3, ref a20, ref a21, ref a22, ref a23);
            Step4(w3 + i, l0, h0, l1, h1, l2, h2, l3, h3, ref a30, ref a31, ref a32, ref a33);
        }
        PutBf16(y, m, x, w, i, k, a00, a01, a02, a03);
        PutBf16(y + 1, m, x, w1, i, k, a10, a11, a12, a13);
        PutBf16(y + 2, m, x, w2, i, k, a20, a21, a22, a23);
        PutBf16(y + 3, m, x, w3, i, k, a30, a31, a32, a33);
    }

    // 32 bf16 weights against four x rows' matching 32 values (low and high halves), as Step512 does.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Step4(ushort* w, Vector512<float> l0, Vector512<float> h0, Vector512<float> l1, Vector512<float> h1,
        Vector512<float> l2, Vector512<float> h2, Vector512<float> l3, Vector512<float> h3,
        ref Vector512<float> a0, ref Vector512<float> a1, ref Vector512<float> a2, ref Vector512<float> a3)
    {
        var u = Vector512.Load(w);
        Vector512<float> lo = Vector512.ShiftLeft(Vector512.WidenLower(u), 16).AsSingle(), hi = Vector512.ShiftLeft(Vector512.WidenUpper(u), 16).AsSingle();
        a0 = Vector512.FusedMultiplyAdd(hi, h0, Vector512.FusedMultiplyAdd(lo, l0, a0));
        a1 = Vector512.FusedMultiplyAdd(hi, h1, Vector512.FusedMultiplyAdd(lo, l1, a1));
        a2 = Vector512.FusedMultiplyAdd(hi, h2, Vector512.FusedMultiplyAdd(lo, l2, a2));
        a3 = Vector512.FusedMultiplyAdd(hi, h3, Vector512.FusedMultiplyAdd(lo, l3, a3));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PutBf16(float* y, int m, float* x, ushort* w, int i, int k, Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3)
    {
        y[0] += TailBf16(x, w, i, k, Vector512.Sum(a0));
        y[m] += TailBf16(x + k, w, i, k, Vector512.Sum(a1));
        y[2L * m] += TailBf16(x + 2L * k, w, i, k, Vector512.Sum(a2));
        y[3L * m] += TailBf16(x + 3L * k, w, i, k, Vector512.Sum(a3));
    }

    private static void FewRowsBf16(float* x, ushort* wr, float* y, int n, int k, int m)
    {
        if (!Vector512.IsHardwareAccelerated)
        {
            for (int t = 0; t < n; t++) y[(long)t * m] += RowBf16(x + (long)t * k, wr, k);
            return;
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
        y[0] += TailBf16(x, wr, i, k, Vector512.Sum(a0));
        if (n > 1) y[m] += TailBf16(x1, wr, i, k, Vector512.Sum(a1));
        if (n > 2) y[2L * m] += TailBf16(x2, wr, i, k, Vector512.Sum(a2));
        if (n > 3) y[3L * m] += TailBf16(x3, wr, i, k, Vector512.Sum(a3));
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
