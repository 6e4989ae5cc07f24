// Checked wrappers over CudaImports: each calls one driver function and throws a CudaException naming it
// on failure. Device queries, primary contexts, memory, copies, streams and events live here; modules and
// launches are in CudaModules.cs. Sizes are bytes; device pointers are CUdeviceptr (ulong).
// Init() must come first: it is where a machine without the driver gets its one-line "no CUDA driver".
using System.Runtime.InteropServices;

namespace Temper.Cuda.Driver;

public static unsafe partial class CudaDriver
{
    static CudaDriver() => CudaLibrary.EnsureResolver();

    static nint Raw(SafeHandle? h) => h is null ? 0 : h.DangerousGetHandle();

    public static void Init()
    {
        CudaLibrary.EnsureLoaded();
        CudaCheck.Ok(CudaImports.cuInit(0));
    }

    /// <summary>The driver's CUDA version as 1000 * major + 10 * minor (12040 for 12.4).</summary>
    public static int DriverVersion()
    {
        int version;
        CudaCheck.Ok(CudaImports.cuDriverGetVersion(&version));
        return version;
    }

    public static int DeviceCount()
    {
        int count;
        CudaCheck.Ok(CudaImports.cuDeviceGetCount(&count));
        return count;
    }

    /// <summary>The CUdevice for ordinal <paramref name="ordinal"/> (0 .. DeviceCount - 1).</summary>
    public static int Device(int ordinal)
    {
        int device;
        CudaCheck.Ok(CudaImports.cuDeviceGet(&device, ordinal));
        return device;
    }

    public static string DeviceName(int device)
    {
        byte* name = stackalloc byte[256];
        CudaCheck.Ok(CudaImports.cuDeviceGetName(name, 256, device));
        return Marshal.PtrToStringUTF8((nint)name)!;
    }

    public static int DeviceAttribute(int device, CudaDeviceAttribute attribute)
    {
        int value;
        CudaCheck.Ok(CudaImports.cuDeviceGetAttribute(&value, attribute, device));
        return value;
    }

    public static long DeviceTotalMemory(int device)
    {
        nuint bytes;
        CudaCheck.Ok(CudaImports.cuDeviceTotalMem_v2(&bytes, device));
        return (long)bytes;
    }

    /// <summary>Retains the device's primary context (the one the runtime API and ILGPU share).</summary>
    public static CudaContextHandle RetainPrimaryContext(int device)
    {
        nint context;
        CudaCheck.Ok(CudaImports.cuDevicePrimaryCtxRetain(&context, device));
        return new CudaContextHandle(context, device, ownsHandle: true);
    }

    /// <summary>Makes <paramref name="context"/> current on the calling thread.</summary>
    public static void SetCurrentContext(CudaContextHandle context)
    {
        CudaCheck.Ok(CudaImports.cuCtxSetCurrent(Raw(context)));
        GC.KeepAlive(context);
    }

    /// <summary>The calling thread's current context as a raw CUcontext (0 when none).</summary>
    public static nint CurrentContext()
    {
        nint context;
        CudaCheck.Ok(CudaImports.cuCtxGetCurrent(&context));
        return context;
    }

    public static void ContextSynchronize() => CudaCheck.Ok(CudaImports.cuCtxSynchronize());

    /// <summary>Free and total device memory of the current context's device, in bytes.</summary>
    public static (long Free, long Total) MemoryInfo()
    {
        nuint free, total;
        CudaCheck.Ok(CudaImports.cuMemGetInfo_v2(&free, &total));
        return ((long)free, (long)total);
    }

    // ---- memory (the context must be current on the calling thread) ----

    public static CudaDeviceMemory Allocate(CudaContextHandle context, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        ulong pointer;
        CudaCheck.Ok(CudaImports.cuMemAlloc_v2(&pointer, (nuint)bytes));
        return new CudaDeviceMemory(pointer, bytes, context, ownsHandle: true);
    }

    public static CudaPinnedMemory AllocateHost(CudaContextHandle context, long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        void* pointer;
        CudaCheck.Ok(CudaImports.cuMemAllocHost_v2(&pointer, (nuint)bytes));
        return new CudaPinnedMemory((nint)pointer, bytes, context);
    }

    /// <summary>Host to device; <paramref name="source"/> must stay valid until the stream reaches the copy
    /// (pinned memory for real asynchrony; pageable memory makes the driver stage it synchronously).</summary>
    public static void CopyHostToDeviceAsync(ulong destination, void* source, long bytes, CudaStreamHandle? stream)
    {
        CudaCheck.Ok(CudaImports.cuMemcpyHtoDAsync_v2(destination, source, (nuint)bytes, Raw(stream)));
        GC.KeepAlive(stream);
    }

    public static void CopyDeviceToHostAsync(void* destination, ulong source, long bytes, CudaStreamHandle? stream)
    {
        CudaCheck.Ok(CudaImports.cuMemcpyDtoHAsync_v2(destination, source, (nuint)bytes, Raw(stream)));
        GC.KeepAlive(stream);
    }

    public static void CopyDeviceToDeviceAsync(ulong destination, ulong source, long bytes, CudaStreamHandle? stream)
    {
        CudaCheck.Ok(CudaImports.cuMemcpyDtoDAsync_v2(destination, source, (nuint)bytes, Raw(stream)));
        GC.KeepAlive(stream);
    }

    /// <summary>Sets <paramref name="bytes"/> bytes at <paramref name="destination"/> to <paramref name="value"/>.</summary>
    public static void SetBytesAsync(ulong destination, byte value, long bytes, CudaStreamHandle? stream)
    {
        CudaCheck.Ok(CudaImports.cuMemsetD8Async(destination, value, (nuint)bytes, Raw(stream)));
        GC.KeepAlive(stream);
    }

    // ---- streams and events ----

    /// <summary>A new stream; <paramref name="nonBlocking"/> (CU_STREAM_NON_BLOCKING) stops it syncing with stream 0.</summary>
    public static CudaStreamHandle CreateStream(CudaContextHandle context, bool nonBlocking = true)
    {
        nint stream;
        CudaCheck.Ok(CudaImports.cuStreamCreate(&stream, nonBlocking ? 1u : 0u));
        return new CudaStreamHandle(stream, context, ownsHandle: true);
    }

    public static void StreamSynchronize(CudaStreamHandle? stream)
    {
        CudaCheck.Ok(CudaImports.cuStreamSynchronize(Raw(stream)));
        GC.KeepAlive(stream);
    }

    /// <summary>A new event with timing enabled (flags CU_EVENT_DEFAULT).</summary>
    public static CudaEventHandle CreateEvent(CudaContextHandle context)
    {
        nint evt;
        CudaCheck.Ok(CudaImports.cuEventCreate(&evt, 0));
        return new CudaEventHandle(evt, context);
    }

    public static void RecordEvent(CudaEventHandle evt, CudaStreamHandle? stream)
    {
        CudaCheck.Ok(CudaImports.cuEventRecord(Raw(evt), Raw(stream)));
        GC.KeepAlive(evt);
        GC.KeepAlive(stream);
    }

    /// <summary>cuEventRecordWithFlags with CU_EVENT_RECORD_EXTERNAL: recorded into a capturing stream, the
    /// record becomes a node of the graph, so each replay stamps the event (for timing inside a graph).</summary>
    public static void RecordEventExternal(CudaEventHandle evt, CudaStreamHandle? stream)
    {
        CudaCheck.Ok(CudaImports.cuEventRecordWithFlags(Raw(evt), Raw(stream), 1));
        GC.KeepAlive(evt);
        GC.KeepAlive(stream);
    }

    public static void EventSynchronize(CudaEventHandle evt)
    {
        CudaCheck.Ok(CudaImports.cuEventSynchronize(Raw(evt)));
        GC.KeepAlive(evt);
    }

    /// <summary>Milliseconds between two recorded, completed events (about 0.5 us resolution).</summary>
    public static float ElapsedMilliseconds(CudaEventHandle start, CudaEventHandle end)
    {
        float ms;
        CudaCheck.Ok(CudaImports.cuEventElapsedTime(&ms, Raw(start), Raw(end)));
        GC.KeepAlive(start);
        GC.KeepAlive(end);
        return ms;
    }
}
