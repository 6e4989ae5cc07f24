// bf16 -> f32: dst[i] = the f32 whose top half is src[i] (exact), one thread an element, into the arena. For ops that
// take bf16 inputs on the PTX route and run f32 kernels elsewhere (Attention.ForwardFromBf16).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class WidenBf16
{
    public static void Kernel(Index1D i, ArrayView<ushort> src, ArrayView<float> dst) => dst[i] = Interop.IntAsFloat((uint)src[i] << 16);

    /// <summary>The first count values of src widened into a new arena view of count floats.</summary>
    public static ArrayView<float> Run(DeviceContext dc, ArrayView<ushort> src, long count)
    {
        var dst = dc.Arena.Take<float>(count);
        if (count > 0)
            dc.Kernel<Action<Index1D, ArrayView<ushort>, ArrayView<float>>>("widen.bf16", a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ArrayView<float>>(Kernel))
                (checked((int)count), src, dst);
        return dst;
    }
}
