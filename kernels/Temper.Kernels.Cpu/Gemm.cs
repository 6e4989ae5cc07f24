// Gemm: y[N,M] += x[N,K] · w[M,K]^T with w f32 or bf16 (the Linear forward of a batch of token rows).
// Both operands are K-contiguous. Blocked and packed the BLIS way: a KC-deep slice of x rows is packed
// into micro-panels xp[TN rows][KC] laid out [k][TN] (the broadcast operand, kept in L1 per panel),
// an MC x KC block of w into wp[k][TM] micro-panels (the vector operand, kept in L2; bf16 widened while
// packing), and a register-tiled micro-kernel accumulates a TN x TM tile of y with FMAs:
//   AVX-512: TN 12 x TM 32 (24 zmm accumulators), AVX2: TN 4 x TM 24 (12 ymm), scalar: TN 4 x TM 8.
// Threads take a static grid of output tiles; each y element is computed by one thread, with its sum over
// k in a fixed order (KC blocks in turn, k ascending inside), so results are bitwise independent of the
// thread count. The caller initialises y (zeros, bias or the previous value when accumulating).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Temper.Kernels.Cpu;

/// <summary>Which micro-kernel a GEMM uses; Auto picks the widest the CPU runs.</summary>
public enum GemmKernel
{
    Auto,
    Avx512,
    Avx2,
    Scalar,
}

public static unsafe class Gemm
{
    /// <summary>Depth of one packed block: the k order of every sum is KC blocks in turn.</summary>
    public const int KC = 384;
    private const int MC = 384; // w rows per packed block (fits L2 with its KC depth)
    private const int NC = 1536; // x rows per packed panel

    /// <summary>y[n,m] += sum_k x[n,k] w[m,k] for f32 weights.</summary>
    public static void Multiply(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int k, int m, int threads, GemmKernel kernel = GemmKernel.Auto)
    {
        CheckSizes(x.Length, w.Length, y.Length, n, k, m);
        fixed (float* px = x) fixed (float* pw = w) fixed (float* py = y)
            Run(new Job(px, pw, null, py, n, k, m, Resolve(kernel)), threads);
    }

    /// <summary>y[n,m] += sum_k x[n,k] w[m,k] for bf16 weights (widened to f32 when packed).</summary>
    public static void Multiply(ReadOnlySpan<float> x, ReadOnlySpan<ushort> wBf16, Span<float> y, int n, int k, int m, int threads, GemmKernel kernel = GemmKernel.Auto)
    {
        CheckSizes(x.Length, wBf16.Length, y.Length, n, k, m);
        fixed (float* px = x) fixed (ushort* pw = wBf16) fixed (float* py = y)
            Run(new Job(px, null, pw, py, n, k, m, Resolve(kernel)), threads);
    }

    public static GemmKernel Resolve(GemmKernel k)
    {
        if (k == GemmKernel.Auto)
            return Avx512F.IsSupported ? GemmKernel.Avx512 : Fma.IsSupported && Avx2.IsSupported ? GemmKernel.Avx2 : GemmKernel.Scalar;
        if (k == GemmKernel.Avx512 && !Avx512F.IsSupported) throw new PlatformNotSupportedException("gemm: AVX-512 is not supported here");
        if (k == GemmKernel.Avx2 && !(Fma.IsSupported && Avx2.IsSupported)) throw new PlatformNotSupportedException("gemm: AVX2/FMA is not supported here");
        return k;
    }

    private static void CheckSizes(int xl, int wl, int yl, int n, int k, int m)
    {
        if (n < 0 || k < 0 || m < 0 || xl != (long)n * k || wl != (long)m * k || yl != (long)n * m)
            throw new ArgumentException($"gemm: x has {xl} (need {n}x{k}), w {wl} (need {m}x{k}), y {yl} (need {n}x{m})");
    }

    private readonly struct Job(float* x, float* w, ushort* wb, float* y, int n, int k, int m, GemmKernel kernel)
    {
        public readonly float* X = x, W = w, Y = y;
        public readonly ushort* Wb = wb;
        public readonly int N = n, K = k, M = m;
        public readonly GemmKernel Kernel = kernel;
        public int TileN => Kernel switch { GemmKernel.Avx512 => 12, _ => 4 };
        public int TileM => Kernel switch { GemmKernel.Avx512 => 32, GemmKernel.Avx2 => 24, _ => 8 };
    }

    private static void Run(Job job, int threads)
    {
        if (job.N == 0 || job.M == 0 || job.K == 0) return;
        int tilesN = (job.N + job.TileN - 1) / job.TileN, tilesM = (job.M + job.TileM - 1) / job.TileM;
        // Small products are not worth waking a second thread; the grid never changes the arithmetic.
        long flops = 2L * job.N * job.M * job.K;
        int t = (int)Math.Max(1, Math.Min(Math.Min(threads, (long)tilesN * tilesM), flops / (1L << 20)));
        var (gn, gm) = Grid(t, tilesN, tilesM);
        if (t == 1) { Worker(job, 0, tilesN, 0, tilesM); return; }
        Parallel.For(0, t, new ParallelOptions { MaxDegreeOfParallelism = t }, i =>
        {
            int a = i / gm, b = i % gm;
            Worker(job, (int)((long)a * tilesN / gn), (int)((long)(a + 1) * tilesN / gn),
                        (int)((long)b * tilesM / gm), (int)((long)(b + 1) * tilesM / gm));
        });
    }

    // The gn x gm = t split of the tile grid whose largest share is smallest.
    private static (int, int) Grid(int t, int tilesN, int tilesM)
    {
        (int, int) best = (t, 1);
        long bestCost = long.MaxValue;
        for (int gn = 1; gn <= t; gn++)
        {
            if (t % gn != 0) continue;
            int gm = t / gn;
            if (gn > tilesN || gm > tilesM) continue;
            long cost = (long)((tilesN + gn - 1) / gn) * ((tilesM + gm - 1) / gm);
            if (cost < bestCost) { bestCost = cost; best = (gn, gm); }
        }
        return best;
    }

    [ThreadStatic] private static float[]? t_packX, t_packW;

    private static float* Aligned(ref float[]? buf, int floats)
    {
        if (buf == null || buf.Length < floats + 16) buf = GC.AllocateUninitializedArray<float>(floats + 16, pinned: true);
        nint p = (nint)Unsafe.AsPointer(ref buf[0]);
        return (float*)((p + 63) & ~(nint)63);
    }

    // One thread's share: output rows in tiles [tn0,tn1), columns in tiles [tm0,tm1).
    private static void Worker(Job job, int tn0, int tn1, int tm0, int tm1)
    {
        int tnSize = job.TileN, tmSize = job.TileM;
        int n0 = tn0 * tnSize, n1 = Math.Min(job.N, tn1 * tnSize);
        int m0 = tm0 * tmSize, m1 = Math.Min(job.M, tm1 * tmSize);
        if (n0 >= n1 || m0 >= m1) return;
        int nc = Math.Min(NC, RoundUp(n1 - n0, tnSize));
        int mc = Math.Min(MC, RoundUp(m1 - m0, tmSize));
        int kc = Math.Min(KC, job.K);
        float* xp = Aligned(ref t_packX, nc * kc);
        float* wp = Aligned(ref t_packW, mc * kc);
        float* edge = stackalloc float[12 * 32 + 16];
        edge = (float*)(((nint)edge + 63) & ~(nint)63);

        for (int jc = n0; jc < n1; jc += NC)
        {
            int ncur = Math.Min(NC, n1 - jc);
            for (int pc = 0; pc < job.K; pc += KC)
            {
                int kcur = Math.Min(KC, job.K - pc);
                PackRows(job.X, null, job.K, jc, ncur, pc, kcur, tnSize, xp);
                for (int ic = m0; ic < m1; ic += MC)
                {
                    int mcur = Math.Min(MC, m1 - ic);
                    PackRows(job.W, job.Wb, job.K, ic, mcur, pc, kcur, tmSize, wp);
                    for (int jr = 0; jr < ncur; jr += tnSize)
                    {
                        int nrows = Math.Min(tnSize, ncur - jr);
                        float* bPanel = xp + (long)jr * kcur;
                        for (int ir = 0; ir < mcur; ir += tmSize)
                        {
                            int ncols = Math.Min(tmSize, mcur - ir);
                            float* aPanel = wp + (long)ir * kcur;
                            float* c = job.Y + (long)(jc + jr) * job.M + ic + ir;
                            if (nrows == tnSize && ncols == tmSize)
                            {
                                Micro(job.Kernel, kcur, aPanel, bPanel, c, job.M);
                            }
                            else
                            {
                                new Span<float>(edge, tnSize * tmSize).Clear();
                                Micro(job.Kernel, kcur, aPanel, bPanel, edge, tmSize);
                                for (int r = 0; r < nrows; r++)
                                    for (int q = 0; q < ncols; q++)
                                        c[(long)r * job.M + q] += edge[r * tmSize + q];
                            }
                        }
                    }
                }
            }
        }
    }

    private static int RoundUp(int v, int to) => (v + to - 1) / to * to;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Micro(GemmKernel kernel, int kc, float* a, float* b, float* c, nint ldc)
    {
        if (kernel == GemmKernel.Avx512) Kernel12x32(kc, a, b, c, ldc);
        else if (kernel == GemmKernel.Avx2) Kernel4x24(kc, a, b, c, ldc);
        else Kernel4x8(kc, a, b, c, ldc);
    }

    // Packs rows [r0, r0+rows) x columns [k0, k0+kc) of a row-major [*, ld] matrix (f32 src or bf16 srcB)
    // into panels of `tile` rows (a multiple of 4), each laid out [k][tile]; rows past `rows` are zero.
    // Full panels are transposed 8x8 (then 4x4) in registers; the last partial panel element by element.
    private static void PackRows(float* src, ushort* srcB, int ld, int r0, int rows, int k0, int kc, int tile, float* dst)
    {
        for (int p = 0; p < rows; p += tile)
        {
            int live = Math.Min(tile, rows - p);
            float* d = dst + (long)p * kc;
            long off = (long)(r0 + p) * ld + k0;
            if (live == tile && Avx2.IsSupported) PackPanelAvx2(src == null ? null : src + off, srcB == null ? null : srcB + off, ld, kc, tile, d);
            else PackPanelScalar(src == null ? null : src + off, srcB == null ? null : srcB + off, ld, live, kc, tile, d);
        }
    }

    private static void PackPanelScalar(float* src, ushort* srcB, int ld, int live, int kc, int tile, float* d)
    {
        for (int i = 0; i < live; i++)
        {
            if (src != null)
            {
                float* s = src + (long)i * ld;
                for (int kk = 0; kk < kc; kk++) d[kk * tile + i] = s[kk];
            }
            else
            {
                ushort* s = srcB + (long)i * ld;
                for (int kk = 0; kk < kc; kk++) d[kk * tile + i] = BitConverter.Int32BitsToSingle(s[kk] << 16);
            }
        }
        for (int i = live; i < tile; i++)
            for (int kk = 0; kk < kc; kk++) d[kk * tile + i] = 0;
    }

    private static void PackPanelAvx2(float* src, ushort* srcB, int ld, int kc, int tile, float* d)
    {
        int i = 0;
        for (; i + 8 <= tile; i += 8)
        {
            int kk = 0;
            for (; kk + 8 <= kc; kk += 8)
            {
                long o = (long)i * ld + kk;
                Transpose8x8(Load8(src, srcB, o), Load8(src, srcB, o + ld), Load8(src, srcB, o + 2 * ld), Load8(src, srcB, o + 3 * ld),
                    Load8(src, srcB, o + 4 * ld), Load8(src, srcB, o + 5 * ld), Load8(src, srcB, o + 6 * ld), Load8(src, srcB, o + 7 * ld),
                    d + (long)kk * tile + i, tile);
            }
            PackTail(src, srcB, ld, i, 8, kk, kc, tile, d);
        }
        if (i + 4 <= tile)
        {
            int kk = 0;
            for (; kk + 4 <= kc; kk += 4)
            {
                long o = (long)i * ld + kk;
                Transpose4x4(Load4(src, srcB, o), Load4(src, srcB, o + ld), Load4(src, srcB, o + 2 * ld), Load4(src, srcB, o + 3 * ld),
                    d + (long)kk * tile + i, tile);
            }
            PackTail(src, srcB, ld, i, 4, kk, kc, tile, d);
        }
    }

    // Columns [kk, kc) of rows [i, i+count) of a panel, one by one.
    private static void PackTail(float* src, ushort* srcB, int ld, int i, int count, int kk, int kc, int tile, float* d)
    {
        for (int r = i; r < i + count; r++)
            for (int q = kk; q < kc; q++)
                d[(long)q * tile + r] = src != null ? src[(long)r * ld + q] : BitConverter.Int32BitsToSingle(srcB[(long)r * ld + q] << 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Load8(float* src, ushort* srcB, long o) =>
        src != null ? Avx.LoadVector256(src + o) : Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(srcB + o), 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Load4(float* src, ushort* srcB, long o) =>
        src != null ? Sse.LoadVector128(src + o) : Sse2.ShiftLeftLogical(Sse41.ConvertToVector128Int32(srcB + o), 16).AsSingle();

    // Writes column j of the 8x8 block with rows r0..r7 to dst + j*ldd.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8x8(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, float* dst, nint ldd)
    {
        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44);
        var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44);
        var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44);
        var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44);
        var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Store(dst, Avx.Permute2x128(u0, u4, 0x20));
        Avx.Store(dst + ldd, Avx.Permute2x128(u1, u5, 0x20));
        Avx.Store(dst + 2 * ldd, Avx.Permute2x128(u2, u6, 0x20));
        Avx.Store(dst + 3 * ldd, Avx.Permute2x128(u3, u7, 0x20));
        Avx.Store(dst + 4 * ldd, Avx.Permute2x128(u0, u4, 0x31));
        Avx.Store(dst + 5 * ldd, Avx.Permute2x128(u1, u5, 0x31));
        Avx.Store(dst + 6 * ldd, Avx.Permute2x128(u2, u6, 0x31));
        Avx.Store(dst + 7 * ldd, Avx.Permute2x128(u3, u7, 0x31));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose4x4(Vector128<float> r0, Vector128<float> r1, Vector128<float> r2, Vector128<float> r3, float* dst, nint ldd)
    {
        var t0 = Sse.UnpackLow(r0, r1);
        var t1 = Sse.UnpackHigh(r0, r1);
        var t2 = Sse.UnpackLow(r2, r3);
        var t3 = Sse.UnpackHigh(r2, r3);
        Sse.Store(dst, Sse.MoveLowToHigh(t0, t2));
        Sse.Store(dst + ldd, Sse.MoveHighToLow(t2, t0));
        Sse.Store(dst + 2 * ldd, Sse.MoveLowToHigh(t1, t3));
        Sse.Store(dst + 3 * ldd, Sse.MoveHighToLow(t3, t1));
    }

    // c[12 rows, ldc][32] += sum_k b[k][0..12) (outer) a[k][0..32): 24 zmm accumulators.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel12x32(int kc, float* a, float* b, float* c, nint ldc)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default,
            c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default,
            c90 = default, c91 = default, ca0 = default, ca1 = default, cb0 = default, cb1 = default;
        for (int k = 0; k < kc; k++)
        {
            var a0 = Avx512F.LoadAlignedVector512(a);
            var a1 = Avx512F.LoadAlignedVector512(a + 16);
            Vector512<float> bv;
            bv = Vector512.Create(b[0]); c00 = Avx512F.FusedMultiplyAdd(a0, bv, c00); c01 = Avx512F.FusedMultiplyAdd(a1, bv, c01);
            bv = Vector512.Create(b[1]); c10 = Avx512F.FusedMultiplyAdd(a0, bv, c10); c11 = Avx512F.FusedMultiplyAdd(a1, bv, c11);
            bv = Vector512.Create(b[2]); c20 = Avx512F.FusedMultiplyAdd(a0, bv, c20); c21 = Avx512F.FusedMultiplyAdd(a1, bv, c21);
            bv = Vector512.Create(b[3]); c30 = Avx512F.FusedMultiplyAdd(a0, bv, c30); c31 = Avx512F.FusedMultiplyAdd(a1, bv, c31);
            bv = Vector512.Create(b[4]); c40 = Avx512F.FusedMultiplyAdd(a0, bv, c40); c41 = Avx512F.FusedMultiplyAdd(a1, bv, c41);
            bv = Vector512.Create(b[5]); c50 = Avx512F.FusedMultiplyAdd(a0, bv, c50); c51 = Avx512F.FusedMultiplyAdd(a1, bv, c51);
            bv = Vector512.Create(b[6]); c60 = Avx512F.FusedMultiplyAdd(a0, bv, c60); c61 = Avx512F.FusedMultiplyAdd(a1, bv, c61);
            bv = Vector512.Create(b[7]); c70 = Avx512F.FusedMultiplyAdd(a0, bv, c70); c71 = Avx512F.FusedMultiplyAdd(a1, bv, c71);
            bv = Vector512.Create(b[8]); c80 = Avx512F.FusedMultiplyAdd(a0, bv, c80); c81 = Avx512F.FusedMultiplyAdd(a1, bv, c81);
            bv = Vector512.Create(b[9]); c90 = Avx512F.FusedMultiplyAdd(a0, bv, c90); c91 = Avx512F.FusedMultiplyAdd(a1, bv, c91);
            bv = Vector512.Create(b[10]); ca0 = Avx512F.FusedMultiplyAdd(a0, bv, ca0); ca1 = Avx512F.FusedMultiplyAdd(a1, bv, ca1);
            bv = Vector512.Create(b[11]); cb0 = Avx512F.FusedMultiplyAdd(a0, bv, cb0); cb1 = Avx512F.FusedMultiplyAdd(a1, bv, cb1);
            a += 32;
            b += 12;
        }
        AddRow512(c, c00, c01); c += ldc;
        AddRow512(c, c10, c11); c += ldc;
        AddRow512(c, c20, c21); c += ldc;
        AddRow512(c, c30, c31); c += ldc;
        AddRow512(c, c40, c41); c += ldc;
        AddRow512(c, c50, c51); c += ldc;
        AddRow512(c, c60, c61); c += ldc;
        AddRow512(c, c70, c71); c += ldc;
        AddRow512(c, c80, c81); c += ldc;
        AddRow512(c, c90, c91); c += ldc;
        AddRow512(c, ca0, ca1); c += ldc;
        AddRow512(c, cb0, cb1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow512(float* c, Vector512<float> v0, Vector512<float> v1)
    {
        Vector512.Store(Vector512.Load(c) + v0, c);
        Vector512.Store(Vector512.Load(c + 16) + v1, c + 16);
    }

    // c[4 rows, ldc][24] += sum_k b[k][0..4) (outer) a[k][0..24): 12 ymm accumulators.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x24(int kc, float* a, float* b, float* c, nint ldc)
    {
        Vector256<float> c00 = default, c01 = default, c02 = default, c10 = default, c11 = default, c12 = default,
            c20 = default, c21 = default, c22 = default, c30 = default, c31 = default, c32 = default;
        for (int k = 0; k < kc; k++)
        {
            var a0 = Avx.LoadVector256(a);
            var a1 = Avx.LoadVector256(a + 8);
            var a2 = Avx.LoadVector256(a + 16);
            Vector256<float> bv;
            bv = Vector256.Create(b[0]); c00 = Fma.MultiplyAdd(a0, bv, c00); c01 = Fma.MultiplyAdd(a1, bv, c01); c02 = Fma.MultiplyAdd(a2, bv, c02);
            bv = Vector256.Create(b[1]); c10 = Fma.MultiplyAdd(a0, bv, c10); c11 = Fma.MultiplyAdd(a1, bv, c11); c12 = Fma.MultiplyAdd(a2, bv, c12);
            bv = Vector256.Create(b[2]); c20 = Fma.MultiplyAdd(a0, bv, c20); c21 = Fma.MultiplyAdd(a1, bv, c21); c22 = Fma.MultiplyAdd(a2, bv, c22);
            bv = Vector256.Create(b[3]); c30 = Fma.MultiplyAdd(a0, bv, c30); c31 = Fma.MultiplyAdd(a1, bv, c31); c32 = Fma.MultiplyAdd(a2, bv, c32);
            a += 24;
            b += 4;
        }
        AddRow256(c, c00, c01, c02); c += ldc;
        AddRow256(c, c10, c11, c12); c += ldc;
        AddRow256(c, c20, c21, c22); c += ldc;
        AddRow256(c, c30, c31, c32);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow256(float* c, Vector256<float> v0, Vector256<float> v1, Vector256<float> v2)
    {
        Vector256.Store(Vector256.Load(c) + v0, c);
        Vector256.Store(Vector256.Load(c + 8) + v1, c + 8);
        Vector256.Store(Vector256.Load(c + 16) + v2, c + 16);
    }

    // The portable micro-kernel: c[4 rows, ldc][8] += sum_k b[k][0..4) (outer) a[k][0..8), one fused
    // multiply-add per product like the SIMD kernels.
    private static void Kernel4x8(int kc, float* a, float* b, float* c, nint ldc)
    {
        float* acc = stackalloc float[32];
        for (int i = 0; i < 32; i++) acc[i] = 0;
        for (int k = 0; k < kc; k++)
        {
            for (int r = 0; r < 4; r++)
            {
                float bv = b[r];
                for (int q = 0; q < 8; q++) acc[r * 8 + q] = MathF.FusedMultiplyAdd(a[q], bv, acc[r * 8 + q]);
            }
            a += 8;
            b += 4;
        }
        for (int r = 0; r < 4; r++)
            for (int q = 0; q < 8; q++) c[r * ldc + q] += acc[r * 8 + q];
    }
}
