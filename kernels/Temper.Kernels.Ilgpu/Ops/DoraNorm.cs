// DoRA's weight norm: norm[M] = || W[M,K] + scale (B[M,r] A[r,K]) ||_row (W f32 or bf16), one group per
// output row: its threads stride the row (reads of W and A coalesce; B's row is the same for the whole
// group), each element's low-rank term summed first and W + scale * it squared, then a shared-memory tree
// sums the f32 partials. It costs M K r multiply-adds, as many as a LoRA forward over r tokens.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class DoraNorm
{
    public static void Kernel<TW>(TW w, ArrayView<float> a, ArrayView<float> b, float scale, ArrayView<float> norm, int k, int r) where TW : struct, IWeights
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int j = Grid.IdxX;
        float part = 0;
        for (int q = Group.IdxX; q < k; q += Group.DimX)
        {
            float ba = 0;
            for (int t = 0; t < r; t++) ba += b[j * r + t] * a[t * k + q];
            float v = w.Get(j * k + q) + scale * ba;
            part += v * v;
        }
        float sum = GroupReduce.Sum(shared, part);
        if (Group.IdxX == 0) norm[j] = MathF.Sqrt(sum);
    }

    public static void Compute(DeviceContext dc, WeightView w, ArrayView<float> a, ArrayView<float> b, float scale, ArrayView<float> norm, int m, int k, int r)
    {
        if (m == 0) return;
        var groups = GroupReduce.RowGroups(dc, m);
        if (w.IsBf16)
            dc.Kernel<Action<KernelConfig, Bf16Weights, ArrayView<float>, ArrayView<float>, float, ArrayView<float>, int, int>>("dora.norm.bf16",
                acc => acc.LoadStreamKernel<Bf16Weights, ArrayView<float>, ArrayView<float>, float, ArrayView<float>, int, int>(Kernel))
                (groups, new Bf16Weights(w.Bf16), a, b, scale, norm, k, r);
        else
            dc.Kernel<Action<KernelConfig, F32Weights, ArrayView<float>, ArrayView<float>, float, ArrayView<float>, int, int>>("dora.norm.f32",
                acc => acc.LoadStreamKernel<F32Weights, ArrayView<float>, ArrayView<float>, float, ArrayView<float>, int, int>(Kernel))
                (groups, new F32Weights(w.F32), a, b, scale, norm, k, r);
    }
}
