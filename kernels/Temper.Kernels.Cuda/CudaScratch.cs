// Device scratch that an instance keeps and grows: the bf16 activations, W^T and dequantised NF4 weights of CudaLinear,
// CudaLoraRank's split partial sums, CudaPagedAttention's split counters.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

internal static class CudaScratch
{
    /// <summary>buffer, replaced by a new one of max(elements, minElements) Ts when it holds fewer than elements.</summary>
    public static CudaDeviceMemory AtLeast<T>(CudaDevice device, ref CudaDeviceMemory? buffer, long elements, long minElements) where T : unmanaged
    {
        if (buffer == null || buffer.ByteLength < elements * System.Runtime.CompilerServices.Unsafe.SizeOf<T>())
        {
            buffer?.Dispose(); // the stream orders this after the kernels that read it
            buffer = device.Allocate<T>(Math.Max(elements, minElements));
        }
        return buffer;
    }
}
