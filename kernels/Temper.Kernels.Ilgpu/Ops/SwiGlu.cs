// SwiGLU: y = silu(gate) * up = gate / (1 + exp(-gate)) * up, all [N,F], one thread per element.
// Backward: dUp = dy silu(g), dGate = dy up sig(g) (1 + g (1 - sig(g))) (overwritten).
// With PTX kernels on (DeviceContext.PtxSwiGlu, CUDA), both go to the CUDA C++ kernels (cuda/swiglu.cu).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class SwiGlu
{
    public static void ForwardKernel(Index1D i, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> y)
    {
        float g = gate[i];
        y[i] = g / (1f + MathF.Exp(-g)) * up[i];
    }

    public static void BackwardKernel(Index1D i, ArrayView<float> dy, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> dGate, ArrayView<float> dUp)
    {
        float g = gate[i], u = up[i], d = dy[i];
        float sig = 1f / (1f + MathF.Exp(-g));
        dUp[i] = d * g * sig;
        dGate[i] = d * u * sig * (1f + g * (1f - sig));
    }

    public static void Forward(DeviceContext dc, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> y, int n)
    {
        if (n == 0) return;
        if (dc.PtxSwiGlu is { } ptx)
        {
            using var pg = Gemm.Borrow(dc, gate);
            using var pu = Gemm.Borrow(dc, up);
            using var py = Gemm.Borrow(dc, y);
            ptx.Forward(pg, pu, py, n);
            return;
        }
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>>("swiglu.fwd", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(ForwardKernel))
            (n, gate, up, y);
    }

    public static void Backward(DeviceContext dc, ArrayView<float> dy, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> dGate, ArrayView<float> dUp, int n)
    {
        if (n == 0) return;
        if (dc.PtxSwiGlu is { } ptx)
        {
            using var pdy = Gemm.Borrow(dc, dy);
            using var pg = Gemm.Borrow(dc, gate);
            using var pu = Gemm.Borrow(dc, up);
            using var pdg = Gemm.Borrow(dc, dGate);
            using var pdu = Gemm.Borrow(dc, dUp);
            ptx.Backward(pdy, pg, pu, pdg, pdu, n);
            return;
        }
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>>("swiglu.bwd", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(BackwardKernel))
            (n, dy, gate, up, dGate, dUp);
    }
}
