// LoRA linear (PEFT's order): xa[N,r] = x[N,K] A[r,K]^T, y[N,M] = x w^T + bias + scale (xa B[M,r]^T).
// Backward of the LoRA branch (the base part is Linear's), with dxa[N,r] = scale dy B from the arena:
//   dB[M,r] += scale dy^T xa,  dA[r,K] += dxa^T x,  dx[N,K] += dxa A.
// Three (forward) or four (backward) Gemm launches; xa is kept in the arena when the caller does not.
// With the CUDA C++ kernels on (--kernels ptx), r <= 16 and TEMPER_LORA_RANK=1 (opt-in until a GPU has checked it),
// xa, dxa, dA, dB and dx += dxa A run CudaLoraRank (f32, bound by the bytes of x or dy, which ILGPU's tiled GEMM handles at 1/8 of
// its tile: on an H100 they cost 2 to 3 ms of each 1B-shaped LoRA linear, docs/PERF.md), and with bf16 weights the forward's LoRA
// product joins the base product's epilogue (y = x W^T + bias + scale xa B^T in one pass over y; on an H100 gemm_bf16.cu's,
// or the sm_90a GEMM's with TEMPER_GEMM_SM90_LORA=1). The backward's dx += dxa A stays a product of its own: the base
// input gradient is Linear's backward, a separate op. Where the forward's base product takes the sm_90a GEMM without
// its LoRA epilogue and CudaLoraRank is on, y += scale xa B^T follows it.
using ILGPU;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class LoraLinear
{
    public static void Forward(DeviceContext dc, ArrayView<float> x, WeightView w, ArrayView<float>? bias, ArrayView<float> loraA, ArrayView<float> loraB, float scale,
        ArrayView<float> y, ArrayView<float>? xa, int n, int k, int m, int r)
    {
        var xav = xa ?? dc.Arena.Take<float>((long)n * r);
        var rank = Rank(dc, r);
        if (rank != null) OnRank(dc, x, loraA, xav, (xd, ad, od) => rank.RowsTimesRank(xd, ad, od, n, k, r, k, 1));
        else Gemm.NT(dc, x, new WeightView(loraA), null, xav, n, k, r, 1f, accumulate: false);
        // Where the sm_90a GEMM runs the forward without its LoRA epilogue (opt-in) and CudaLoraRank is on: the base product
        // there and y += scale xa B^T after; otherwise fused (sm_90a's epilogue where opted in, else gemm_bf16.cu's).
        if (Fused(dc, w, r) && !(rank != null && dc.PtxLinear!.Sm90Forward && !dc.PtxLinear.Sm90LoraEpilogue))
        {
            Gemm.PtxNTLowRank(dc, x, w.Bf16, bias, y, n, k, m, xav, loraB, r, scale);
            return;
        }
        Gemm.NT(dc, x, w, bias, y, n, k, m, 1f, accumulate: false);
        if (rank != null) OnRank(dc, xav, loraB, y, (ld, bd, yd) => rank.RankTimesRows(ld, bd, yd, n, m, r, 1, r, scale, accumulate: true));
        else Gemm.NT(dc, xav, new WeightView(loraB), null, y, n, r, m, scale, accumulate: true);
    }

    /// <summary>True when the LoRA product goes into the CUDA C++ Linear's epilogue.</summary>
    public static bool Fused(DeviceContext dc, WeightView w, int r) => w.IsBf16 && dc.PtxLinear != null && r <= Temper.Kernels.Cuda.CudaLinear.MaxLowRank;

    public static void Backward(DeviceContext dc, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> xa, ArrayView<float> loraA, ArrayView<float> loraB, float scale,
        ArrayView<float>? dx, ArrayView<float>? dA, ArrayView<float>? dB, int n, int k, int m, int r)
    {
        var rank = Rank(dc, r);
        if (dB is { } db)
        {
            if (rank != null) OnRank(dc, dy, xa, db, (yd, ld, od) => rank.ColumnsTimesRank(yd, ld, od, n, m, r, r, 1, scale, accumulate: true));
            else Gemm.TN(dc, dy, xa, db, n, r, m, scale, accumulate: true);
        }
        if (dA == null && dx == null) return;
        var dxa = dc.Arena.Take<float>((long)n * r);
        if (rank != null) OnRank(dc, dy, loraB, dxa, (yd, bd, od) => rank.RowsTimesRank(yd, bd, od, n, m, r, 1, r, scale));
        else Gemm.NN(dc, dy, new WeightView(loraB), dxa, n, r, m, scale, accumulate: false);
        if (dA is { } da)
        {
            if (rank != null) OnRank(dc, x, dxa, da, (xd, ld, od) => rank.ColumnsTimesRank(xd, ld, od, n, k, r, 1, k, 1f, accumulate: true));
            else Gemm.TN(dc, dxa, x, da, n, k, r, 1f, accumulate: true);
        }
        if (dx is { } dxv)
        {
            if (rank != null) OnRank(dc, dxa, loraA, dxv, (ld, ad, od) => rank.RankTimesRows(ld, ad, od, n, k, r, k, 1, 1f, accumulate: true));
            else Gemm.NN(dc, dxa, new WeightView(loraA), dxv, n, k, r, 1f, accumulate: true);
        }
    }

    private static Temper.Kernels.Cuda.CudaLoraRank? Rank(DeviceContext dc, int r) =>
        dc.LoraRankKernels && r <= Temper.Kernels.Cuda.CudaLoraRank.MaxRank ? dc.PtxLoraRank : null;

    // A CudaLoraRank product on three views borrowed as driver memory (no copy).
    private static void OnRank(DeviceContext dc, ArrayView<float> a, ArrayView<float> b, ArrayView<float> c,
        Action<Temper.Cuda.Driver.CudaDeviceMemory, Temper.Cuda.Driver.CudaDeviceMemory, Temper.Cuda.Driver.CudaDeviceMemory> product)
    {
        using var ad = Gemm.Borrow(dc, a);
        using var bd = Gemm.Borrow(dc, b);
        using var cd = Gemm.Borrow(dc, c);
        product(ad, bd, cd);
    }
}
