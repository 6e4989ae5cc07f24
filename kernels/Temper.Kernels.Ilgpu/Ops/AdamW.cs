// AdamW step, torch.optim.AdamW's single-tensor update in f32, one thread per element:
//   param *= 1 - lr wd;  m = lerp(m, g, 1 - b1);  v = v b2 + (1 - b2) g g;
//   param += -(lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
// The scalars (decay, 1 - b1, 1 - b2, step size, sqrt of the second bias correction) are computed on
// the host in f64 and passed as f32, as torch does.
// With PTX kernels on (DeviceContext.PtxAdamW, CUDA), the step runs in the CUDA C++ kernel (cuda/adamw.cu,
// its single-tensor entry: IBackend's step is per tensor; CudaAdamW.MultiStep takes many in one launch).
using ILGPU;
using ILGPU.Runtime;
using Temper.Core;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class AdamW
{
    public static void Kernel(Index1D i, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, AdamWScalars s)
    {
        float g = grad[i];
        float p = param[i] * s.Decay;
        float mi = m[i];
        // torch.lerp's two forms, by weight.
        mi = IntrinsicMath.Abs(s.W1) < 0.5f ? mi + s.W1 * (g - mi) : g - (g - mi) * (1f - s.W1);
        float vi = v[i] * s.Beta2 + s.W2 * g * g;
        float denom = MathF.Sqrt(vi) / s.Bc2Sqrt + s.Eps;
        m[i] = mi;
        v[i] = vi;
        param[i] = p + -s.StepSize * (mi / denom);
    }

    public static void Step(DeviceContext dc, ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v, in AdamWParams p, int n)
    {
        if (n == 0) return;
        if (dc.PtxAdamW is { } ptx)
        {
            using var pp = Gemm.Borrow(dc, param);
            using var pg = Gemm.Borrow(dc, grad);
            using var pm = Gemm.Borrow(dc, m);
            using var pv = Gemm.Borrow(dc, v);
            ptx.Step(pp, pg, pm, pv, n, p);
            return;
        }
        var s = AdamWScalars.Of(p);
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWScalars>>("adamw", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWScalars>(Kernel))
            (n, param, grad, m, v, s);
    }
}
