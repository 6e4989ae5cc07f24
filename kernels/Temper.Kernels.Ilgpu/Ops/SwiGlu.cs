// SwiGLU: y = silu(gate) * up = gate / (1 + exp(-gate)) * up, all [N,F], one thread per element; gate and up f32 or bf16
// (IWeights: kept activations widened as read), y f32.
// Rounded: gate and up f32 rounded to bf16 (nearest even, NaN kept quiet: BFloat16.FromSingle) into gateBf16 and upBf16,
// y from the rounded values (IBackend.SwiGluRounded).
// Backward: dUp = dy silu(g), dGate = dy up sig(g) (1 + g (1 - sig(g))) (overwritten), gate and up f32 or bf16.
// With PTX kernels on (DeviceContext.PtxSwiGlu, CUDA), all go to the CUDA C++ kernels (cuda/swiglu.cu).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class SwiGlu
{
    public static void ForwardKernel<TIn>(Index1D i, TIn gate, TIn up, ArrayView<float> y) where TIn : struct, IWeights
    {
        float g = gate.Get(i);
        y[i] = g / (1f + MathF.Exp(-g)) * up.Get(i);
    }

    public static void RoundedKernel(Index1D i, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> y, ArrayView<ushort> gateBf16, ArrayView<ushort> upBf16)
    {
        uint gb = RoundBf16.Bits(gate[i]), ub = RoundBf16.Bits(up[i]);
        gateBf16[i] = (ushort)gb;
        upBf16[i] = (ushort)ub;
        float g = Interop.IntAsFloat(gb << 16);
        y[i] = g / (1f + MathF.Exp(-g)) * Interop.IntAsFloat(ub << 16);
    }

    public static void BackwardKernel<TIn>(Index1D i, ArrayView<float> dy, TIn gate, TIn up, ArrayView<float> dGate, ArrayView<float> dUp) where TIn : struct, IWeights
    {
        float g = gate.Get(i), u = up.Get(i), d = dy[i];
        float sig = 1f / (1f + MathF.Exp(-g));
        dUp[i] = d * g * sig;
        dGate[i] = d * u * sig * (1f + g * (1f - sig));
    }

    public static void Forward(DeviceContext dc, WeightView gate, WeightView up, ArrayView<float> y, int n)
    {
        if (n == 0) return;
        if (dc.PtxSwiGlu is { } ptx)
        {
            using var pg = Borrow(dc, gate);
            using var pu = Borrow(dc, up);
            using var py = Gemm.Borrow(dc, y);
            if (gate.IsBf16) ptx.ForwardBf16(pg, pu, py, n);
            else ptx.Forward(pg, pu, py, n);
            return;
        }
        if (gate.IsBf16)
            dc.Kernel<Action<Index1D, Bf16Weights, Bf16Weights, ArrayView<float>>>("swiglu.fwd.bf16", a => a.LoadAutoGroupedStreamKernel<Index1D, Bf16Weights, Bf16Weights, ArrayView<float>>(ForwardKernel))
                (n, new Bf16Weights(gate.Bf16), new Bf16Weights(up.Bf16), y);
        else
            dc.Kernel<Action<Index1D, F32Weights, F32Weights, ArrayView<float>>>("swiglu.fwd", a => a.LoadAutoGroupedStreamKernel<Index1D, F32Weights, F32Weights, ArrayView<float>>(ForwardKernel))
                (n, new F32Weights(gate.F32), new F32Weights(up.F32), y);
    }

    public static void Rounded(DeviceContext dc, ArrayView<float> gate, ArrayView<float> up, ArrayView<float> y, ArrayView<ushort> gateBf16, ArrayView<ushort> upBf16, int n)
    {
        if (n == 0) return;
        if (dc.PtxSwiGlu is { } ptx)
        {
            using var pg = Gemm.Borrow(dc, gate);
            using var pu = Gemm.Borrow(dc, up);
            using var py = Gemm.Borrow(dc, y);
            using var pgb = Gemm.Borrow(dc, gateBf16);
            using var pub = Gemm.Borrow(dc, upBf16);
            ptx.ForwardRounded(pg, pu, py, pgb, pub, n);
            return;
        }
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>>>("swiglu.rounded",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<ushort>>(RoundedKernel))
            (n, gate, up, y, gateBf16, upBf16);
    }

    public static void Backward(DeviceContext dc, ArrayView<float> dy, WeightView gate, WeightView up, ArrayView<float> dGate, ArrayView<float> dUp, int n)
    {
        if (n == 0) return;
        if (dc.PtxSwiGlu is { } ptx)
        {
            using var pdy = Gemm.Borrow(dc, dy);
            using var pg = Borrow(dc, gate);
            using var pu = Borrow(dc, up);
            using var pdg = Gemm.Borrow(dc, dGate);
            using var pdu = Gemm.Borrow(dc, dUp);
            if (gate.IsBf16) ptx.BackwardBf16(pdy, pg, pu, pdg, pdu, n);
            else ptx.Backward(pdy, pg, pu, pdg, pdu, n);
            return;
        }
        if (gate.IsBf16)
            dc.Kernel<Action<Index1D, ArrayView<float>, Bf16Weights, Bf16Weights, ArrayView<float>, ArrayView<float>>>("swiglu.bwd.bf16",
                a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Bf16Weights, Bf16Weights, ArrayView<float>, ArrayView<float>>(BackwardKernel))
                (n, dy, new Bf16Weights(gate.Bf16), new Bf16Weights(up.Bf16), dGate, dUp);
        else
            dc.Kernel<Action<Index1D, ArrayView<float>, F32Weights, F32Weights, ArrayView<float>, ArrayView<float>>>("swiglu.bwd",
                a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, F32Weights, F32Weights, ArrayView<float>, ArrayView<float>>(BackwardKernel))
                (n, dy, new F32Weights(gate.F32), new F32Weights(up.F32), dGate, dUp);
    }

    private static Temper.Cuda.Driver.CudaDeviceMemory Borrow(DeviceContext dc, WeightView v) => v.IsBf16 ? Gemm.Borrow(dc, v.Bf16) : Gemm.Borrow(dc, v.F32);
}
