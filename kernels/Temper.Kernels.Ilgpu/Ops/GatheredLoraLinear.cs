// Gathered (BGMV) LoRA linear: row n of x[N,K] takes adapter i = rowAdapter[n] from A [L,r,K], B [L,M,r]:
//   xa[n,t] = sum_k x[n,k] A[i,t,k]            (one thread per (n, t), into the arena)
//   y[n,j] += scales[i] sum_t xa[n,t] B[i,j,t]  (one thread per (n, j))
// Rows with i < 0 are untouched. Each thread reads its own row's adapter, so one launch serves a batch
// that mixes any number of adapters.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class GatheredLoraLinear
{
    public static void ShrinkKernel(Index1D index, ArrayView<float> x, ArrayView<float> a, ArrayView<int> rowAdapter, ArrayView<float> xa, int k, int r)
    {
        int n = index / r, t = index % r, i = rowAdapter[n];
        float s = 0;
        if (i >= 0)
            for (int q = 0; q < k; q++) s += x[n * k + q] * a[(i * r + t) * k + q];
        xa[index] = s;
    }

    public static void ExpandKernel(Index1D index, ArrayView<float> xa, ArrayView<float> b, ArrayView<float> scales, ArrayView<int> rowAdapter, ArrayView<float> y, int m, int r)
    {
        int n = index / m, j = index % m, i = rowAdapter[n];
        if (i < 0) return;
        float s = 0;
        for (int t = 0; t < r; t++) s += xa[n * r + t] * b[(i * m + j) * r + t];
        y[index] += scales[i] * s;
    }

    public static void Forward(DeviceContext dc, ArrayView<float> x, ArrayView<float> a, ArrayView<float> b, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter,
        ArrayView<float> y, int k, int m, int r)
    {
        int n = rowAdapter.Length;
        if (n == 0 || r == 0 || m == 0) return;
        var dAdapter = dc.Arena.Upload(rowAdapter);
        var dScales = dc.Arena.Upload(scales);
        var xa = dc.Arena.Take<float>((long)n * r);
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>>("gathered_lora.shrink",
            acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(ShrinkKernel))
            (n * r, x, a, dAdapter, xa, k, r);
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>>("gathered_lora.expand",
            acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(ExpandKernel))
            (n * m, xa, b, dScales, dAdapter, y, m, r);
    }
}
