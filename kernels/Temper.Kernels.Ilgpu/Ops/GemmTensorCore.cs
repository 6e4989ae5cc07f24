// Gemm's tiled product on NVIDIA tensor cores, for bf16 weights on CUDA (the bf16 compute mode): the
// same c[R,C] = sum_q A(i,q) B(q,j) with Gemm's strides and epilogue (alpha, bias, accumulate), but
// each warp multiplies with inline-PTX mma.sync.m16n8k8 in TF32 (the f32 activations keep 10 mantissa
// bits, more than bf16's 7; a bf16 weight is exact in TF32; sums stay f32). One group of 8 warps per
// 64 x 64 tile of c; per 32-deep slice the group stages A[64,32] and B[32,64] in shared memory (rows
// padded to 72 floats so the fragment reads of a warp hit 32 different banks), and warp w computes
// rows 16 (w % 4) .. +16 and columns 32 (w / 4) .. +32 of the tile as four 16 x 8 accumulators.
// Fragment layout of m16n8k8 (PTX ISA), lane = 4 g + t:
//   A (16 x 8, row): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
//   B (8 x 8, col):  b0 (k t, n g), b1 (k t + 4, n g)
//   C (16 x 8):      c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)
// The scalar reference is Gemm's (and the CPU reference beside it); CUDA only (ILGPU's CPU accelerator
// cannot run PTX), chosen by Gemm.Launch.
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class GemmTensorCore
{
    private const int Tile = 64, Slice = 32, Pad = 72, Threads = 256;

    /// <summary>Four f32 accumulators of one 16 x 8 piece of c.</summary>
    private struct Frag
    {
        public float C0, C1, C2, C3;
    }

    private static Frag Mma(Frag c, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
    {
        Ref<float> d0 = c.C0, d1 = c.C1, d2 = c.C2, d3 = c.C3;
        Input<uint> x0 = a0, x1 = a1, x2 = a2, x3 = a3, y0 = b0, y1 = b1;
        CudaAsm.EmitRef("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};",
            ref d0, ref d1, ref d2, ref d3, ref x0, ref x1, ref x2, ref x3, ref y0, ref y1);
        return new Frag { C0 = d0.Value, C1 = d1.Value, C2 = d2.Value, C3 = d3.Value };
    }

    private static uint Bits(float f) => Interop.FloatAsInt(f);

    public static void Kernel<TA, TB>(TA a, TB b, ArrayView<float> bias, ArrayView<float> c, GemmDims d)
        where TA : struct, IWeights where TB : struct, IWeights
    {
        var sa = SharedMemory.Allocate<float>(Slice * Pad); // sa[q*Pad + i]
        var sb = SharedMemory.Allocate<float>(Slice * Pad); // sb[q*Pad + j]
        int tid = Group.IdxX, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
        int row0 = Grid.IdxY * Tile, col0 = Grid.IdxX * Tile;
        int wr = (warp & 3) * 16, wc = (warp >> 2) * 32;
        Frag f0 = default, f1 = default, f2 = default, f3 = default;
        for (int k0 = 0; k0 < d.Depth; k0 += Slice)
        {
            for (int e = tid; e < Tile * Slice; e += Threads)
            {
                int i = d.AsDepth == 1 ? e >> 5 : e & 63, q = d.AsDepth == 1 ? e & 31 : e >> 6;
                int gi = row0 + i, gq = k0 + q;
                sa[q * Pad + i] = gi < d.Rows && gq < d.Depth ? a.Get(gi * d.AsRow + gq * d.AsDepth) : 0f;
                int j = d.BsDepth == 1 ? e >> 5 : e & 63, p = d.BsDepth == 1 ? e & 31 : e >> 6;
                int gj = col0 + j, gp = k0 + p;
                sb[p * Pad + j] = gj < d.Cols && gp < d.Depth ? b.Get(gp * d.BsDepth + gj * d.BsCol) : 0f;
            }
            Group.Barrier();
            for (int k = 0; k < Slice; k += 8)
            {
                int lo = (k + t) * Pad, hi = (k + t + 4) * Pad;
                uint a0 = Bits(sa[lo + wr + g]), a1 = Bits(sa[lo + wr + g + 8]), a2 = Bits(sa[hi + wr + g]), a3 = Bits(sa[hi + wr + g + 8]);
                f0 = Mma(f0, a0, a1, a2, a3, Bits(sb[lo + wc + g]), Bits(sb[hi + wc + g]));
                f1 = Mma(f1, a0, a1, a2, a3, Bits(sb[lo + wc + 8 + g]), Bits(sb[hi + wc + 8 + g]));
                f2 = Mma(f2, a0, a1, a2, a3, Bits(sb[lo + wc + 16 + g]), Bits(sb[hi + wc + 16 + g]));
                f3 = Mma(f3, a0, a1, a2, a3, Bits(sb[lo + wc + 24 + g]), Bits(sb[hi + wc + 24 + g]));
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
