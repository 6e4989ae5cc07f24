// Row copy between device tensors: rows [srcRow, srcRow + rows) of src, viewed as [*, W] bytes rows,
// into rows [dstRow, ...) of dst. A stream-ordered device-to-device copy, no kernel.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal static class CopyRows
{
    public static void Run(DeviceContext dc, ArrayView<byte> src, long srcByte, ArrayView<byte> dst, long dstByte, long bytes)
    {
        if (bytes == 0) return;
        ((ArrayView1D<byte, Stride1D.Dense>)src.SubView(srcByte, bytes)).CopyTo(dc.Stream, dst.SubView(dstByte, bytes));
    }
}
