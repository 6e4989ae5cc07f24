// DoRA's weight norm: norm[M] = || W[M,K] + scale (B[M,r] A[r,K]) ||_row (W f32 or bf16), one thread per
// output row, summed in f32 in the reference's order (the low-rank term of each element first, then
// W + scale * it). It costs M K r multiply-adds, as many as a LoRA forward over r tokens.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class DoraNorm
{
    public static void Kernel<TW>(Index1D j, TW w, ArrayView<float> a, ArrayView<float> b, float scale, ArrayView<float> norm, int k, int r) where TW : struct, IWeights
    {
        float sum = 0;
        for (int q = 0; q < k; q++)
        {
            float ba = 0;
            for (int t = 0; t < r; t++) ba += b[j * r + t] * a[t * k + q];
            float v = w.Get(j * k + q) + scale * ba;
            sum += v * v;
        }
        norm[j] = MathF.Sqrt(sum);
    }

    public static void Compute(DeviceContext dc, WeightView w, ArrayView<float> a, ArrayView<float> b, float scale, ArrayView<float> norm, int m, int k, int r)
    {
        if (m == 0) return;
        if (w.IsBf16)
            dc.Kernel<Action<Index1D, Bf16Weights, ArrayView<float>, ArrayView<float>, float, ArrayView<float>, int, int>>("dora.norm.bf16",
                acc => acc.LoadAutoGroupedStreamKernel<Index1D, Bf16Weights, ArrayView<float>, ArrayView<float>, float, ArrayView<float>, int, int>(Kernel))
                (m, new Bf16Weights(w.Bf16), a, b, scale, norm, k, r);
        else
            dc.Kernel<Action<Index1D, F32Weights, ArrayView<float>, ArrayView<float>, float, ArrayView<float>, int, int>>("dora.norm.f32",
                acc => acc.LoadAutoGroupedStreamKernel<Index1D, F32Weights, ArrayView<float>, ArrayView<float>, float, ArrayView<float>, int, int>(Kernel))
                (m, new F32Weights(w.F32), a, b, scale, norm, k, r);
    }
}
