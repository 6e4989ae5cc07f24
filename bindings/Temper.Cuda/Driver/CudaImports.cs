// The raw CUDA driver entry points (cuda.h, CUDA 12 ABI) as [LibraryImport]s: blittable arguments only
// (handles as nint, CUdeviceptr as ulong, size_t as nuint), so the generated stubs need no marshalling
// and work under NativeAOT. "cuda" is a placeholder name that CudaLibrary's resolver maps to
// libcuda.so.1 / nvcuda.dll. The _v2 names are the ones cuda.h's macros select on 64-bit hosts.
// Callers go through CudaDriver, which checks every result; nothing here is public.
using System.Runtime.InteropServices;

namespace Temper.Cuda.Driver;

#pragma warning disable CA1401, CA5392, SYSLIB1054
internal static unsafe partial class CudaImports
{
    internal const string Library = "cuda";

    [LibraryImport(Library)] internal static partial CudaResult cuGetErrorName(CudaResult error, byte** name);
    [LibraryImport(Library)] internal static partial CudaResult cuGetErrorString(CudaResult error, byte** text);
    [LibraryImport(Library)] internal static partial CudaResult cuInit(uint flags);
    [LibraryImport(Library)] internal static partial CudaResult cuDriverGetVersion(int* version);

    [LibraryImport(Library)] internal static partial CudaResult cuDeviceGetCount(int* count);
    [LibraryImport(Library)] internal static partial CudaResult cuDeviceGet(int* device, int ordinal);
    [LibraryImport(Library)] internal static partial CudaResult cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Library)] internal static partial CudaResult cuDeviceGetAttribute(int* value, CudaDeviceAttribute attribute, int device);
    [LibraryImport(Library)] internal static partial CudaResult cuDeviceTotalMem_v2(nuint* bytes, int device);

    [LibraryImport(Library)] internal static partial CudaResult cuDevicePrimaryCtxRetain(nint* context, int device);
    [LibraryImport(Library)] internal static partial CudaResult cuDevicePrimaryCtxRelease_v2(int device);
    [LibraryImport(Library)] internal static partial CudaResult cuCtxSetCurrent(nint context);
    [LibraryImport(Library)] internal static partial CudaResult cuCtxGetCurrent(nint* context);
    [LibraryImport(Library)] internal static partial CudaResult cuCtxPushCurrent_v2(nint context);
    [LibraryImport(Library)] internal static partial CudaResult cuCtxPopCurrent_v2(nint* context);
    [LibraryImport(Library)] internal static partial CudaResult cuCtxSynchronize();
    [LibraryImport(Library)] internal static partial CudaResult cuMemGetInfo_v2(nuint* free, nuint* total);

    [LibraryImport(Library)]
    internal static partial CudaResult cuModuleLoadDataEx(nint* module, void* image, uint optionCount, CudaJitOption* options, void** optionValues);
    [LibraryImport(Library)] internal static partial CudaResult cuModuleUnload(nint module);
    [LibraryImport(Library)] internal static partial CudaResult cuModuleGetFunction(nint* function, nint module, byte* name);

    [LibraryImport(Library)] internal static partial CudaResult cuFuncGetAttribute(int* value, CudaFunctionAttribute attribute, nint function);
    [LibraryImport(Library)] internal static partial CudaResult cuFuncSetAttribute(nint function, CudaFunctionAttribute attribute, int value);
    [LibraryImport(Library)]
    internal static partial CudaResult cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ,
        uint blockX, uint blockY, uint blockZ, uint sharedMemoryBytes, nint stream, void** kernelParams, void** extra);
    // CUDA 11.8 and later.
    [LibraryImport(Library)] internal static partial CudaResult cuLaunchKernelEx(CudaLaunchConfig* config, nint function, void** kernelParams, void** extra);

    [LibraryImport(Library)] internal static partial CudaResult cuMemAlloc_v2(ulong* pointer, nuint bytes);
    [LibraryImport(Library)] internal static partial CudaResult cuMemFree_v2(ulong pointer);
    [LibraryImport(Library)] internal static partial CudaResult cuMemAllocHost_v2(void** pointer, nuint bytes);
    [LibraryImport(Library)] internal static partial CudaResult cuMemFreeHost(void* pointer);
    [LibraryImport(Library)] internal static partial CudaResult cuMemcpyHtoDAsync_v2(ulong destination, void* source, nuint bytes, nint stream);
    [LibraryImport(Library)] internal static partial CudaResult cuMemcpyDtoHAsync_v2(void* destination, ulong source, nuint bytes, nint stream);
    [LibraryImport(Library)] internal static partial CudaResult cuMemcpyDtoDAsync_v2(ulong destination, ulong source, nuint bytes, nint stream);
    [LibraryImport(Library)] internal static partial CudaResult cuMemsetD8Async(ulong destination, byte value, nuint count, nint stream);

    [LibraryImport(Library)] internal static partial CudaResult cuStreamCreate(nint* stream, uint flags);
    [LibraryImport(Library)] internal static partial CudaResult cuStreamDestroy_v2(nint stream);
    [LibraryImport(Library)] internal static partial CudaResult cuStreamSynchronize(nint stream);
    [LibraryImport(Library)] internal static partial CudaResult cuStreamBeginCapture_v2(nint stream, CudaStreamCaptureMode mode);
    [LibraryImport(Library)] internal static partial CudaResult cuStreamEndCapture(nint stream, nint* graph);
    [LibraryImport(Library)] internal static partial CudaResult cuStreamIsCapturing(nint stream, CudaStreamCaptureStatus* status);

    [LibraryImport(Library)] internal static partial CudaResult cuGraphGetNodes(nint graph, nint* nodes, nuint* count);
    [LibraryImport(Library)] internal static partial CudaResult cuGraphInstantiateWithFlags(nint* exec, nint graph, ulong flags);
    [LibraryImport(Library)] internal static partial CudaResult cuGraphLaunch(nint exec, nint stream);
    [LibraryImport(Library)] internal static partial CudaResult cuGraphExecDestroy(nint exec);
    [LibraryImport(Library)] internal static partial CudaResult cuGraphDestroy(nint graph);

    [LibraryImport(Library)] internal static partial CudaResult cuEventCreate(nint* evt, uint flags);
    [LibraryImport(Library)] internal static partial CudaResult cuEventDestroy_v2(nint evt);
    [LibraryImport(Library)] internal static partial CudaResult cuEventRecord(nint evt, nint stream);
    [LibraryImport(Library)] internal static partial CudaResult cuEventRecordWithFlags(nint evt, nint stream, uint flags);
    [LibraryImport(Library)] internal static partial CudaResult cuEventSynchronize(nint evt);
    [LibraryImport(Library)] internal static partial CudaResult cuEventElapsedTime(float* milliseconds, nint start, nint end);

    // CUDA 12.0 and later only (an older driver lacks the export: CudaTensorMaps checks before calling).
    [LibraryImport(Library)]
    internal static partial CudaResult cuTensorMapEncodeTiled(CudaTensorMap* tensorMap, CudaTensorMapDataType dataType, uint rank, ulong globalAddress,
        ulong* globalDim, ulong* globalStrides, uint* boxDim, uint* elementStrides, int interleave, CudaTensorMapSwizzle swizzle, int l2Promotion, int oobFill);
}

/// <summary>cuda.h's CUlaunchConfig: the launch's sizes, stream and attributes (56 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct CudaLaunchConfig
{
    public uint GridX, GridY, GridZ, BlockX, BlockY, BlockZ, SharedMemoryBytes;
    public nint Stream;
    public CudaLaunchAttribute* Attributes;
    public uint AttributeCount;
}

/// <summary>cuda.h's CUlaunchAttribute: an id, then a 64-byte value union at offset 8 (72 bytes).</summary>
[StructLayout(LayoutKind.Explicit, Size = 72)]
internal struct CudaLaunchAttribute
{
    /// <summary>CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, whose value is an int (non-zero: allowed).</summary>
    public const int ProgrammaticStreamSerialization = 6;

    [FieldOffset(0)] public int Id;
    [FieldOffset(8)] public int Value;
}
