// Gemm: c[N,M] += a · b over a reduction of length K, f32 with b optionally bf16 (widened while packed).
// The forward Linear is the "NT" form c[N,M] += x[N,K] w[M,K]^T (both operands K-contiguous); backward
// uses "NN" (dx[N,K] += dy[N,M] w[M,K]) and "TN" (dw[M,K] += dy[N,M]^T x[N,K]). Each operand is stored
// either rows-by-reduction ([rows, K], packed with register transposes) or reduction-by-rows ([K, rows],
// packed by copying), and from there every form runs the same code.
// Blocked and packed the BLIS way: a KC-deep slice of up to NC rows of a is packed into micro-panels
// laid out [k][TN] (the broadcast operand; one panel stays in L1), an MC x KC block of b into [k][TM]
// micro-panels (the vector operand, kept in L2), and a register-tiled micro-kernel accumulates a TN x TM
// tile of c with FMAs. A b stored reduction-by-rows (the backward's weight in dx = dy w) already has each
// step's TM values side by side, so the 12 x 32 kernel reads it in place, unpacked (bf16 widened as it loads);
// the AVX-512 kernels read a where it lies too, by rows or by columns, where that pays (ReadsAInPlace). Tiles:
//   AVX-512: TN 12 x TM 32 (24 zmm accumulators), or TN 24 x TM 16 when M <= 16 (LoRA's rank-wide
//   products; 24 zmm), AVX2: TN 4 x TM 24 (12 ymm), scalar: TN 4 x TM 8.
// An optional second reduction segment appends K2 more terms to every sum, c += a b + a2 b2, with its own
// operands (LoRA's forward: [x | s xa] [W | B]^T, so the adapter's product costs no second pass over c);
// it is packed beside the last KC block and summed after it, in the same registers.
// Threads take a static grid of output tiles; each c element is computed by one thread, with its sum over
// k in a fixed order (KC blocks in turn, k ascending inside, each block's sum added to c), so results are
// bitwise independent of the thread count. The caller initialises c (bias or a previous value), or passes
// overwrite, and the first KC block stores its sums (exactly 0 + sum) instead of a zeroing pass over c.
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
    /// <summary>
    /// Depth of one packed block: the k order of every sum is KC blocks in turn. 576 with MC 192 (a 442 KB b block,
    /// well inside a 1 MB L2 beside a's panels) made the SmolLM-shaped training step 7% faster than 384 x 384, whose
    /// 590 KB block left little L2 for the rest (docs/PERF.md); 2048^3 alone stays at 0.93-0.97 of OpenBLAS.
    /// </summary>
    public const int KC = 576;
    /// <summary>Products with at most this many outputs a row use the AVX-512 24 x 16 tiles.</summary>
    public const int NarrowWidth = 16;
    private const int MC = 192; // b rows per packed block (fits L2 with its KC depth)
    private const int NC = 3072; // a rows per packed panel

    /// <summary>y[n,m] += sum_k x[n,k] w[m,k] (x [N,K], w [M,K], y [N,M]).</summary>
    public static void Multiply(ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> y, int n, int k, int m, int threads, GemmKernel kernel = GemmKernel.Auto, bool overwrite = false)
    {
        CheckSizes("NT", x.Length, w.Length, y.Length, n, k, m);
        fixed (float* px = x) fixed (float* pw = w) fixed (float* py = y)
            Run(new Job(px, k, true, pw, null, k, true, py, m, n, k, m, Resolve(kernel)) { Overwrite = overwrite }, threads);
    }

    /// <summary>y[n,m] += sum_k x[n,k] w[m,k] with bf16 w.</summary>
    public static void Multiply(ReadOnlySpan<float> x, ReadOnlySpan<ushort> wBf16, Span<float> y, int n, int k, int m, int threads, GemmKernel kernel = GemmKernel.Auto, bool overwrite = false)
    {
        CheckSizes("NT", x.Length, wBf16.Length, y.Length, n, k, m);
        fixed (float* px = x) fixed (ushort* pw = wBf16) fixed (float* py = y)
            Run(new Job(px, k, true, null, pw, k, true, py, m, n, k, m, Resolve(kernel)) { Overwrite = overwrite }, threads);
    }

    /// <summary>
    /// y[n,m] += sum_k x[n,k] w[m,k] + sum_j x2[n,j] w2[m,j]: the product of [x | x2] and [w | w2]^T, with w f32
    /// (wBf16 empty) or bf16 (w empty), x2 [N,K2] and w2 [M,K2] f32, 0 &lt; K2 &lt;= KC.
    /// </summary>
    public static void Multiply(ReadOnlySpan<float> x, ReadOnlySpan<float> w, ReadOnlySpan<ushort> wBf16, ReadOnlySpan<float> x2, ReadOnlySpan<float> w2,
        Span<float> y, int n, int k, int k2, int m, int threads, GemmKernel kernel = GemmKernel.Auto, bool overwrite = false)
    {
        CheckSizes("NT", x.Length, wBf16.IsEmpty ? w.Length : wBf16.Length, y.Length, n, k, m);
        if (k2 <= 0 || k2 > KC || x2.Length != (long)n * k2 || w2.Length != (long)m * k2 || w.IsEmpty == wBf16.IsEmpty && m * k > 0)
            throw new ArgumentException($"gemm NT+: x2 has {x2.Length} values (need {n}x{k2}), w2 {w2.Length} (need {m}x{k2}), 0 < K2 <= {KC}, one of w and wBf16");
        fixed (float* px = x) fixed (float* pw = w) fixed (ushort* pwb = wBf16) fixed (float* px2 = x2) fixed (float* pw2 = w2) fixed (float* py = y)
            Run(new Job(px, k, true, pw, pwb, k, true, py, m, n, k, m, Resolve(kernel)) { A2 = px2, B2 = pw2, K2 = k2, Overwrite = overwrite }, threads);
    }

    /// <summary>y[n,m] += sum_k a[n,k] b[k,m] (a [N,K], b [K,M], y [N,M]).</summary>
    public static void MultiplyNN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y, int n, int k, int m, int threads, GemmKernel kernel = GemmKernel.Auto, bool overwrite = false)
    {
        CheckSizes("NN", a.Length, b.Length, y.Length, n, k, m);
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* py = y)
            Run(new Job(pa, k, true, pb, null, m, false, py, m, n, k, m, Resolve(kernel)) { Overwrite = overwrite }, threads);
    }

    /// <summary>y[n,m] += sum_k a[n,k] b[k,m] with bf16 b.</summary>
    public static void MultiplyNN(ReadOnlySpan<float> a, ReadOnlySpan<ushort> bBf16, Span<float> y, int n, int k, int m, int threads, GemmKernel kernel = GemmKernel.Auto, bool overwrite = false)
    {
        CheckSizes("NN", a.Length, bBf16.Length, y.Length, n, k, m);
        fixed (float* pa = a) fixed (ushort* pb = bBf16) fixed (float* py = y)
            Run(new Job(pa, k, true, null, pb, m, false, py, m, n, k, m, Resolve(kernel)) { Overwrite = overwrite }, threads);
    }

    /// <summary>y[n,m] += sum_k a[k,n] b[k,m] (a [K,N], b [K,M], y [N,M]).</summary>
    public static void MultiplyTN(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y, int n, int k, int m, int threads, GemmKernel kernel = GemmKernel.Auto, bool overwrite = false)
    {
        CheckSizes("TN", a.Length, b.Length, y.Length, n, k, m);
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* py = y)
            Run(new Job(pa, n, false, pb, null, m, false, py, m, n, k, m, Resolve(kernel)) { Overwrite = overwrite }, threads);
    }

    /// <summary>Strided NT form on raw rows: c[n*ldc + m] += sum_k a[n*lda + k] b[m*ldb + k] (attention's Q K^T).</summary>
    internal static void MultiplyNT(float* a, int lda, float* b, int ldb, float* c, int ldc, int n, int k, int m, int threads) =>
        Run(new Job(a, lda, true, b, null, ldb, true, c, ldc, n, k, m, Resolve(GemmKernel.Auto)), threads);

    /// <summary>Strided NN form on raw rows: c[n*ldc + m] += sum_k a[n*lda + k] b[k*ldb + m] (attention's P V).</summary>
    internal static void MultiplyNN(float* a, int lda, float* b, int ldb, float* c, int ldc, int n, int k, int m, int threads) =>
        Run(new Job(a, lda, true, b, null, ldb, false, c, ldc, n, k, m, Resolve(GemmKernel.Auto)), threads);

    /// <summary>Strided TN form on raw rows: c[n*ldc + m] += sum_k a[k*lda + n] b[k*ldb + m] (attention's dS^T Q, P^T dO).</summary>
    internal static void MultiplyTN(float* a, int lda, float* b, int ldb, float* c, int ldc, int n, int k, int m, int threads) =>
        Run(new Job(a, lda, false, b, null, ldb, false, c, ldc, n, k, m, Resolve(GemmKernel.Auto)), threads);

    public static GemmKernel Resolve(GemmKernel k)
    {
        if (k == GemmKernel.Auto)
            return Avx512F.IsSupported ? GemmKernel.Avx512 : Fma.IsSupported && Avx2.IsSupported ? GemmKernel.Avx2 : GemmKernel.Scalar;
        if (k == GemmKernel.Avx512 && !Avx512F.IsSupported) throw new PlatformNotSupportedException("gemm: AVX-512 is not supported here");
        if (k == GemmKernel.Avx2 && !(Fma.IsSupported && Avx2.IsSupported)) throw new PlatformNotSupportedException("gemm: AVX2/FMA is not supported here");
        return k;
    }

    private static void CheckSizes(string form, int al, int bl, int yl, int n, int k, int m)
    {
        if (n < 0 || k < 0 || m < 0 || al != (long)n * k || bl != (long)m * k || yl != (long)n * m)
            throw new ArgumentException($"gemm {form}: a has {al} values (need {n}x{k}), b {bl} (need {m}x{k}), y {yl} (need {n}x{m})");
    }

    // a: element (row i, reduction p) at A[i*lda + p] when aByRows, else A[p*lda + i]; likewise b (f32 B or bf16 Bb).
    // The optional second segment (A2, B2: K2 more reduction terms, both stored rows-by-reduction) is set with `With`.
    private readonly struct Job(float* a, int lda, bool aByRows, float* b, ushort* bb, int ldb, bool bByRows, float* c, int ldc, int n, int k, int m, GemmKernel kernel)
    {
        public readonly float* A = a, B = b, C = c;
        public readonly ushort* Bb = bb;
        public readonly int Lda = lda, Ldb = ldb, Ldc = ldc, N = n, K = k, M = m;
        public readonly bool AByRows = aByRows, BByRows = bByRows;
        public readonly GemmKernel Kernel = kernel;
        public float* A2 { get; init; }
        public float* B2 { get; init; }
        public int K2 { get; init; }
        public bool Overwrite { get; init; } // c's old contents are ignored (as if zeroed first)
        // M <= 16 (a LoRA rank): 24 x 16 tiles, so no half-empty 32-wide tile.
        public bool Narrow => Kernel == GemmKernel.Avx512 && M <= NarrowWidth;
        public int TileN => Kernel switch { GemmKernel.Avx512 => Narrow ? 24 : 12, _ => 4 };
        public int TileM => Kernel switch { GemmKernel.Avx512 => Narrow ? 16 : 32, GemmKernel.Avx2 => 24, _ => 8 };
    }

    private static void Run(Job job, int threads)
    {
        if (job.N == 0 || job.M == 0) return;
        if (job.K == 0)
        {
            if (job.Overwrite)
                for (int i = 0; i < job.N; i++) new Span<float>(job.C + (long)i * job.Ldc, job.M).Clear();
            return;
        }
        int tilesN = (job.N + job.TileN - 1) / job.TileN, tilesM = (job.M + job.TileM - 1) / job.TileM;
        // Small products are not worth waking a second thread; the grid never changes the arithmetic.
        long flops = 2L * job.N * job.M * (job.K + job.K2);
        int t = (int)Math.Max(1, Math.Min(Math.Min(threads, (long)tilesN * tilesM), flops / (1L << 20)));
        var (gn, gm) = Grid(t, tilesN, tilesM, job.TileN, job.TileM);
        if (t == 1)
        {
            Worker(job, 0, tilesN, 0, tilesM);
            return;
        }
        WorkerPool.Run(t, i =>
        {
            int a = i / gm, b = i % gm;
            Worker(job, (int)((long)a * tilesN / gn), (int)((long)(a + 1) * tilesN / gn),
                        (int)((long)b * tilesM / gm), (int)((long)(b + 1) * tilesM / gm));
        });
    }

    // The gn x gm = t split of the tile grid whose largest share is smallest; on a tie, the one that packs
    // less per thread (each thread packs its rows of a once and its rows of b once per NC block of a).
    private static (int, int) Grid(int t, int tilesN, int tilesM, int tileN, int tileM)
    {
        (int, int) best = (t, 1);
        long bestCost = long.MaxValue, bestPack = long.MaxValue;
        for (int gn = 1; gn <= t; gn++)
        {
            if (t % gn != 0) continue;
            int gm = t / gn;
            if (gn > tilesN || gm > tilesM) continue;
            long shareN = (long)(tilesN + gn - 1) / gn, shareM = (long)(tilesM + gm - 1) / gm;
            long cost = shareN * shareM;
            long pack = shareN * tileN + shareM * tileM * ((shareN * tileN + NC - 1) / NC);
            if (cost < bestCost || (cost == bestCost && pack < bestPack))
            {
                (bestCost, bestPack) = (cost, pack);
                best = (gn, gm);
            }
        }
        return best;
    }

    [ThreadStatic] private static float[]? t_packA, t_packB, t_packA2, t_packB2;

    private static float* Aligned(ref float[]? buf, int floats)
    {
        if (buf == null || buf.Length < floats + 16) buf = GC.AllocateUninitializedArray<float>(floats + 16, pinned: true);
        nint p = (nint)Unsafe.AsPointer(ref buf[0]);
        return (float*)((p + 63) & ~(nint)63);
    }

    // One thread's share: c rows in tiles [tn0,tn1), columns in tiles [tm0,tm1).
    private static void Worker(Job job, int tn0, int tn1, int tm0, int tm1)
    {
        int tnSize = job.TileN, tmSize = job.TileM;
        int n0 = tn0 * tnSize, n1 = Math.Min(job.N, tn1 * tnSize);
        int m0 = tm0 * tmSize, m1 = Math.Min(job.M, tm1 * tmSize);
        if (n0 >= n1 || m0 >= m1) return;
        int nc = Math.Min(NC, RoundUp(n1 - n0, tnSize));
        int mc = Math.Min(MC, RoundUp(m1 - m0, tmSize));
        int kc = Math.Min(KC, job.K);
        float* ap = Aligned(ref t_packA, nc * kc);
        float* bp = Aligned(ref t_packB, mc * kc);
        int k2 = job.K2;
        float* ap2 = k2 > 0 ? Aligned(ref t_packA2, nc * k2) : null;
        float* bp2 = k2 > 0 ? Aligned(ref t_packB2, mc * k2) : null;
        bool aInPlace = ReadsAInPlace(job);
        float* edge = stackalloc float[12 * 32 + 16];
        edge = (float*)(((nint)edge + 63) & ~(nint)63);

        for (int jc = n0; jc < n1; jc += NC)
        {
            int ncur = Math.Min(NC, n1 - jc);
            // Rows of a read in place: the whole 12-row tiles, and the rest too when it is whole 4-row strips of an a
            // stored by rows (the 4 x 32 kernel reads those); what is left is packed.
            int aFull = !aInPlace ? 0 : job.AByRows && !job.Narrow && ncur % tnSize % 4 == 0 ? ncur : ncur / tnSize * tnSize;
            for (int pc = 0; pc < job.K; pc += KC)
            {
                int kcur = Math.Min(KC, job.K - pc);
                bool fresh = job.Overwrite && pc == 0; // the first block stores c instead of adding to it
                int tail = pc + KC >= job.K ? k2 : 0; // the second segment rides on the last KC block
                if (job.AByRows) PackRows(job.A, null, job.Lda, jc + aFull, ncur - aFull, pc, kcur, tnSize, ap + (long)aFull * kcur);
                else PackColumns(job.A, null, job.Lda, jc + aFull, ncur - aFull, pc, kcur, tnSize, ap + (long)aFull * kcur);
                if (tail > 0) PackRows(job.A2, null, k2, jc, ncur, 0, k2, tnSize, ap2);
                for (int ic = m0; ic < m1; ic += MC)
                {
                    int mcur = Math.Min(MC, m1 - ic);
                    bool direct = ReadsBInPlace(job, mcur);
                    if (!direct && job.BByRows) PackRows(job.B, job.Bb, job.Ldb, ic, mcur, pc, kcur, tmSize, bp);
                    else if (!direct) PackColumns(job.B, job.Bb, job.Ldb, ic, mcur, pc, kcur, tmSize, bp);
                    if (tail > 0) PackRows(job.B2, null, k2, ic, mcur, 0, k2, tmSize, bp2);
                    for (int jr = 0; jr < ncur; jr += tnSize)
                    {
                        int nrows = Math.Min(tnSize, ncur - jr);
                        bool aRows = jr + nrows <= aFull; // this tile's values of a are read where they lie
                        float* a2Panel = ap2 + (long)jr * k2;
                        var bcast = !aRows ? new Broadcast(ap + (long)jr * kcur, 1, tnSize)
                            : job.AByRows ? new Broadcast(job.A + (long)(jc + jr) * job.Lda + pc, job.Lda, 1)
                            : new Broadcast(job.A + (long)pc * job.Lda + jc + jr, 1, job.Lda);
                        for (int ir = 0; ir < mcur; ir += tmSize)
                        {
                            int ncols = Math.Min(tmSize, mcur - ir);
                            float* c = job.C + (long)(jc + jr) * job.Ldc + ic + ir;
                            bool full = nrows == tnSize && ncols == tmSize;
                            long at = (long)pc * job.Ldb + ic + ir;
                            var panels = direct
                                ? new Panels(kcur, job.B != null ? job.B + at : (float*)(job.Bb + at), job.Ldb, bcast, tail, bp2 + (long)ir * k2, a2Panel, fresh && full, job.B == null)
                                : new Panels(kcur, bp + (long)ir * kcur, tmSize, bcast, tail, bp2 + (long)ir * k2, a2Panel, fresh && full);
                            if (full)
                            {
                                Micro(job, panels, c, job.Ldc);
                                continue;
                            }
                            // Edge tiles go through a zeroed buffer; a 12 x 32 tile short of rows runs in strips of 4 rows,
                            // so its missing rows cost no multiply-adds.
                            bool strips = job.Kernel == GemmKernel.Avx512 && !job.Narrow && nrows < tnSize;
                            int height = strips ? 4 : tnSize;
                            for (int r0 = 0; r0 < nrows; r0 += height)
                            {
                                int rows = Math.Min(height, nrows - r0);
                                float* cr = c + (long)r0 * job.Ldc;
                                if (strips && rows == 4 && ncols == tmSize)
                                {
                                    Strip(panels.FromRow(r0, fresh), cr, job.Ldc);
                                    continue;
                                }
                                new Span<float>(edge, tnSize * tmSize).Clear();
                                if (strips) Strip(panels.FromRow(r0, false), edge, tmSize);
                                else Micro(job, panels, edge, tmSize);
                                for (int r = 0; r < rows; r++)
                                    for (int q = 0; q < ncols; q++)
                                        cr[(long)r * job.Ldc + q] = (fresh ? 0f : cr[(long)r * job.Ldc + q]) + edge[r * tmSize + q];
                            }
                        }
                    }
                }
            }
        }
    }

    // Packs rows [r0, r0+rows) x reduction [k0, k0+kc) of a matrix stored reduction-by-rows ([K, ld]:
    // element (r, k) at src[k*ld + r]) into panels of `tile` rows laid out [k][tile]: straight copies of
    // `tile` consecutive values per k, bf16 widened; rows past `rows` are zero.
    private static void PackColumns(float* src, ushort* srcB, int ld, int r0, int rows, int k0, int kc, int tile, float* dst)
    {
        for (int p = 0; p < rows; p += tile)
        {
            int live = Math.Min(tile, rows - p);
            float* d = dst + (long)p * kc;
            for (int kk = 0; kk < kc; kk++, d += tile)
            {
                long off = (long)(k0 + kk) * ld + r0 + p;
                if (src != null) new ReadOnlySpan<float>(src + off, live).CopyTo(new Span<float>(d, live));
                else Bf16.Widen(srcB + off, d, live);
                for (int i = live; i < tile; i++) d[i] = 0;
            }
        }
    }

    // A b stored reduction-by-rows already holds each step's TM values side by side: the 12 x 32 kernel reads
    // them where they are (bf16 widened as they load) when the block has only full tiles, there is no second
    // segment, and the row stride is not a multiple of 512 bytes (rows that far apart would share cache sets).
    private static bool ReadsBInPlace(in Job job, int mcur) =>
        job.Kernel == GemmKernel.Avx512 && !job.Narrow && !job.BByRows && job.K2 == 0 && mcur % job.TileM == 0
        && (long)job.Ldb * (job.B != null ? sizeof(float) : sizeof(ushort)) % 512 != 0;

    // The AVX-512 kernels read a full tile's broadcast operand where it lies when that pays: always for the 24 x 16
    // tiles (a product with at most 16 outputs a row uses each value of a only that often, so packing it would cost
    // as much as the product), and for 12 x 32 tiles of an a stored rows-by-reduction unless its row stride is a
    // multiple of 4 KB, which would put all 12 rows in one L1 set.
    private static bool ReadsAInPlace(in Job job) =>
        job.Kernel == GemmKernel.Avx512 && (job.Narrow || job.AByRows && (long)job.Lda * sizeof(float) % 4096 != 0);

    private static int RoundUp(int v, int to) => (v + to - 1) / to * to;

    // Where a tile's broadcast operand lies: its value for row r at step k is at At[r * RowStride + k * Step]
    // (packed panels: RowStride 1, Step TN; read in place: RowStride lda, Step 1 by rows, RowStride 1, Step lda by columns).
    private readonly struct Broadcast(float* at, nint rowStride, nint step)
    {
        public readonly float* At = at;
        public readonly nint RowStride = rowStride, Step = step;
    }

    // One tile's operands: kc steps of the vector panel (b) and broadcast operand (a), then kc2 steps of
    // the second segment's packed panels (kc2 = 0: none).
    private readonly struct Panels(int kc, float* vec, nint vecStride, Broadcast bcast, int kc2, float* vec2, float* bcast2, bool fresh, bool vecBf16 = false)
    {
        public readonly Broadcast BcastAt = bcast; // the first segment's broadcast operand; the second's is always packed
        public readonly int Kc = kc, Kc2 = kc2;
        public readonly bool Fresh = fresh; // c holds nothing yet: the tile is stored, not added (0 + sum, as if c were zeroed)
        public readonly nint VecStride = vecStride; // values between vec's steps in the first segment (the tile width when packed)
        public readonly bool VecBf16 = vecBf16; // the first segment's vec is bf16 read in place (then there is no second)
        public readonly float* Vec = vec, Vec2 = vec2, Bcast2 = bcast2;

        // The same operands from broadcast row r0 on (the second segment's panel is packed: rows side by side).
        public Panels FromRow(int r0, bool fresh) =>
            new(Kc, Vec, VecStride, new Broadcast(BcastAt.At + r0 * BcastAt.RowStride, BcastAt.RowStride, BcastAt.Step), Kc2, Vec2, Bcast2 + r0, fresh, VecBf16);
    }

    // Where the 12 x 32 kernel's vector operand comes from: f32 values, or bf16 widened as they load.
    private interface IVectorSource
    {
        static abstract nint Size { get; }
        static abstract Vector512<float> Load16(byte* p);
    }

    private struct F32Source : IVectorSource
    {
        public static nint Size => 4;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(byte* p) => Avx512F.LoadVector512((float*)p);
    }

    private struct Bf16Source : IVectorSource
    {
        public static nint Size => 2;
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load16(byte* p) => Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Avx.LoadVector256((ushort*)p)), 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Micro(in Job job, in Panels p, float* c, nint ldc)
    {
        if (job.Kernel == GemmKernel.Avx512)
        {
            if (job.Narrow) Kernel24x16(p, c, ldc);
            else if (p.VecBf16) Kernel12x32<Bf16Source>(p, c, ldc);
            else Kernel12x32<F32Source>(p, c, ldc);
        }
        else if (job.Kernel == GemmKernel.Avx2) Kernel4x24(p, c, ldc);
        else Kernel4x8(p, c, ldc);
    }

    // Packs rows [r0, r0+rows) x reduction [k0, k0+kc) of a matrix stored rows-by-reduction ([*, ld]:
    // element (r, k) at src[r*ld + k]; f32 src or bf16 srcB) into panels of `tile` rows (a multiple of 4), each laid out [k][tile]; rows past `rows` are zero.
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

    // c[12 rows, ldc][32] += sum_k bcast(row 0..12, k) (outer) vec[k][0..32): 24 zmm accumulators. The broadcast
    // values of rows 0-11 are read through four row pointers (rows 0, 3, 6, 9) and offsets of one and two row strides.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel12x32<TSource>(in Panels p, float* c, nint ldc) where TSource : struct, IVectorSource
    {
        int kc = p.Kc;
        byte* vec = (byte*)p.Vec;
        nint vs = p.VecStride * TSource.Size; // bytes
        nint half = 16 * TSource.Size;
        nint r1 = p.BcastAt.RowStride * sizeof(float), r2 = 2 * r1, step = p.BcastAt.Step * sizeof(float);
        byte* b0 = (byte*)p.BcastAt.At, b3 = b0 + 3 * r1, b6 = b0 + 6 * r1, b9 = b0 + 9 * r1;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default,
            c60 = default, c61 = default, c70 = default, c71 = default, c80 = default, c81 = default,
            c90 = default, c91 = default, ca0 = default, ca1 = default, cb0 = default, cb1 = default;
        // the second segment is packed f32 (a bf16 first segment never has one)
        for (int seg = 0; seg < 2; seg++, kc = p.Kc2, vec = (byte*)p.Vec2, vs = 32 * sizeof(float), half = 16 * sizeof(float),
             r1 = sizeof(float), r2 = 2 * sizeof(float), step = 12 * sizeof(float), b0 = (byte*)p.Bcast2, b3 = b0 + 3 * r1, b6 = b0 + 6 * r1, b9 = b0 + 9 * r1)
        for (int k = 0; k < kc; k++)
        {
            var a0 = TSource.Load16(vec);
            var a1 = TSource.Load16(vec + half);
            Vector512<float> bv;
            bv = Vector512.Create(*(float*)b0); c00 = Avx512F.FusedMultiplyAdd(a0, bv, c00); c01 = Avx512F.FusedMultiplyAdd(a1, bv, c01);
            bv = Vector512.Create(*(float*)(b0 + r1)); c10 = Avx512F.FusedMultiplyAdd(a0, bv, c10); c11 = Avx512F.FusedMultiplyAdd(a1, bv, c11);
            bv = Vector512.Create(*(float*)(b0 + r2)); c20 = Avx512F.FusedMultiplyAdd(a0, bv, c20); c21 = Avx512F.FusedMultiplyAdd(a1, bv, c21);
            bv = Vector512.Create(*(float*)b3); c30 = Avx512F.FusedMultiplyAdd(a0, bv, c30); c31 = Avx512F.FusedMultiplyAdd(a1, bv, c31);
            bv = Vector512.Create(*(float*)(b3 + r1)); c40 = Avx512F.FusedMultiplyAdd(a0, bv, c40); c41 = Avx512F.FusedMultiplyAdd(a1, bv, c41);
            bv = Vector512.Create(*(float*)(b3 + r2)); c50 = Avx512F.FusedMultiplyAdd(a0, bv, c50); c51 = Avx512F.FusedMultiplyAdd(a1, bv, c51);
            bv = Vector512.Create(*(float*)b6); c60 = Avx512F.FusedMultiplyAdd(a0, bv, c60); c61 = Avx512F.FusedMultiplyAdd(a1, bv, c61);
            bv = Vector512.Create(*(float*)(b6 + r1)); c70 = Avx512F.FusedMultiplyAdd(a0, bv, c70); c71 = Avx512F.FusedMultiplyAdd(a1, bv, c71);
            bv = Vector512.Create(*(float*)(b6 + r2)); c80 = Avx512F.FusedMultiplyAdd(a0, bv, c80); c81 = Avx512F.FusedMultiplyAdd(a1, bv, c81);
            bv = Vector512.Create(*(float*)b9); c90 = Avx512F.FusedMultiplyAdd(a0, bv, c90); c91 = Avx512F.FusedMultiplyAdd(a1, bv, c91);
            bv = Vector512.Create(*(float*)(b9 + r1)); ca0 = Avx512F.FusedMultiplyAdd(a0, bv, ca0); ca1 = Avx512F.FusedMultiplyAdd(a1, bv, ca1);
            bv = Vector512.Create(*(float*)(b9 + r2)); cb0 = Avx512F.FusedMultiplyAdd(a0, bv, cb0); cb1 = Avx512F.FusedMultiplyAdd(a1, bv, cb1);
            vec += vs;
            b0 += step; b3 += step; b6 += step; b9 += step;
        }
        AddRow512(c, c00, c01, p.Fresh); c += ldc;
        AddRow512(c, c10, c11, p.Fresh); c += ldc;
        AddRow512(c, c20, c21, p.Fresh); c += ldc;
        AddRow512(c, c30, c31, p.Fresh); c += ldc;
        AddRow512(c, c40, c41, p.Fresh); c += ldc;
        AddRow512(c, c50, c51, p.Fresh); c += ldc;
        AddRow512(c, c60, c61, p.Fresh); c += ldc;
        AddRow512(c, c70, c71, p.Fresh); c += ldc;
        AddRow512(c, c80, c81, p.Fresh); c += ldc;
        AddRow512(c, c90, c91, p.Fresh); c += ldc;
        AddRow512(c, ca0, ca1, p.Fresh); c += ldc;
        AddRow512(c, cb0, cb1, p.Fresh);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Strip(in Panels p, float* c, nint ldc)
    {
        if (p.VecBf16) Kernel4x32<Bf16Source>(p, c, ldc);
        else Kernel4x32<F32Source>(p, c, ldc);
    }

    // c[4 rows, ldc][32] += sum_k bcast(row 0..4, k) (outer) vec[k][0..32): 8 zmm accumulators, the rows of a 12 x 32
    // tile that is short of rows, 4 at a time (the broadcast operand keeps the 12-row tile's layout).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x32<TSource>(in Panels p, float* c, nint ldc) where TSource : struct, IVectorSource
    {
        int kc = p.Kc;
        byte* vec = (byte*)p.Vec;
        nint vs = p.VecStride * TSource.Size; // bytes
        nint half = 16 * TSource.Size;
        nint r1 = p.BcastAt.RowStride * sizeof(float), r2 = 2 * r1, step = p.BcastAt.Step * sizeof(float);
        byte* b0 = (byte*)p.BcastAt.At, b3 = b0 + 3 * r1;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        for (int seg = 0; seg < 2; seg++, kc = p.Kc2, vec = (byte*)p.Vec2, vs = 32 * sizeof(float), half = 16 * sizeof(float),
             r1 = sizeof(float), r2 = 2 * sizeof(float), step = 12 * sizeof(float), b0 = (byte*)p.Bcast2, b3 = b0 + 3 * r1)
        for (int k = 0; k < kc; k++)
        {
            var a0 = TSource.Load16(vec);
            var a1 = TSource.Load16(vec + half);
            Vector512<float> bv;
            bv = Vector512.Create(*(float*)b0); c00 = Avx512F.FusedMultiplyAdd(a0, bv, c00); c01 = Avx512F.FusedMultiplyAdd(a1, bv, c01);
            bv = Vector512.Create(*(float*)(b0 + r1)); c10 = Avx512F.FusedMultiplyAdd(a0, bv, c10); c11 = Avx512F.FusedMultiplyAdd(a1, bv, c11);
            bv = Vector512.Create(*(float*)(b0 + r2)); c20 = Avx512F.FusedMultiplyAdd(a0, bv, c20); c21 = Avx512F.FusedMultiplyAdd(a1, bv, c21);
            bv = Vector512.Create(*(float*)b3); c30 = Avx512F.FusedMultiplyAdd(a0, bv, c30); c31 = Avx512F.FusedMultiplyAdd(a1, bv, c31);
            vec += vs;
            b0 += step; b3 += step;
        }
        AddRow512(c, c00, c01, p.Fresh); c += ldc;
        AddRow512(c, c10, c11, p.Fresh); c += ldc;
        AddRow512(c, c20, c21, p.Fresh); c += ldc;
        AddRow512(c, c30, c31, p.Fresh);
    }

    // c[24 rows, ldc][16] += sum_k bcast(row 0..24, k) (outer) vec[k][0..16): 24 zmm accumulators, one vector load
    // and 24 broadcasts a step (products with M <= 16 outputs, a LoRA rank), read through eight row pointers (rows
    // 0, 3, ..., 21) and offsets of one and two row strides.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel24x16(in Panels p, float* c, nint ldc)
    {
        int kc = p.Kc;
        float* vec = p.Vec;
        nint r1 = p.BcastAt.RowStride * sizeof(float), r2 = 2 * r1, step = p.BcastAt.Step * sizeof(float);
        byte* b0 = (byte*)p.BcastAt.At, b3 = b0 + 3 * r1, b6 = b0 + 6 * r1, b9 = b0 + 9 * r1, b12 = b0 + 12 * r1, b15 = b0 + 15 * r1, b18 = b0 + 18 * r1, b21 = b0 + 21 * r1;
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default, c8 = default, c9 = default, c10 = default, c11 = default, c12 = default, c13 = default, c14 = default, c15 = default, c16 = default, c17 = default, c18 = default, c19 = default, c20 = default, c21 = default, c22 = default, c23 = default;
        for (int seg = 0; seg < 2; seg++, kc = p.Kc2, vec = p.Vec2, r1 = sizeof(float), r2 = 2 * sizeof(float), step = 24 * sizeof(float),
             b0 = (byte*)p.Bcast2, b3 = b0 + 3 * r1, b6 = b0 + 6 * r1, b9 = b0 + 9 * r1, b12 = b0 + 12 * r1, b15 = b0 + 15 * r1, b18 = b0 + 18 * r1, b21 = b0 + 21 * r1)
        for (int k = 0; k < kc; k++)
        {
            var a = Avx512F.LoadAlignedVector512(vec);
            c0 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)b0), c0);
            c1 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b0 + r1)), c1);
            c2 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b0 + r2)), c2);
            c3 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)b3), c3);
            c4 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b3 + r1)), c4);
            c5 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b3 + r2)), c5);
            c6 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)b6), c6);
            c7 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b6 + r1)), c7);
            c8 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b6 + r2)), c8);
            c9 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)b9), c9);
            c10 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b9 + r1)), c10);
            c11 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b9 + r2)), c11);
            c12 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)b12), c12);
            c13 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b12 + r1)), c13);
            c14 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b12 + r2)), c14);
            c15 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)b15), c15);
            c16 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b15 + r1)), c16);
            c17 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b15 + r2)), c17);
            c18 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)b18), c18);
            c19 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b18 + r1)), c19);
            c20 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b18 + r2)), c20);
            c21 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)b21), c21);
            c22 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b21 + r1)), c22);
            c23 = Avx512F.FusedMultiplyAdd(a, Vector512.Create(*(float*)(b21 + r2)), c23);
            vec += 16;
            b0 += step; b3 += step; b6 += step; b9 += step; b12 += step; b15 += step; b18 += step; b21 += step;
        }
        AddRow512(c, c0, p.Fresh); c += ldc;
        AddRow512(c, c1, p.Fresh); c += ldc;
        AddRow512(c, c2, p.Fresh); c += ldc;
        AddRow512(c, c3, p.Fresh); c += ldc;
        AddRow512(c, c4, p.Fresh); c += ldc;
        AddRow512(c, c5, p.Fresh); c += ldc;
        AddRow512(c, c6, p.Fresh); c += ldc;
        AddRow512(c, c7, p.Fresh); c += ldc;
        AddRow512(c, c8, p.Fresh); c += ldc;
        AddRow512(c, c9, p.Fresh); c += ldc;
        AddRow512(c, c10, p.Fresh); c += ldc;
        AddRow512(c, c11, p.Fresh); c += ldc;
        AddRow512(c, c12, p.Fresh); c += ldc;
        AddRow512(c, c13, p.Fresh); c += ldc;
        AddRow512(c, c14, p.Fresh); c += ldc;
        AddRow512(c, c15, p.Fresh); c += ldc;
        AddRow512(c, c16, p.Fresh); c += ldc;
        AddRow512(c, c17, p.Fresh); c += ldc;
        AddRow512(c, c18, p.Fresh); c += ldc;
        AddRow512(c, c19, p.Fresh); c += ldc;
        AddRow512(c, c20, p.Fresh); c += ldc;
        AddRow512(c, c21, p.Fresh); c += ldc;
        AddRow512(c, c22, p.Fresh); c += ldc;
        AddRow512(c, c23, p.Fresh);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow512(float* c, Vector512<float> v0, Vector512<float> v1, bool fresh)
    {
        AddRow512(c, v0, fresh);
        AddRow512(c + 16, v1, fresh);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow512(float* c, Vector512<float> v, bool fresh) => Vector512.Store((fresh ? Vector512<float>.Zero : Vector512.Load(c)) + v, c);

    // c[4 rows, ldc][24] += sum_k bcast[k][0..4) (outer) vec[k][0..24): 12 ymm accumulators.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Kernel4x24(in Panels p, float* c, nint ldc)
    {
        int kc = p.Kc;
        float* vec = p.Vec, bcast = p.BcastAt.At; // packed (the AVX2 and scalar kernels never read a in place)
        Vector256<float> c00 = default, c01 = default, c02 = default, c10 = default, c11 = default, c12 = default,
            c20 = default, c21 = default, c22 = default, c30 = default, c31 = default, c32 = default;
        for (int seg = 0; seg < 2; seg++, kc = p.Kc2, vec = p.Vec2, bcast = p.Bcast2)
        for (int k = 0; k < kc; k++)
        {
            var a0 = Avx.LoadVector256(vec);
            var a1 = Avx.LoadVector256(vec + 8);
            var a2 = Avx.LoadVector256(vec + 16);
            Vector256<float> bv;
            bv = Vector256.Create(bcast[0]); c00 = Fma.MultiplyAdd(a0, bv, c00); c01 = Fma.MultiplyAdd(a1, bv, c01); c02 = Fma.MultiplyAdd(a2, bv, c02);
            bv = Vector256.Create(bcast[1]); c10 = Fma.MultiplyAdd(a0, bv, c10); c11 = Fma.MultiplyAdd(a1, bv, c11); c12 = Fma.MultiplyAdd(a2, bv, c12);
            bv = Vector256.Create(bcast[2]); c20 = Fma.MultiplyAdd(a0, bv, c20); c21 = Fma.MultiplyAdd(a1, bv, c21); c22 = Fma.MultiplyAdd(a2, bv, c22);
            bv = Vector256.Create(bcast[3]); c30 = Fma.MultiplyAdd(a0, bv, c30); c31 = Fma.MultiplyAdd(a1, bv, c31); c32 = Fma.MultiplyAdd(a2, bv, c32);
            vec += 24;
            bcast += 4;
        }
        AddRow256(c, c00, c01, c02, p.Fresh); c += ldc;
        AddRow256(c, c10, c11, c12, p.Fresh); c += ldc;
        AddRow256(c, c20, c21, c22, p.Fresh); c += ldc;
        AddRow256(c, c30, c31, c32, p.Fresh);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddRow256(float* c, Vector256<float> v0, Vector256<float> v1, Vector256<float> v2, bool fresh)
    {
        Vector256.Store((fresh ? Vector256<float>.Zero : Vector256.Load(c)) + v0, c);
        Vector256.Store((fresh ? Vector256<float>.Zero : Vector256.Load(c + 8)) + v1, c + 8);
        Vector256.Store((fresh ? Vector256<float>.Zero : Vector256.Load(c + 16)) + v2, c + 16);
    }

    // The portable micro-kernel: c[4 rows, ldc][8] += sum_k bcast[k][0..4) (outer) vec[k][0..8), one fused
    // multiply-add per product like the SIMD kernels.
    private static void Kernel4x8(in Panels p, float* c, nint ldc)
    {
        int kc = p.Kc;
        float* vec = p.Vec, bcast = p.BcastAt.At; // packed (the AVX2 and scalar kernels never read a in place)
        float* acc = stackalloc float[32];
        for (int i = 0; i < 32; i++) acc[i] = 0;
        for (int seg = 0; seg < 2; seg++, kc = p.Kc2, vec = p.Vec2, bcast = p.Bcast2)
        for (int k = 0; k < kc; k++)
        {
            for (int r = 0; r < 4; r++)
            {
                float bv = bcast[r];
                for (int q = 0; q < 8; q++) acc[r * 8 + q] = MathF.FusedMultiplyAdd(vec[q], bv, acc[r * 8 + q]);
            }
            vec += 8;
            bcast += 4;
        }
        for (int r = 0; r < 4; r++)
            for (int q = 0; q < 8; q++) c[r * ldc + q] = (p.Fresh ? 0f : c[r * ldc + q]) + acc[r * 8 + q];
    }
}
