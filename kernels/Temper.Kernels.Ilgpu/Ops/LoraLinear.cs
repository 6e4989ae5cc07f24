// LoRA linear (PEFT's order): xa[N,r] = x[N,K] A[r,K]^T, y[N,M] = x w^T + bias + scale (xa B[M,r]^T).
// Backward of the LoRA branch (the base part is Linear's), with dxa[N,r] = scale dy B from the arena:
//   dB[M,r] += scale dy^T xa,  dA[r,K] += dxa^T x,  dx[N,K] += dxa A.
// Three (forward) or four (backward) Gemm launches; xa is kept in the arena when the caller does not.
// With the CUDA C++ Linear on (--kernels ptx), bf16 weights and r <= 16, the forward's LoRA product joins
// the base product's epilogue (y = x W^T + bias + scale xa B^T in one pass over y). The backward's
// dx += dxa A stays a product of its own: the base input gradient is Linear's backward, a separate op.
using ILGPU;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class LoraLinear
{
    public static void Forward(DeviceContext dc, ArrayView<float> x, WeightView w, ArrayView<float>? bias, ArrayView<float> loraA, ArrayView<float> loraB, float scale,
        ArrayView<float> y, ArrayView<float>? xa, int n, int k, int m, int r)
    {
        var xav = xa ?? dc.Arena.Take<float>((long)n * r);
        Gemm.NT(dc, x, new WeightView(loraA), null, xav, n, k, r, 1f, accumulate: false);
        if (Fused(dc, w, r))
        {
            Gemm.PtxNTLowRank(dc, x, w.Bf16, bias, y, n, k, m, xav, loraB, r, scale);
            return;
        }
        Gemm.NT(dc, x, w, bias, y, n, k, m, 1f, accumulate: false);
        Gemm.NT(dc, xav, new WeightView(loraB), null, y, n, r, m, scale, accumulate: true);
    }

    /// <summary>True when the LoRA product goes into the CUDA C++ Linear's epilogue.</summary>
    public static bool Fused(DeviceContext dc, WeightView w, int r) => w.IsBf16 && dc.PtxLinear != null && r <= Temper.Kernels.Cuda.CudaLinear.MaxLowRank;

    public static void Backward(DeviceContext dc, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> xa, ArrayView<float> loraA, ArrayView<float> loraB, float scale,
        ArrayView<float>? dx, ArrayView<float>? dA, ArrayView<float>? dB, int n, int k, int m, int r)
    {
        if (dB is { } db) Gemm.TN(dc, dy, xa, db, n, r, m, scale, accumulate: true);
        if (dA == null && dx == null) return;
        var dxa = dc.Arena.Take<float>((long)n * r);
        Gemm.NN(dc, dy, new WeightView(loraB), dxa, n, r, m, scale, accumulate: false);
        if (dA is { } da) Gemm.TN(dc, dxa, x, da, n, k, r, 1f, accumulate: true);
        if (dx is { } dxv) Gemm.NN(dc, dxa, new WeightView(loraA), dxv, n, k, r, 1f, accumulate: true);
    }
}
