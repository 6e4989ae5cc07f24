// RMSNorm (HF LlamaRMSNorm, f32) over rows of x[N,C]: rstd[n] = 1/sqrt(mean(x[n]^2) + eps),
// y[n] = weight[C] * (x[n] * rstd[n]); one group per row (its threads stride the row, then a shared
// memory tree sums their f32 partials), so the row's reads coalesce.
// Backward, with xhat = x rstd and g = dy weight: dx = rstd (g - xhat mean(g xhat)) (one group per
// row, overwrites dx, or adds to it: accumulate) and dWeight[C] += sum_n dy xhat (one thread per column, rows in order).
// With PTX kernels on (DeviceContext.PtxRmsNorm, CUDA), both go to the CUDA C++ kernels (cuda/rmsnorm.cu).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class RmsNorm
{
    public static void ForwardKernel(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> y, ArrayView<float> rstd, int c, float eps, int hasRstd)
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int n = Grid.IdxX, o = n * c;
        float part = 0;
        for (int j = Group.IdxX; j < c; j += Group.DimX) part += x[o + j] * x[o + j];
        float r = 1f / MathF.Sqrt(GroupReduce.Sum(shared, part) / c + eps);
        if (hasRstd != 0 && Group.IdxX == 0) rstd[n] = r;
        for (int j = Group.IdxX; j < c; j += Group.DimX) y[o + j] = weight[j] * (x[o + j] * r);
    }

    public static void BackwardRowsKernel(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> rstd, ArrayView<float> dx, int c, int accumulate)
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int n = Grid.IdxX, o = n * c;
        float r = rstd[n], part = 0;
        for (int j = Group.IdxX; j < c; j += Group.DimX) part += dy[o + j] * weight[j] * (x[o + j] * r);
        float mean = GroupReduce.Sum(shared, part) / c;
        for (int j = Group.IdxX; j < c; j += Group.DimX) dx[o + j] = (accumulate != 0 ? dx[o + j] : 0f) + r * (dy[o + j] * weight[j] - x[o + j] * r * mean);
    }

    public static void BackwardWeightKernel(Index1D j, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> rstd, ArrayView<float> dWeight, int rows, int c)
    {
        float sum = 0;
        for (int n = 0; n < rows; n++) sum += dy[n * c + j] * (x[n * c + j] * rstd[n]);
        dWeight[j] += sum;
    }

    public static void Forward(DeviceContext dc, ArrayView<float> x, ArrayView<float> weight, float eps, ArrayView<float> y, ArrayView<float>? rstd, int rows, int c)
    {
        if (rows == 0) return;
        if (dc.PtxRmsNorm is { } ptx)
        {
            using var px = Gemm.Borrow(dc, x);
            using var pw = Gemm.Borrow(dc, weight);
            using var py = Gemm.Borrow(dc, y);
            using var pr = rstd is { } rv ? Gemm.Borrow(dc, rv) : null;
            ptx.Forward(px, pw, eps, py, pr, rows, c);
            return;
        }
        dc.Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int>>("rmsnorm.fwd", a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int>(ForwardKernel))
            (GroupReduce.RowGroups(dc, rows), x, weight, y, rstd ?? y, c, eps, rstd.HasValue ? 1 : 0);
    }

    public static void Backward(DeviceContext dc, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> weight, ArrayView<float> rstd, ArrayView<float> dx, ArrayView<float>? dWeight, int rows, int c,
        bool accumulate = false)
    {
        if (rows == 0) return;
        if (dc.PtxRmsNorm is { } ptx)
        {
            using var pdy = Gemm.Borrow(dc, dy);
            using var px = Gemm.Borrow(dc, x);
            using var pw = Gemm.Borrow(dc, weight);
            using var pr = Gemm.Borrow(dc, rstd);
            using var pdx = Gemm.Borrow(dc, dx);
            using var pdw = dWeight is { } dwv ? Gemm.Borrow(dc, dwv) : null;
            ptx.Backward(pdy, px, pw, pr, pdx, pdw, rows, c, accumulate);
            return;
        }
        if (dWeight is { } dw)
            dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>>("rmsnorm.bwd.weight", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(BackwardWeightKernel))
                (c, dy, x, rstd, dw, rows, c);
        // After dWeight, which reads dy and x, in case dx aliases one of them.
        dc.Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>>("rmsnorm.bwd.rows", a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(BackwardRowsKernel))
            (GroupReduce.RowGroups(dc, rows), dy, x, weight, rstd, dx, c, accumulate ? 1 : 0);
    }
}
