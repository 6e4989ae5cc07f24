// Gemm's tiled product on NVIDIA tensor cores, for bf16 weights on CUDA (the bf16 compute mode): the
// same c[R,C] = sum_q A(i,q) B(q,j) with Gemm's strides and epilogue (alpha, bias, accumulate), but
// each warp multiplies with inline-PTX mma.sync.m16n8k8 in TF32 (the f32 activations keep 10 mantissa
// bits, rounded to nearest, more than bf16's 7; a bf16 weight is exact in TF32; sums stay f32). One
// group of 8 warps per 64 x 64 tile of c; per 32-deep slice the group stages A[64,32] and B[32,64] in
// shared memory, each with the index that is contiguous in global memory as the fast one (so a warp's
// loads coalesce and its stores hit 32 banks), rows padded so a warp's fragment reads hit 32 banks too:
// depth-fast [64][36] or row/column-fast [32][72]. Warp w computes rows 16 (w % 4) .. +16 and columns
// 32 (w / 4) .. +32 of the tile as four 16 x 8 accumulators.
// Fragment layout of m16n8k8 (PTX ISA), lane = 4 g + t:
//   A (16 x 8, row): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
//   B (8 x 8, col):  b0 (k t, n g), b1 (k t + 4, n g)
//   C (16 x 8):      c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)
// The scalar reference is Gemm's (and the CPU reference beside it); CUDA only (ILGPU's CPU accelerator
// cannot run PTX), chosen by Gemm.Launch when IlgpuBackend.TensorCores is on (off by default: on the
// H100 it runs at 6.6 TFLOP/s against the f32 kernel's 12.6, since ILGPU passes inline-PTX outputs
// through local memory; docs/PERF.md).
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class GemmTensorCore
{
    private const int Tile = 64, Slice = 32, Threads = 256;
    private const int DepthFastPad = 36, IndexFastPad = 72, Staged = Tile * DepthFastPad; // = Slice * IndexFastPad

    /// <summary>Shared-memory offset of (index, depth) in a staged operand.</summary>
    private static int At(bool depthFast, int index, int depth) => depthFast ? index * DepthFastPad + depth : depth * IndexFastPad + index;

    /// <summary>f32 rounded to the nearest TF32 (cvt.rna), as the bits mma.sync reads.</summary>
    private static float Tf32(float f)
    {
        CudaAsm.Emit("cvt.rna.tf32.f32 %0, %1;", out uint r, f);
        return Interop.IntAsFloat(r);
    }

    /// <summary>Four f32 accumulators of one 16 x 8 piece of c.</summary>
    private struct Frag
    {
        public float C0, C1, C2, C3;
    }

    // One m16n8k8 product per statement, returning two of the four results as a 64-bit pair: ILGPU passes
    // by-value arguments in registers but by-reference ones through local memory, so the statement takes
    // its operands packed in pairs by value and is issued twice (low and high pair) rather than once with
    // four outputs by reference. Tensor cores have the throughput to spare.
    private const string MmaBody =
        "{ .reg .b32 a<4>, b<2>, c<4>, d<4>; mov.b64 {c0,c1}, %1; mov.b64 {c2,c3}, %2; mov.b64 {a0,a1}, %3; mov.b64 {a2,a3}, %4; mov.b64 {b0,b1}, %5; "
        + "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {d0,d1,d2,d3}, {a0,a1,a2,a3}, {b0,b1}, {c0,c1,c2,c3}; ";
    private const string MmaLow = MmaBody + "mov.b64 %0, {d0,d1}; }";
    private const string MmaHigh = MmaBody + "mov.b64 %0, {d2,d3}; }";

    private static ulong Pair(uint lo, uint hi) => (ulong)hi << 32 | lo;

    private static Frag Mma(Frag c, ulong a01, ulong a23, uint b0, uint b1)
    {
        ulong c01 = Pair(Bits(c.C0), Bits(c.C1)), c23 = Pair(Bits(c.C2), Bits(c.C3)), b01 = Pair(b0, b1);
        CudaAsm.Emit(MmaLow, out ulong lo, c01, c23, a01, a23, b01);
        CudaAsm.Emit(MmaHigh, out ulong hi, c01, c23, a01, a23, b01);
        return new Frag
        {
            C0 = Interop.IntAsFloat((uint)lo), C1 = Interop.IntAsFloat((uint)(lo >> 32)),
            C2 = Interop.IntAsFloat((uint)hi), C3 = Interop.IntAsFloat((uint)(hi >> 32)),
        };
    }

    private static uint Bits(float f) => Interop.FloatAsInt(f);

    public static void Kernel<TA, TB>(TA a, TB b, ArrayView<float> bias, ArrayView<float> c, GemmDims d)
        where TA : struct, IWeights where TB : struct, IWeights
    {
        var sa = SharedMemory.Allocate<float>(Staged);
        var sb = SharedMemory.Allocate<float>(Staged);
        int tid = Group.IdxX, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
        int row0 = Grid.IdxY * Tile, col0 = Grid.IdxX * Tile;
        int wr = (warp & 3) * 16, wc = (warp >> 2) * 32;
        bool aFast = d.AsDepth == 1, bFast = d.BsDepth == 1;
        Frag f0 = default, f1 = default, f2 = default, f3 = default;
        for (int k0 = 0; k0 < d.Depth; k0 += Slice)
        {
            for (int e = tid; e < Tile * Slice; e += Threads)
            {
                int i = aFast ? e >> 5 : e & 63, q = aFast ? e & 31 : e >> 6;
                int gi = row0 + i, gq = k0 + q;
                sa[At(aFast, i, q)] = gi < d.Rows && gq < d.Depth ? Tf32(a.Get(gi * d.AsRow + gq * d.AsDepth)) : 0f;
                int j = bFast ? e >> 5 : e & 63, p = bFast ? e & 31 : e >> 6;
                int gj = col0 + j, gp = k0 + p;
                sb[At(bFast, j, p)] = gj < d.Cols && gp < d.Depth ? Tf32(b.Get(gp * d.BsDepth + gj * d.BsCol)) : 0f;
            }
            Group.Barrier();
            for (int k = 0; k < Slice; k += 8)
            {
                int lo = k + t, hi = k + t + 4;
                ulong a01 = Pair(Bits(sa[At(aFast, wr + g, lo)]), Bits(sa[At(aFast, wr + g + 8, lo)]));
                ulong a23 = Pair(Bits(sa[At(aFast, wr + g, hi)]), Bits(sa[At(aFast, wr + g + 8, hi)]));
                f0 = Mma(f0, a01, a23, Bits(sb[At(bFast, wc + g, lo)]), Bits(sb[At(bFast, wc + g, hi)]));
                f1 = Mma(f1, a01, a23, Bits(sb[At(bFast, wc + 8 + g, lo)]), Bits(sb[At(bFast, wc + 8 + g, hi)]));
                f2 = Mma(f2, a01, a23, Bits(sb[At(bFast, wc + 16 + g, lo)]), Bits(sb[At(bFast, wc + 16 + g, hi)]));
                f3 = Mma(f3, a01, a23, Bits(sb[At(bFast, wc + 24 + g, lo)]), Bits(sb[At(bFast, wc + 24 + g, hi)]));
            }
            Group.Barrier();
        }
        int r = row0 + wr + g, cBase = col0 + wc + 2 * t;
        Store(f0, r, cBase, bias, c, d);
        Store(f1, r, cBase + 8, bias, c, d);
        Store(f2, r, cBase + 16, bias, c, d);
        Store(f3, r, cBase + 24, bias, c, d);
    }

    private static void Store(Frag f, int i, int j, ArrayView<float> bias, ArrayView<float> c, GemmDims d)
    {
        Put(f.C0, i, j, bias, c, d);
        Put(f.C1, i, j + 1, bias, c, d);
        Put(f.C2, i + 8, j, bias, c, d);
        Put(f.C3, i + 8, j + 1, bias, c, d);
    }

    private static void Put(float sum, int i, int j, ArrayView<float> bias, ArrayView<float> c, GemmDims d)
    {
        if (i >= d.Rows || j >= d.Cols) return;
        float v = d.Alpha * sum;
        if (d.HasBias != 0) v += bias[j];
        int o = i * d.Cols + j;
        if (d.Accumulate != 0) v += c[o];
        c[o] = v;
    }

    public static void Launch<TA, TB>(DeviceContext dc, TA a, TB b, ArrayView<float> bias, ArrayView<float> c, GemmDims d)
        where TA : struct, IWeights where TB : struct, IWeights
    {
        var grid = new Index2D((d.Cols + Tile - 1) / Tile, (d.Rows + Tile - 1) / Tile);
        dc.Kernel<Action<KernelConfig, TA, TB, ArrayView<float>, ArrayView<float>, GemmDims>>($"gemm.tc.{typeof(TA).Name}.{typeof(TB).Name}",
            acc => acc.LoadStreamKernel<TA, TB, ArrayView<float>, ArrayView<float>, GemmDims>(Kernel))
            (new KernelConfig(grid, new Index2D(Threads, 1)), a, b, bias, c, d);
    }
}
