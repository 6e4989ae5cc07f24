// The register-tiled products of FlashAttention.cs (Vector512, AVX-512 machines): every product of the
// attention forward and backward has the form C[r, 0:w] (=|+=) sum_{k<n} A_r[k * aStep] * B[k * ldb + 0:w]
// for six rows r: six scalar streams A_r broadcast against rows of B, w columns of B at a time.
//   S  = Q K^T : A_r = query row r (aStep 1, n = D),        B = K^T packed [D, keys]
//   dP = dO V^T: A_r = dOut row r,                            B = V^T packed [D, keys]
//   O  = P V   : A_r = probability row r (aStep 1, n = keys), B = V rows [keys, D] (stride ldkv)
//   dQ = dS K  : A_r = dS row r,                              B = K rows
//   dK += dS^T Q, dV += P^T dOut: A_r = column r of dS or P (aStep = its row stride, n = query rows),
//                                 B = query or dOut rows [rows, D] (stride ldq)
// w is a multiple of 16: 64 columns (6 x 4 = 24 accumulators) at a time, then 16 (a 6 x 1 tail). Rows
// past the tile's last are handed in as a repeat of a real A row and a scratch C row. Each sum runs over
// k in order, so a result depends only on the shapes, never on the thread computing it; a product resumed
// from C's values carries those FMA chains on (PagedAttention's P V over one cache block at a time).
// K^T (V^T) packing transposes 16 x 16 blocks in registers (TransposeRows, also PagedAttention's K^T of a
// row's keys read through its block table, f32 or bf16).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Temper.Kernels.Cpu;

internal static unsafe class AttentionTiles
{
    public const int Rows = 6;

    /// <summary>Whether the tiled kernels run here: AVX-512 and a head size in whole vectors.</summary>
    public static bool Supported(int d) => Vector512.IsHardwareAccelerated && Avx512F.IsSupported && d % 16 == 0;

    /// <summary>C[r, 0:w] (=|+=) sum_{k&lt;n} a[r][k*aStep] * B[k*ldb, 0:w] for r &lt; 6; w a multiple of 16. With resume, the
    /// sums start from C's values instead of 0 (the FMA chains carried on: a product over keys [0, m) then one over [m, n)
    /// resumed gives the bits of one product over [0, n)).</summary>
    public static void Product(float** a, int aStep, float* b, int ldb, int n, int w, float** c, bool accumulate, bool resume = false)
    {
        int col = 0;
        for (; col + 64 <= w; col += 64) Tile64(a, aStep, b + col, ldb, n, c, col, accumulate, resume);
        for (; col < w; col += 16) Tile16(a, aStep, b + col, ldb, n, c, col, accumulate, resume);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile64(float** a, int aStep, float* b, int ldb, int n, float** c, int col, bool accumulate, bool resume)
    {
        float* a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default,
            c20 = default, c21 = default, c22 = default, c23 = default, c30 = default, c31 = default, c32 = default, c33 = default,
            c40 = default, c41 = default, c42 = default, c43 = default, c50 = default, c51 = default, c52 = default, c53 = default;
        if (resume)
        {
            Get4(c[0] + col, out c00, out c01, out c02, out c03);
            Get4(c[1] + col, out c10, out c11, out c12, out c13);
            Get4(c[2] + col, out c20, out c21, out c22, out c23);
            Get4(c[3] + col, out c30, out c31, out c32, out c33);
            Get4(c[4] + col, out c40, out c41, out c42, out c43);
            Get4(c[5] + col, out c50, out c51, out c52, out c53);
        }
        nint off = 0;
        for (int k = 0; k < n; k++, off += aStep, b += ldb)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            var b2 = Vector512.Load(b + 32);
            var b3 = Vector512.Load(b + 48);
            Vector512<float> x;
            x = Vector512.Create(a0[off]); c00 = Vector512.FusedMultiplyAdd(b0, x, c00); c01 = Vector512.FusedMultiplyAdd(b1, x, c01); c02 = Vector512.FusedMultiplyAdd(b2, x, c02); c03 = Vector512.FusedMultiplyAdd(b3, x, c03);
            x = Vector512.Create(a1[off]); c10 = Vector512.FusedMultiplyAdd(b0, x, c10); c11 = Vector512.FusedMultiplyAdd(b1, x, c11); c12 = Vector512.FusedMultiplyAdd(b2, x, c12); c13 = Vector512.FusedMultiplyAdd(b3, x, c13);
            x = Vector512.Create(a2[off]); c20 = Vector512.FusedMultiplyAdd(b0, x, c20); c21 = Vector512.FusedMultiplyAdd(b1, x, c21); c22 = Vector512.FusedMultiplyAdd(b2, x, c22); c23 = Vector512.FusedMultiplyAdd(b3, x, c23);
            x = Vector512.Create(a3[off]); c30 = Vector512.FusedMultiplyAdd(b0, x, c30); c31 = Vector512.FusedMultiplyAdd(b1, x, c31); c32 = Vector512.FusedMultiplyAdd(b2, x, c32); c33 = Vector512.FusedMultiplyAdd(b3, x, c33);
            x = Vector512.Create(a4[off]); c40 = Vector512.FusedMultiplyAdd(b0, x, c40); c41 = Vector512.FusedMultiplyAdd(b1, x, c41); c42 = Vector512.FusedMultiplyAdd(b2, x, c42); c43 = Vector512.FusedMultiplyAdd(b3, x, c43);
            x = Vector512.Create(a5[off]); c50 = Vector512.FusedMultiplyAdd(b0, x, c50); c51 = Vector512.FusedMultiplyAdd(b1, x, c51); c52 = Vector512.FusedMultiplyAdd(b2, x, c52); c53 = Vector512.FusedMultiplyAdd(b3, x, c53);
        }
        Put4(c[0] + col, c00, c01, c02, c03, accumulate);
        Put4(c[1] + col, c10, c11, c12, c13, accumulate);
        Put4(c[2] + col, c20, c21, c22, c23, accumulate);
        Put4(c[3] + col, c30, c31, c32, c33, accumulate);
        Put4(c[4] + col, c40, c41, c42, c43, accumulate);
        Put4(c[5] + col, c50, c51, c52, c53, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile16(float** a, int aStep, float* b, int ldb, int n, float** c, int col, bool accumulate, bool resume)
    {
        float* a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default;
        if (resume)
        {
            c0 = Vector512.Load(c[0] + col); c1 = Vector512.Load(c[1] + col); c2 = Vector512.Load(c[2] + col);
            c3 = Vector512.Load(c[3] + col); c4 = Vector512.Load(c[4] + col); c5 = Vector512.Load(c[5] + col);
        }
        nint off = 0;
        for (int k = 0; k < n; k++, off += aStep, b += ldb)
        {
            var b0 = Vector512.Load(b);
            c0 = Vector512.FusedMultiplyAdd(b0, Vector512.Create(a0[off]), c0);
            c1 = Vector512.FusedMultiplyAdd(b0, Vector512.Create(a1[off]), c1);
            c2 = Vector512.FusedMultiplyAdd(b0, Vector512.Create(a2[off]), c2);
            c3 = Vector512.FusedMultiplyAdd(b0, Vector512.Create(a3[off]), c3);
            c4 = Vector512.FusedMultiplyAdd(b0, Vector512.Create(a4[off]), c4);
            c5 = Vector512.FusedMultiplyAdd(b0, Vector512.Create(a5[off]), c5);
        }
        Put(c[0] + col, c0, accumulate);
        Put(c[1] + col, c1, accumulate);
        Put(c[2] + col, c2, accumulate);
        Put(c[3] + col, c3, accumulate);
        Put(c[4] + col, c4, accumulate);
        Put(c[5] + col, c5, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Get4(float* c, out Vector512<float> v0, out Vector512<float> v1, out Vector512<float> v2, out Vector512<float> v3)
    {
        v0 = Vector512.Load(c);
        v1 = Vector512.Load(c + 16);
        v2 = Vector512.Load(c + 32);
        v3 = Vector512.Load(c + 48);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put4(float* c, Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3, bool accumulate)
    {
        Put(c, v0, accumulate);
        Put(c + 16, v1, accumulate);
        Put(c + 32, v2, accumulate);
        Put(c + 48, v3, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Put(float* c, Vector512<float> v, bool accumulate) => (accumulate ? Vector512.Load(c) + v : v).Store(c);

    /// <summary>kt[t, j] = rows[j * ld + t] for j &lt; n, t &lt; d; columns n..width-1 zero (kt is [d, width]). With AVX-512 and
    /// d % 16 == 0, whole 16-row groups go through TransposeRows.</summary>
    public static void Transpose(float* rows, int ld, int n, int d, float* kt, int width)
    {
        for (int t = 0; t < d; t++) new Span<float>(kt + (long)t * width + n, width - n).Clear();
        const int block = 16;
        int j0 = 0;
        if (Supported(d))
        {
            var at = stackalloc nint[block];
            for (; j0 + block <= n; j0 += block)
            {
                for (int i = 0; i < block; i++) at[i] = (nint)(rows + (long)(j0 + i) * ld);
                for (int t0 = 0; t0 < d; t0 += 16) TransposeRows<float>(at, t0, kt + (long)t0 * width + j0, width);
            }
        }
        for (; j0 < n; j0 += block)
        {
            int j1 = Math.Min(n, j0 + block);
            for (int t = 0; t < d; t++)
            {
                float* dst = kt + (long)t * width;
                for (int j = j0; j < j1; j++) dst[j] = rows[(long)j * ld + t];
            }
        }
    }

    // kt[i * ld + lane] = rows[lane][at + i] for i, lane < 16: a 16-key x 16-value block transposed in registers (one method, so
    // the JIT keeps the 16 rows in registers): pairs of rows interleaved, pairs of pairs (each 128-bit lane then holds a
    // transposed 4 x 4 block), then the 4 x 4 grid of lanes transposed by two rounds of even (0x88) / odd (0xDD) lane picks.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void TransposeRows<T>(nint* rows, int at, float* kt, int ld) where T : unmanaged
    {
        Vector512<float> r0 = Load16((T*)rows[0] + at), r1 = Load16((T*)rows[1] + at), r2 = Load16((T*)rows[2] + at), r3 = Load16((T*)rows[3] + at),
            r4 = Load16((T*)rows[4] + at), r5 = Load16((T*)rows[5] + at), r6 = Load16((T*)rows[6] + at), r7 = Load16((T*)rows[7] + at),
            r8 = Load16((T*)rows[8] + at), r9 = Load16((T*)rows[9] + at), r10 = Load16((T*)rows[10] + at), r11 = Load16((T*)rows[11] + at),
            r12 = Load16((T*)rows[12] + at), r13 = Load16((T*)rows[13] + at), r14 = Load16((T*)rows[14] + at), r15 = Load16((T*)rows[15] + at);
        Vector512<float> t0 = Avx512F.UnpackLow(r0, r1), t1 = Avx512F.UnpackHigh(r0, r1), t2 = Avx512F.UnpackLow(r2, r3), t3 = Avx512F.UnpackHigh(r2, r3),
            t4 = Avx512F.UnpackLow(r4, r5), t5 = Avx512F.UnpackHigh(r4, r5), t6 = Avx512F.UnpackLow(r6, r7), t7 = Avx512F.UnpackHigh(r6, r7),
            t8 = Avx512F.UnpackLow(r8, r9), t9 = Avx512F.UnpackHigh(r8, r9), t10 = Avx512F.UnpackLow(r10, r11), t11 = Avx512F.UnpackHigh(r10, r11),
            t12 = Avx512F.UnpackLow(r12, r13), t13 = Avx512F.UnpackHigh(r12, r13), t14 = Avx512F.UnpackLow(r14, r15), t15 = Avx512F.UnpackHigh(r14, r15);
        r0 = Lo(t0, t2); r1 = Hi(t0, t2); r2 = Lo(t1, t3); r3 = Hi(t1, t3); r4 = Lo(t4, t6); r5 = Hi(t4, t6); r6 = Lo(t5, t7); r7 = Hi(t5, t7);
        r8 = Lo(t8, t10); r9 = Hi(t8, t10); r10 = Lo(t9, t11); r11 = Hi(t9, t11); r12 = Lo(t12, t14); r13 = Hi(t12, t14); r14 = Lo(t13, t15); r15 = Hi(t13, t15);
        t0 = Avx512F.Shuffle4x128(r0, r4, 0x88); t1 = Avx512F.Shuffle4x128(r1, r5, 0x88); t2 = Avx512F.Shuffle4x128(r2, r6, 0x88); t3 = Avx512F.Shuffle4x128(r3, r7, 0x88);
        t4 = Avx512F.Shuffle4x128(r0, r4, 0xDD); t5 = Avx512F.Shuffle4x128(r1, r5, 0xDD); t6 = Avx512F.Shuffle4x128(r2, r6, 0xDD); t7 = Avx512F.Shuffle4x128(r3, r7, 0xDD);
        t8 = Avx512F.Shuffle4x128(r8, r12, 0x88); t9 = Avx512F.Shuffle4x128(r9, r13, 0x88); t10 = Avx512F.Shuffle4x128(r10, r14, 0x88); t11 = Avx512F.Shuffle4x128(r11, r15, 0x88);
        t12 = Avx512F.Shuffle4x128(r8, r12, 0xDD); t13 = Avx512F.Shuffle4x128(r9, r13, 0xDD); t14 = Avx512F.Shuffle4x128(r10, r14, 0xDD); t15 = Avx512F.Shuffle4x128(r11, r15, 0xDD);
        Avx512F.Shuffle4x128(t0, t8, 0x88).Store(kt); Avx512F.Shuffle4x128(t1, t9, 0x88).Store(kt + ld);
        Avx512F.Shuffle4x128(t2, t10, 0x88).Store(kt + 2 * ld); Avx512F.Shuffle4x128(t3, t11, 0x88).Store(kt + 3 * ld);
        Avx512F.Shuffle4x128(t4, t12, 0x88).Store(kt + 4 * ld); Avx512F.Shuffle4x128(t5, t13, 0x88).Store(kt + 5 * ld);
        Avx512F.Shuffle4x128(t6, t14, 0x88).Store(kt + 6 * ld); Avx512F.Shuffle4x128(t7, t15, 0x88).Store(kt + 7 * ld);
        Avx512F.Shuffle4x128(t0, t8, 0xDD).Store(kt + 8 * ld); Avx512F.Shuffle4x128(t1, t9, 0xDD).Store(kt + 9 * ld);
        Avx512F.Shuffle4x128(t2, t10, 0xDD).Store(kt + 10 * ld); Avx512F.Shuffle4x128(t3, t11, 0xDD).Store(kt + 11 * ld);
        Avx512F.Shuffle4x128(t4, t12, 0xDD).Store(kt + 12 * ld); Avx512F.Shuffle4x128(t5, t13, 0xDD).Store(kt + 13 * ld);
        Avx512F.Shuffle4x128(t6, t14, 0xDD).Store(kt + 14 * ld); Avx512F.Shuffle4x128(t7, t15, 0xDD).Store(kt + 15 * ld);
    }

    private static Vector512<float> Lo(Vector512<float> a, Vector512<float> b) => Avx512F.UnpackLow(a.AsDouble(), b.AsDouble()).AsSingle();
    private static Vector512<float> Hi(Vector512<float> a, Vector512<float> b) => Avx512F.UnpackHigh(a.AsDouble(), b.AsDouble()).AsSingle();

    // Sixteen values as f32: f32 loaded, bf16 bits widened (zero-extend, shift by 16).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16<T>(T* p) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return Vector512.Load((float*)p);
        var u = Vector256.Load((ushort*)p);
        return Vector512.ShiftLeft(Vector512.Create(Vector256.WidenLower(u), Vector256.WidenUpper(u)), 16).AsSingle();
    }

    /// <summary>p[j] = exp(p[j] - shift) for j &lt; n (n a multiple of 16); returns the sum.</summary>
    public static float ExpShifted(float* p, int n, float shift)
    {
        var sh = Vector512.Create(shift);
        Vector512<float> s0 = default, s1 = default;
        int j = 0;
        for (; j + 32 <= n; j += 32)
        {
            var e0 = Vector512.Exp(Vector512.Load(p + j) - sh);
            var e1 = Vector512.Exp(Vector512.Load(p + j + 16) - sh);
            e0.Store(p + j);
            e1.Store(p + j + 16);
            s0 += e0;
            s1 += e1;
        }
        if (j < n)
        {
            var e0 = Vector512.Exp(Vector512.Load(p + j) - sh);
            e0.Store(p + j);
            s0 += e0;
        }
        return Vector512.Sum(s0 + s1);
    }

    /// <summary>p[j] = exp(p[j] - shift) for j &lt; n (n a multiple of 16); returns sum_j p[j] dp[j] of the new values.</summary>
    public static float ExpShiftedDot(float* p, float* dp, int n, float shift)
    {
        var sh = Vector512.Create(shift);
        Vector512<float> s0 = default, s1 = default;
        int j = 0;
        for (; j + 32 <= n; j += 32)
        {
            var e0 = Vector512.Exp(Vector512.Load(p + j) - sh);
            var e1 = Vector512.Exp(Vector512.Load(p + j + 16) - sh);
            e0.Store(p + j);
            e1.Store(p + j + 16);
            s0 = Vector512.FusedMultiplyAdd(e0, Vector512.Load(dp + j), s0);
            s1 = Vector512.FusedMultiplyAdd(e1, Vector512.Load(dp + j + 16), s1);
        }
        if (j < n)
        {
            var e0 = Vector512.Exp(Vector512.Load(p + j) - sh);
            e0.Store(p + j);
            s0 = Vector512.FusedMultiplyAdd(e0, Vector512.Load(dp + j), s0);
        }
        return Vector512.Sum(s0 + s1);
    }

    /// <summary>ds[j] = scale p[j] (ds[j] - delta) for j &lt; n (n a multiple of 16).</summary>
    public static void SoftmaxGrad(float* p, float* ds, int n, float delta, float scale)
    {
        var dv = Vector512.Create(delta);
        var sv = Vector512.Create(scale);
        for (int j = 0; j < n; j += 16)
            (sv * Vector512.Load(p + j) * (Vector512.Load(ds + j) - dv)).Store(ds + j);
    }

    /// <summary>x[j] *= s for j &lt; n, n a multiple of 16.</summary>
    public static void ScaleRow(float* x, int n, float s)
    {
        var sv = Vector512.Create(s);
        for (int j = 0; j < n; j += 16) (Vector512.Load(x + j) * sv).Store(x + j);
    }

    /// <summary>max of x[j], j &lt; n (n a multiple of 16, -inf for none).</summary>
    public static float Max(float* x, int n)
    {
        var m = Vector512.Create(float.NegativeInfinity);
        for (int j = 0; j < n; j += 16) m = Vector512.Max(m, Vector512.Load(x + j));
        float max = float.NegativeInfinity;
        for (int l = 0; l < 16; l++) max = MathF.Max(max, m[l]);
        return max;
    }
}
