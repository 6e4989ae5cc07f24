// f32 -> bf16, rounded to nearest even (NaN kept quiet, as BFloat16.FromSingle): y[i] = bf16(x[i]), one thread an
// element; IBackend.RoundToBf16 (a bf16 model's attention inputs kept for backward). With PTX kernels on it runs the
// CUDA C++ products' activation conversion (CudaLinear.ConvertToBf16, gemm_bf16.cu's convert_f32_bf16: the same rounding).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class RoundBf16
{
    /// <summary>The bf16 bits of f (in the low 16 bits).</summary>
    public static uint Bits(float f)
    {
        uint u = Interop.FloatAsInt(f);
        return (u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    }

    public static void Kernel(Index1D i, ArrayView<float> x, ArrayView<ushort> y) => y[i] = (ushort)Bits(x[i]);

    public static void Run(DeviceContext dc, ArrayView<float> x, ArrayView<ushort> y, int n)
    {
        if (n == 0) return;
        if (dc.PtxLinear is { } ptx)
        {
            using var px = Gemm.Borrow(dc, x);
            using var py = Gemm.Borrow(dc, y);
            ptx.ConvertToBf16(px, py, n);
            return;
        }
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<ushort>>>("round.bf16", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>>(Kernel))
            (n, x, y);
    }
}
