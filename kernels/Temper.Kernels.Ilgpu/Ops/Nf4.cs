// NF4 on the device (QLoRA base weights). Nf4Blocks decodes a 64-block's double-quantised absmax:
// absmax[b] = dyn[q[b]] * scale[b/256] + offset (two f32 roundings on the CPU accelerator; a CUDA build
// may contract them into one FMA, which moves an absmax by at most an ulp). AbsmaxKernel writes them
// all, one thread per block, for the linear ops: Nf4Weights is the GEMM's weight operand over the
// packed codes, element i is lut[nibble(i)] * absmax[i/64], decoded as the kernel reads it, so the
// linear ops reuse Gemm's tiled kernel for NT (forward y = x W^T) and NN (input gradient dx = dy W) and
// never hold the dequantised matrix (a weight is decoded once per GEMM output tile that reads it).
// With PTX kernels on (--kernels ptx), IlgpuBackend sends dequantisation and the NF4 linears to the CUDA
// C++ kernels instead (PtxDequantize, PtxLinear: bf16 tensor cores, codes dequantised to bf16 as staged).
// DequantizeKernel writes the whole f32 matrix [M,K] (checks, merging), bandwidth-bound: one thread per
// 8 elements of a 256-element tile (4 blocks), lane l of the tile's 32 writing elements l, l+32, ...,
// l+224, so every store of a warp is 128 contiguous bytes; the thread loads its 8 code bytes and
// decodes its 4 blocks' absmax before the first store (the views may alias, so no compiler moves a
// load above a store: written in this order, the thread waits on memory once), and never divides.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal readonly struct Nf4Weights(ArrayView<byte> codes, ArrayView<float> absmax, ArrayView<float> lut) : IWeights
{
    private readonly ArrayView<byte> _codes = codes;
    private readonly ArrayView<float> _absmax = absmax;
    private readonly ArrayView<float> _lut = lut;

    public float Get(int i)
    {
        int b = _codes[i >> 1];
        int code = (i & 1) == 0 ? b >> 4 : b & 15;
        return _lut[code] * _absmax[i >> 6];
    }
}

/// <summary>The double-quantised block absmax values: 8-bit DynamicMap codes q[blocks], scales[blocks/256], the offset.</summary>
internal readonly struct Nf4Blocks(ArrayView<byte> q, ArrayView<float> scales, ArrayView<float> dyn, float offset, int count)
{
    private readonly ArrayView<byte> _q = q;
    private readonly ArrayView<float> _scales = scales;
    private readonly ArrayView<float> _dyn = dyn;
    private readonly float _offset = offset;
    public readonly int Count = count;

    /// <summary>Block b's absmax (the last block's for b past it: no branch, and never read out of bounds).</summary>
    public float Absmax(int b)
    {
        b = Math.Min(b, Count - 1);
        float scaled = _dyn[(int)_q[b]] * _scales[b >> 8];
        return scaled + _offset;
    }
}

internal static class Nf4
{
    private const int Tile = 256, Lanes = 32; // elements per tile (4 blocks of 64), threads per tile

    public static void AbsmaxKernel(Index1D b, Nf4Blocks blocks, ArrayView<float> absmax) => absmax[b] = blocks.Absmax(b);

    /// <summary>output[i] = lut[nibble(i)] * absmax[i/64] for i &lt; n, 8 elements per thread (see the header).</summary>
    public static void DequantizeKernel(Index1D thread, ArrayView<byte> codes, Nf4Blocks blocks, ArrayView<float> lut, ArrayView<float> output, int n)
    {
        int tile = thread >> 5, e = tile * Tile + (thread & (Lanes - 1)); // element of k = 0; element k is e + 32 k
        int last = n - 1;
        int c0 = Code(codes, e, last), c1 = Code(codes, e + 32, last), c2 = Code(codes, e + 64, last), c3 = Code(codes, e + 96, last);
        int c4 = Code(codes, e + 128, last), c5 = Code(codes, e + 160, last), c6 = Code(codes, e + 192, last), c7 = Code(codes, e + 224, last);
        int b = tile * 4; // elements 2j and 2j+1 of the thread are in block b + j
        float a0 = blocks.Absmax(b), a1 = blocks.Absmax(b + 1), a2 = blocks.Absmax(b + 2), a3 = blocks.Absmax(b + 3);
        float v0 = lut[c0] * a0, v1 = lut[c1] * a0, v2 = lut[c2] * a1, v3 = lut[c3] * a1;
        float v4 = lut[c4] * a2, v5 = lut[c5] * a2, v6 = lut[c6] * a3, v7 = lut[c7] * a3;
        Store(output, e, n, v0); Store(output, e + 32, n, v1); Store(output, e + 64, n, v2); Store(output, e + 96, n, v3);
        Store(output, e + 128, n, v4); Store(output, e + 160, n, v5); Store(output, e + 192, n, v6); Store(output, e + 224, n, v7);
    }

    // Element i's code: the high nibble of byte i/2 for even i, the low for odd (i past the last element
    // reads the last one's byte: branch-free loads, all issued before the thread waits on any).
    private static int Code(ArrayView<byte> codes, int i, int last)
    {
        int packed = codes[Math.Min(i, last) >> 1];
        return packed >> ((~i & 1) << 2) & 15;
    }

    private static void Store(ArrayView<float> output, int i, int n, float v)
    {
        if (i < n) output[i] = v;
    }

    public static void Absmax(DeviceContext dc, Nf4Blocks blocks, ArrayView<float> absmax)
    {
        if (blocks.Count == 0) return;
        dc.Kernel<Action<Index1D, Nf4Blocks, ArrayView<float>>>("nf4.absmax",
            a => a.LoadAutoGroupedStreamKernel<Index1D, Nf4Blocks, ArrayView<float>>(AbsmaxKernel))(blocks.Count, blocks, absmax);
    }

    /// <summary>output[n] f32 = the n weights of packed codes (n &lt;= 2^31 - 256).</summary>
    public static void Dequantize(DeviceContext dc, ArrayView<byte> codes, Nf4Blocks blocks, ArrayView<float> lut, ArrayView<float> output, int n)
    {
        if (n == 0) return;
        int threads = (int)(((long)n + Tile - 1) / Tile * Lanes);
        dc.Kernel<Action<Index1D, ArrayView<byte>, Nf4Blocks, ArrayView<float>, ArrayView<float>, int>>("nf4.dequantize",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<byte>, Nf4Blocks, ArrayView<float>, ArrayView<float>, int>(DequantizeKernel))(threads, codes, blocks, lut, output, n);
    }

    /// <summary>The n weights dequantised by the CUDA C++ kernel (PTX kernels on).</summary>
    public static void PtxDequantize(DeviceContext dc, ArrayView<byte> codes, ArrayView<byte> q, ArrayView<float> scales, float offset, ArrayView<float> output, int n)
    {
        using var c = Gemm.Borrow(dc, codes);
        using var qd = Gemm.Borrow(dc, q);
        using var sd = Gemm.Borrow(dc, scales);
        using var o = Gemm.Borrow(dc, output);
        dc.PtxNf4!.Dequantize(c, qd, sd, offset, o, n);
    }

    /// <summary>Forward (y = x W^T + bias) or input gradient (dx = dy W) through the CUDA C++ Linear, the codes
    /// dequantised to bf16 as it stages them (PTX kernels on); absmax holds the decoded block absmax values.</summary>
    public static void PtxLinear(DeviceContext dc, bool inputGradient, ArrayView<float> input, ArrayView<byte> codes, ArrayView<float> absmax, ArrayView<float>? bias,
        ArrayView<float> output, int n, int k, int m, bool accumulate)
    {
        using var x = Gemm.Borrow(dc, input);
        using var c = Gemm.Borrow(dc, codes);
        using var a = Gemm.Borrow(dc, absmax);
        using var y = Gemm.Borrow(dc, output);
        using var b = bias is { } bv ? Gemm.Borrow(dc, bv) : null;
        var w = new Temper.Kernels.Cuda.LinearWeight.Nf4(c, a, dc.PtxNf4!.CodeBook);
        if (inputGradient) dc.PtxLinear!.InputGradient(x, w, y, n, k, m, 1f, accumulate);
        else dc.PtxLinear!.Forward(x, w, b, y, n, k, m, 1f, accumulate);
    }

    /// <summary>y[N,M] = (accumulate ? y : 0) + x w^T + bias.</summary>
    public static void Forward(DeviceContext dc, ArrayView<float> x, Nf4Weights w, ArrayView<float>? bias, ArrayView<float> y, int n, int k, int m, bool accumulate) =>
        Gemm.NT(dc, x, w, bias, y, n, k, m, 1f, accumulate);

    /// <summary>dx[N,K] = (accumulate ? dx : 0) + dy[N,M] w[M,K].</summary>
    public static void Backward(DeviceContext dc, ArrayView<float> dy, Nf4Weights w, ArrayView<float> dx, int n, int k, int m, bool accumulate) =>
        Gemm.NN(dc, dy, w, dx, n, k, m, 1f, accumulate);
}
