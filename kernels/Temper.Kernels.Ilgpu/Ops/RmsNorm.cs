// RMSNorm (HF LlamaRMSNorm, f32) over rows of x[N,C]: rstd[n] = 1/sqrt(mean(x[n]^2) + eps),
// y[n] = weight[C] * (x[n] * rstd[n]); one group per row (its threads stride the row, then a shared
// memory tree sums their f32 partials), so the row's reads coalesce. AddForward: sum = a + b (a residual add), then the
// same over sum, in the one kernel.
// Backward, with xhat = x rstd and g = dy weight: dx = rstd (g - xhat mean(g xhat)) (one group per
// row, overwrites dx, or adds to it: accumulate) and dWeight[C] += sum_n dy xhat (one thread per column, rows in order).
// With PTX kernels on (DeviceContext.PtxRmsNorm, CUDA), both go to the CUDA C++ kernels (cuda/rmsnorm.cu).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class RmsNorm
{
    // With add != 0, x's row is first replaced by x + b written to sum (each thread its own elements, read back in the second
    // pass), so the norm sees the add's bits: AddForward equals Add then Forward.
    public static void ForwardKernel(ArrayView<float> x, ArrayView<float> b, ArrayView<float> sum, ArrayView<float> weight, ArrayView<float> y, ArrayView<float> rstd,
        int c, float eps, int hasRstd, int add)
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        int n = Grid.IdxX, o = n * c;
        float part = 0;
        for (int j = Group.IdxX; j < c; j += Group.DimX)
        {
            float v = x[o + j];
            if (add != 0)
            {
                v += b[o + j];
                sum[o + j] = v;
            }
            part += v * v;
        }
        float r = 1f / MathF.Sqrt(GroupReduce.Sum(shared, part) / c + eps);
        if (hasRstd != 0 && Group.IdxX == 0) rstd[n] = r;
        for (int j = Group.IdxX; j < c; j += Group.DimX) y[o + j] = weight[j] * ((add != 0 ? sum[o + j] : x[o + j]) * r);
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

    public static void Forward(DeviceContext dc, ArrayView<float> x, ArrayView<float> weight, float eps, ArrayView<float> y, ArrayView<float>? rstd, int rows, int c) =>
        Run(dc, x, null, x, weight, eps, y, rstd, rows, c);

    /// <summary>sum = a + b, then Forward(sum): the same bits as Add then Forward (sum may alias a or b).</summary>
    public static void AddForward(DeviceContext dc, ArrayView<float> a, ArrayView<float> b, ArrayView<float> sum, ArrayView<float> weight, float eps, ArrayView<float> y,
        ArrayView<float>? rstd, int rows, int c) =>
        Run(dc, a, b, sum, weight, eps, y, rstd, rows, c);

    // The norm of x's rows, or with b of sum = x + b's.
    private static void Run(DeviceContext dc, ArrayView<float> x, ArrayView<float>? b, ArrayView<float> sum, ArrayView<float> weight, float eps, ArrayView<float> y,
        ArrayView<float>? rstd, int rows, int c)
    {
        if (rows == 0) return;
        if (dc.PtxRmsNorm is { } ptx)
        {
            using var px = Gemm.Borrow(dc, x);
            using var pw = Gemm.Borrow(dc, weight);
            using var py = Gemm.Borrow(dc, y);
            using var pr = rstd is { } rv ? Gemm.Borrow(dc, rv) : null;
            if (b is { } bv)
            {
                using var pb = Gemm.Borrow(dc, bv);
                using var ps = Gemm.Borrow(dc, sum);
                ptx.AddForward(px, pb, ps, pw, eps, py, pr, rows, c);
            }
            else ptx.Forward(px, pw, eps, py, pr, rows, c);
            return;
        }
        dc.Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>>("rmsnorm.fwd",
            a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float, int, int>(ForwardKernel))
            (GroupReduce.RowGroups(dc, rows), x, b ?? x, sum, weight, y, rstd ?? y, c, eps, rstd.HasValue ? 1 : 0, b.HasValue ? 1 : 0);
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
