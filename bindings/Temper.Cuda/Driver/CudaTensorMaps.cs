// Tensor maps for Hopper's bulk tensor copies (TMA): cuTensorMapEncodeTiled (CUDA 12.0 and later) describes
// a 2-D tensor in device memory (innermost dimension first) and the box one cp.async.bulk.tensor copies
// into shared memory, with its swizzle; the 128-byte CUtensorMap goes to a kernel by value (a
// `const __grid_constant__` parameter: CudaKernelArguments.Add(map)). Elements of a box past the tensor's
// edges arrive as zeros. A driver without the entry point makes Unavailable say why instead of a crash.
using System.Runtime.InteropServices;

namespace Temper.Cuda.Driver;

/// <summary>A CUtensorMap: 128 opaque bytes (the driver asks for 64-byte alignment where it writes one;
/// Encode2D takes care of that).</summary>
[StructLayout(LayoutKind.Sequential, Size = 128)]
public unsafe struct CudaTensorMap
{
    private fixed ulong _opaque[16];
}

#pragma warning disable CA1028, CA1008 // C enums of int with cuda.h's values
/// <summary>CUtensorMapDataType (only the members Temper uses).</summary>
public enum CudaTensorMapDataType
{
    Float32 = 7,
    BFloat16 = 9,
}

/// <summary>CUtensorMapSwizzle: how 16-byte chunks of a box row are permuted in shared memory.</summary>
public enum CudaTensorMapSwizzle
{
    None = 0,
    Bytes32 = 1,
    Bytes64 = 2,
    Bytes128 = 3,
}
#pragma warning restore CA1028, CA1008

public static unsafe class CudaTensorMaps
{
    private const string EntryPoint = "cuTensorMapEncodeTiled";
    private const string Missing = $"the CUDA driver has no {EntryPoint} (tensor maps need a CUDA 12.0 or later driver)";

    /// <summary>Null where the driver encodes tensor maps; otherwise why not (a driver older than CUDA 12.0).</summary>
    public static string? Unavailable => CudaLibrary.Exports(EntryPoint) ? null : CudaLibrary.IsAvailable ? Missing : CudaLibrary.LoadError;

    /// <summary>A tiled map of the row-major [rows, columns] tensor at <paramref name="address"/> (rowStrideBytes
    /// apart, a multiple of 16), copied in boxes of [boxRows, boxColumns] elements.</summary>
    public static CudaTensorMap Encode2D(ulong address, CudaTensorMapDataType dataType, long rows, long columns, long rowStrideBytes,
        int boxRows, int boxColumns, CudaTensorMapSwizzle swizzle)
    {
        if (Unavailable is { } why) throw new CudaException(why);
        ulong* dims = stackalloc ulong[] { (ulong)columns, (ulong)rows };
        ulong* strides = stackalloc ulong[] { (ulong)rowStrideBytes };
        uint* box = stackalloc uint[] { (uint)boxColumns, (uint)boxRows };
        uint* elementStrides = stackalloc uint[] { 1, 1 };
        byte* buffer = stackalloc byte[128 + 64];
        var map = (CudaTensorMap*)(((nint)buffer + 63) & ~(nint)63); // the driver wants it 64-byte aligned
        CudaResult result;
        try
        {
            result = CudaImports.cuTensorMapEncodeTiled(map, dataType, 2, address, dims, strides, box, elementStrides, 0, swizzle, 3, 0); // no interleave, L2 promotion 256B, zero fill
        }
        catch (EntryPointNotFoundException)
        {
            throw new CudaException(Missing);
        }
        if (result != CudaResult.Success)
            throw new CudaException($"{CudaCheck.Message(result, EntryPoint)}: a [{rows}, {columns}] tensor ({dataType}, rows {rowStrideBytes} bytes apart, at 0x{address:x}) in boxes of [{boxRows}, {boxColumns}], swizzle {swizzle}", result);
        return *map;
    }
}
