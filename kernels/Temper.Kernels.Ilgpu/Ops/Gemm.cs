// The three matrix products the linear ops need, all through one tiled kernel. Row-major throughout:
//   NT: c[N,M] = beta c + alpha a[N,K] w[M,K]^T + bias[M]     (Linear forward, LoRA's x A^T and xa B^T)
//   NN: c[N,K] = beta c + alpha a[N,M] w[M,K]                 (dx = dy W)
//   TN: c[M,K] = beta c + alpha a[N,M]^T b[N,K]               (dW += dy^T x)
// beta is 0 or 1 (Accumulate); w may be f32, bf16 or NF4 (any IWeights), a and b are f32.
// Each is c[R,C] = sum_q A(i,q) B(q,j) with A(i,q) = a[i*AsRow + q*AsDepth] and
// B(q,j) = b[q*BsDepth + j*BsCol], so the layouts differ only in strides. The kernel: one group of
// 16 x 16 threads per 128 x 128 tile of c (4 x 4 threads and 32 x 32 tiles on ILGPU's CPU accelerator);
// per 16-deep slice of q, the group stages A[128,16] and B[16,128] in shared memory (loaded along
// whichever index is contiguous, so global reads coalesce; rows padded to 129 so the transposing stores
// do not conflict) and each thread accumulates an 8 x 8 block of c (rows ty + 16r, columns tx + 16c)
// in registers, f32, in q order. Per q a thread reads 16 shared values for 64 FMAs. Outputs with too few
// tiles to fill the device and a long depth are split along q (grid z), each split into its own
// partial, summed in split order by a second pass (deterministic, no atomics). On CUDA with tensor cores
// switched on (IlgpuBackend.TensorCores), products with bf16 or NF4 weights go to GemmTensorCore (TF32).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal struct GemmDims
{
    public int Rows, Cols, Depth;
    public int AsRow, AsDepth, BsDepth, BsCol;
    public float Alpha;
    public int Accumulate;
    public int HasBias;
    public int TX, TY, LogTX, LogTY; // threads along columns / rows of a tile (powers of two); tile = 8 TY x 8 TX
    public int SplitDepth;           // depth per grid z (split-K: each z writes its own [Rows,Cols] partial)
}

/// <summary>Eight accumulators of one row of a thread's 8 x 8 block.</summary>
internal struct Acc8
{
    public float C0, C1, C2, C3, C4, C5, C6, C7;
    public readonly Acc8 Fma(float a, in Row8 b) => new()
    {
        C0 = C0 + a * b.C0, C1 = C1 + a * b.C1, C2 = C2 + a * b.C2, C3 = C3 + a * b.C3,
        C4 = C4 + a * b.C4, C5 = C5 + a * b.C5, C6 = C6 + a * b.C6, C7 = C7 + a * b.C7,
    };
    public readonly float Get(int c) => c switch { 0 => C0, 1 => C1, 2 => C2, 3 => C3, 4 => C4, 5 => C5, 6 => C6, _ => C7 };
}

/// <summary>The eight B values a thread multiplies in one step of q.</summary>
internal struct Row8
{
    public float C0, C1, C2, C3, C4, C5, C6, C7;
}

internal static class Gemm
{
    private const int Slice = 16, Pad = 129; // tiles are at most 128 wide

    public static void TiledKernel<TA, TB>(TA a, TB b, ArrayView<float> bias, ArrayView<float> c, GemmDims d)
        where TA : struct, IWeights where TB : struct, IWeights
    {
        var sa = SharedMemory.Allocate<float>(Slice * Pad); // sa[q*Pad + i], i < tile rows
        var sb = SharedMemory.Allocate<float>(Slice * Pad); // sb[q*Pad + j], j < tile columns
        int tid = Group.IdxX, tx = tid & (d.TX - 1), ty = tid >> d.LogTX, threads = d.TX * d.TY;
        int tileRows = 8 * d.TY, tileCols = 8 * d.TX, X = d.TX, Y = d.TY;
        int row0 = Grid.IdxY * tileRows, col0 = Grid.IdxX * tileCols;
        int kBegin = Grid.IdxZ * d.SplitDepth, kEnd = IntrinsicMath.Min(d.Depth, kBegin + d.SplitDepth);
        var cz = c.SubView((long)Grid.IdxZ * d.Rows * d.Cols, (long)d.Rows * d.Cols);
        Acc8 r0 = default, r1 = default, r2 = default, r3 = default, r4 = default, r5 = default, r6 = default, r7 = default;
        for (int k0 = kBegin; k0 < kEnd; k0 += Slice)
        {
            for (int e = tid; e < tileRows * Slice; e += threads)
            {
                int i = d.AsDepth == 1 ? e >> 4 : e & (tileRows - 1), q = d.AsDepth == 1 ? e & 15 : e >> (d.LogTY + 3);
                int gi = row0 + i, gq = k0 + q;
                sa[q * Pad + i] = gi < d.Rows && gq < kEnd ? a.Get(gi * d.AsRow + gq * d.AsDepth) : 0f;
            }
            for (int e = tid; e < tileCols * Slice; e += threads)
            {
                int j = d.BsDepth == 1 ? e >> 4 : e & (tileCols - 1), p = d.BsDepth == 1 ? e & 15 : e >> (d.LogTX + 3);
                int gj = col0 + j, gp = k0 + p;
                sb[p * Pad + j] = gj < d.Cols && gp < kEnd ? b.Get(gp * d.BsDepth + gj * d.BsCol) : 0f;
            }
            Group.Barrier();
            for (int q = 0; q < Slice; q++)
            {
                int o = q * Pad, ob = o + tx, oa = o + ty;
                var bv = new Row8
                {
                    C0 = sb[ob], C1 = sb[ob + X], C2 = sb[ob + 2 * X], C3 = sb[ob + 3 * X],
                    C4 = sb[ob + 4 * X], C5 = sb[ob + 5 * X], C6 = sb[ob + 6 * X], C7 = sb[ob + 7 * X],
                };
                r0 = r0.Fma(sa[oa], bv);
                r1 = r1.Fma(sa[oa + Y], bv);
                r2 = r2.Fma(sa[oa + 2 * Y], bv);
                r3 = r3.Fma(sa[oa + 3 * Y], bv);
                r4 = r4.Fma(sa[oa + 4 * Y], bv);
                r5 = r5.Fma(sa[oa + 5 * Y], bv);
                r6 = r6.Fma(sa[oa + 6 * Y], bv);
                r7 = r7.Fma(sa[oa + 7 * Y], bv);
            }
            Group.Barrier();
        }
        Store(r0, row0 + ty, col0 + tx, bias, cz, d);
        Store(r1, row0 + ty + Y, col0 + tx, bias, cz, d);
        Store(r2, row0 + ty + 2 * Y, col0 + tx, bias, cz, d);
        Store(r3, row0 + ty + 3 * Y, col0 + tx, bias, cz, d);
        Store(r4, row0 + ty + 4 * Y, col0 + tx, bias, cz, d);
        Store(r5, row0 + ty + 5 * Y, col0 + tx, bias, cz, d);
        Store(r6, row0 + ty + 6 * Y, col0 + tx, bias, cz, d);
        Store(r7, row0 + ty + 7 * Y, col0 + tx, bias, cz, d);
    }

    private static void Store(Acc8 acc, int i, int j0, ArrayView<float> bias, ArrayView<float> c, GemmDims d)
    {
        if (i >= d.Rows) return;
        for (int t = 0; t < 8; t++)
        {
            int j = j0 + d.TX * t;
            if (j >= d.Cols) return;
            float r = d.Alpha * acc.Get(t);
            if (d.HasBias != 0) r += bias[j];
            int o = i * d.Cols + j;
            if (d.Accumulate != 0) r += c[o];
            c[o] = r;
        }
    }

    /// <summary>c = alpha (sum over splits of partial[z]) + (accumulate ? c : 0) + bias, the splits in order.</summary>
    public static void SplitSumKernel(Index1D o, ArrayView<float> partial, ArrayView<float> bias, ArrayView<float> c, GemmDims d, int splits)
    {
        long size = (long)d.Rows * d.Cols;
        float sum = 0;
        for (int z = 0; z < splits; z++) sum += partial[z * size + o];
        float r = d.Alpha * sum;
        if (d.HasBias != 0) r += bias[o % d.Cols];
        if (d.Accumulate != 0) r += c[o];
        c[o] = r;
    }

    private static void Launch<TA, TB>(DeviceContext dc, TA a, TB b, ArrayView<float>? bias, ArrayView<float> c, GemmDims d)
        where TA : struct, IWeights where TB : struct, IWeights
    {
        if ((long)d.Rows * d.Cols == 0) return;
        d.HasBias = bias.HasValue ? 1 : 0;
        // 16 x 16 threads (128 x 128 tiles) where groups may be that large (GPUs), else 4 x 4 (32 x 32
        // tiles: ILGPU's CPU accelerator runs groups of at most 16 threads).
        bool wide = dc.Accelerator.MaxNumThreadsPerGroup >= 256;
        d.TX = d.TY = wide ? 16 : 4;
        d.LogTX = d.LogTY = wide ? 4 : 2;
        int tile = 8 * d.TX;
        int colTiles = (d.Cols + tile - 1) / tile, rowTiles = (d.Rows + tile - 1) / tile;
        // Split-K when the output has too few tiles to fill the device and the depth is long (LoRA's
        // dA = dxa^T x: [r, K] over all N tokens): each split writes a partial, then one pass sums them.
        int target = 2 * Math.Max(1, dc.Accelerator.NumMultiprocessors), tiles = colTiles * rowTiles;
        int splits = tiles >= target ? 1 : Math.Min((target + tiles - 1) / tiles, d.Depth / (8 * Slice));
        // Products with bf16 or NF4 weights (the bf16 compute mode) on tensor cores where DeviceContext allows;
        // f32 weights always take the exact f32 kernel.
        if (splits <= 1 && dc.TensorCores && (typeof(TB) == typeof(Bf16Weights) || typeof(TB) == typeof(Nf4Weights)))
        {
            GemmTensorCore.Launch(dc, a, b, bias ?? c, c, d);
            return;
        }
        var kernel = dc.Kernel<Action<KernelConfig, TA, TB, ArrayView<float>, ArrayView<float>, GemmDims>>($"gemm.tiled.{typeof(TA).Name}.{typeof(TB).Name}",
            acc => acc.LoadStreamKernel<TA, TB, ArrayView<float>, ArrayView<float>, GemmDims>(TiledKernel));
        var group = new Index3D(d.TX * d.TY, 1, 1);
        if (splits <= 1)
        {
            d.SplitDepth = d.Depth;
            kernel(new KernelConfig(new Index3D(colTiles, rowTiles, 1), group), a, b, bias ?? c, c, d);
            return;
        }
        d.SplitDepth = (d.Depth + splits - 1) / splits;
        d.SplitDepth = (d.SplitDepth + Slice - 1) / Slice * Slice;
        splits = (d.Depth + d.SplitDepth - 1) / d.SplitDepth;
        var partial = dc.Arena.Take<float>((long)splits * d.Rows * d.Cols);
        var whole = d;
        d.Alpha = 1f;
        d.Accumulate = 0;
        d.HasBias = 0;
        kernel(new KernelConfig(new Index3D(colTiles, rowTiles, splits), group), a, b, partial, partial, d);
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims, int>>("gemm.splitsum",
            acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmDims, int>(SplitSumKernel))
            (d.Rows * d.Cols, partial, bias ?? c, c, whole, splits);
    }

    /// <summary>c[N,M] = (accumulate ? c : 0) + alpha a[N,K] w[M,K]^T + bias.</summary>
    public static void NT<TW>(DeviceContext dc, ArrayView<float> a, TW w, ArrayView<float>? bias, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate)
        where TW : struct, IWeights =>
        Launch(dc, new F32Weights(a), w, bias, c, new GemmDims { Rows = n, Cols = m, Depth = k, AsRow = k, AsDepth = 1, BsDepth = 1, BsCol = k, Alpha = alpha, Accumulate = accumulate ? 1 : 0 });

    /// <summary>c[N,K] = (accumulate ? c : 0) + alpha a[N,M] w[M,K].</summary>
    public static void NN<TW>(DeviceContext dc, ArrayView<float> a, TW w, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate)
        where TW : struct, IWeights =>
        Launch(dc, new F32Weights(a), w, null, c, new GemmDims { Rows = n, Cols = k, Depth = m, AsRow = m, AsDepth = 1, BsDepth = k, BsCol = 1, Alpha = alpha, Accumulate = accumulate ? 1 : 0 });

    /// <summary>c[M,K] = (accumulate ? c : 0) + alpha a[N,M]^T b[N,K].</summary>
    public static void TN(DeviceContext dc, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate) =>
        Launch(dc, new F32Weights(a), new F32Weights(b), null, c, new GemmDims { Rows = m, Cols = k, Depth = n, AsRow = 1, AsDepth = m, BsDepth = k, BsCol = 1, Alpha = alpha, Accumulate = accumulate ? 1 : 0 });

    public static void NT(DeviceContext dc, ArrayView<float> a, WeightView w, ArrayView<float>? bias, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate)
    {
        if (w.IsBf16 && dc.PtxLinear is { } ptx) PtxNT(dc, ptx, a, w.Bf16, bias, c, n, k, m, alpha, accumulate);
        else if (w.IsBf16) NT(dc, a, new Bf16Weights(w.Bf16), bias, c, n, k, m, alpha, accumulate);
        else NT(dc, a, new F32Weights(w.F32), bias, c, n, k, m, alpha, accumulate);
    }

    /// <summary>NT (and NN above) with bf16 weights through the CUDA C++ kernel (Temper.Kernels.Cuda.CudaLinear) on the
    /// accelerator's own stream, so it stays in order with the ILGPU kernels around it.</summary>
    private static void PtxNT(DeviceContext dc, Temper.Kernels.Cuda.CudaLinear ptx, ArrayView<float> a, ArrayView<ushort> w, ArrayView<float>? bias, ArrayView<float> c,
        int n, int k, int m, float alpha, bool accumulate)
    {
        using var x = Borrow(dc, a);
        using var wd = Borrow(dc, w);
        using var y = Borrow(dc, c);
        using var b = bias is { } bv ? Borrow(dc, bv) : null;
        ptx.Forward(x, new Temper.Kernels.Cuda.LinearWeight.Bf16(wd), b, y, n, k, m, alpha, accumulate);
    }

    /// <summary>a [n,k] in bf16 in the arena, converted once for several NT products with bf16 weights on the PTX route
    /// (NT's <paramref name="aBf16"/> overload), which otherwise converts a per product; null where that route would not
    /// take it (no PTX kernels, f32 weights, k not a multiple of 8).</summary>
    public static ArrayView<ushort>? ActivationsInBf16(DeviceContext dc, ArrayView<float> a, WeightView w, int n, int k)
    {
        if (dc.PtxLinear is not { Pipelined: true } ptx || !w.IsBf16 || k % 8 != 0 || (long)n * k == 0) return null;
        var bf16 = dc.Arena.Take<ushort>((long)n * k);
        using var x = Borrow(dc, a);
        using var xb = Borrow(dc, bf16);
        ptx.ConvertToBf16(x, xb, (long)n * k);
        return bf16;
    }

    /// <summary>NT with the activations also given in bf16 (ActivationsInBf16; null: as NT): the PTX product reads those.</summary>
    public static void NT(DeviceContext dc, ArrayView<float> a, ArrayView<ushort>? aBf16, WeightView w, ArrayView<float>? bias, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate)
    {
        if (aBf16 is not { } ab || Gemm.DeviceAddress(w.Bf16) % 16 != 0)
        {
            NT(dc, a, w, bias, c, n, k, m, alpha, accumulate);
            return;
        }
        using var x = Borrow(dc, ab);
        using var wd = Borrow(dc, w.Bf16);
        using var y = Borrow(dc, c);
        using var b = bias is { } bv ? Borrow(dc, bv) : null;
        dc.PtxLinear!.ForwardBf16(x, wd, b, y, n, k, m, alpha, accumulate);
    }

    /// <summary>y = x W^T + bias + scale xa B^T through the CUDA C++ Linear, the LoRA product in its epilogue.</summary>
    public static void PtxNTLowRank(DeviceContext dc, ArrayView<float> a, ArrayView<ushort> w, ArrayView<float>? bias, ArrayView<float> c,
        int n, int k, int m, ArrayView<float> xa, ArrayView<float> loraB, int r, float scale)
    {
        using var x = Borrow(dc, a);
        using var wd = Borrow(dc, w);
        using var y = Borrow(dc, c);
        using var b = bias is { } bv ? Borrow(dc, bv) : null;
        using var l = Borrow(dc, xa);
        using var rb = Borrow(dc, loraB);
        dc.PtxLinear!.Forward(x, new Temper.Kernels.Cuda.LinearWeight.Bf16(wd), b, y, n, k, m, lora: Temper.Kernels.Cuda.LowRankTerm.Forward(l, rb, r, scale));
    }

    /// <summary>A view as driver memory of the PTX route's context (no copy, no ownership).</summary>
    internal static Temper.Cuda.Driver.CudaDeviceMemory Borrow<T>(DeviceContext dc, ArrayView<T> view) where T : unmanaged =>
        Temper.Cuda.Driver.CudaDeviceMemory.Borrow((ulong)DeviceAddress(view), view.LengthInBytes, dc.PtxContext!);

    /// <summary>The device address of a view's first element (its buffer's address plus its offset).</summary>
    internal static nint DeviceAddress<T>(ArrayView<T> view) where T : unmanaged => view.LoadEffectiveAddressAsPtr();

    public static void NN(DeviceContext dc, ArrayView<float> a, WeightView w, ArrayView<float> c, int n, int k, int m, float alpha, bool accumulate)
    {
        if (w.IsBf16 && dc.PtxLinear is { } ptx)
        {
            using var dy = Borrow(dc, a);
            using var wd = Borrow(dc, w.Bf16);
            using var dx = Borrow(dc, c);
            ptx.InputGradient(dy, new Temper.Kernels.Cuda.LinearWeight.Bf16(wd), dx, n, k, m, alpha, accumulate);
        }
        else if (w.IsBf16) NN(dc, a, new Bf16Weights(w.Bf16), c, n, k, m, alpha, accumulate);
        else NN(dc, a, new F32Weights(w.F32), c, n, k, m, alpha, accumulate);
    }
}

/// <summary>A weight matrix on the device, f32 or bf16 (exactly one of the views is set).</summary>
internal readonly struct WeightView
{
    public WeightView(ArrayView<float> f32) { F32 = f32; IsBf16 = false; }
    public WeightView(ArrayView<ushort> bf16) { Bf16 = bf16; IsBf16 = true; }
    public ArrayView<float> F32 { get; }
    public ArrayView<ushort> Bf16 { get; }
    public bool IsBf16 { get; }

    /// <summary>Rows [row0, row0 + rows) of a [*, cols] matrix.</summary>
    public WeightView Rows(int row0, int rows, int cols) => IsBf16
        ? new WeightView(Bf16.SubView((long)row0 * cols, (long)rows * cols))
        : new WeightView(F32.SubView((long)row0 * cols, (long)rows * cols));
}
