// SafeHandles for the driver objects Temper owns: a device's primary context, and the objects that live in
// a context (module, stream, event, device memory, pinned host memory, a captured graph and its instance). A child handle holds a reference
// on its context handle (DangerousAddRef), so the context is released only after every child is freed,
// and a child frees itself with its context pushed current, so the finalizer thread can free it too.
// Borrow(...) wraps an object someone else owns (ILGPU's context or stream) without taking ownership.
using System.Runtime.InteropServices;

namespace Temper.Cuda.Driver;

/// <summary>A retained primary context of one device (cuDevicePrimaryCtxRetain / Release).</summary>
public sealed class CudaContextHandle : SafeHandle
{
    internal CudaContextHandle(nint context, int device, bool ownsHandle) : base(0, ownsHandle)
    {
        SetHandle(context);
        Device = device;
    }

    /// <summary>The device ordinal (CUdevice) the context belongs to.</summary>
    public int Device { get; }

    public override bool IsInvalid => handle == 0;

    /// <summary>Wraps a context owned elsewhere (e.g. ILGPU's CudaAccelerator); it is never released here.</summary>
    public static CudaContextHandle Borrow(nint context, int device) => new(context, device, ownsHandle: false);

    protected override bool ReleaseHandle() =>
        CudaImports.cuDevicePrimaryCtxRelease_v2(Device) == CudaResult.Success;
}

/// <summary>A driver object created inside a context; freed with that context pushed current.</summary>
public abstract class CudaContextChildHandle : SafeHandle
{
    readonly bool addedContextRef;

    protected CudaContextChildHandle(nint value, CudaContextHandle context, bool ownsHandle) : base(0, ownsHandle)
    {
        Context = context;
        if (ownsHandle) context.DangerousAddRef(ref addedContextRef);
        SetHandle(value);
    }

    public CudaContextHandle Context { get; }

    public override bool IsInvalid => handle == 0;

    protected abstract CudaResult Destroy(nint value);

    protected sealed override unsafe bool ReleaseHandle()
    {
        bool pushed = CudaImports.cuCtxPushCurrent_v2(Context.DangerousGetHandle()) == CudaResult.Success;
        bool ok = pushed && Destroy(handle) == CudaResult.Success;
        if (pushed)
        {
            nint popped;
            CudaImports.cuCtxPopCurrent_v2(&popped);
        }
        if (addedContextRef) Context.DangerousRelease();
        return ok;
    }
}

/// <summary>A module loaded from PTX or a cubin (cuModuleUnload). Its functions live as long as it does.</summary>
public sealed class CudaModuleHandle(nint module, CudaContextHandle context)
    : CudaContextChildHandle(module, context, ownsHandle: true)
{
    protected override CudaResult Destroy(nint value) => CudaImports.cuModuleUnload(value);
}

/// <summary>A stream (cuStreamDestroy_v2). Borrow wraps a stream owned elsewhere (ILGPU's).</summary>
public sealed class CudaStreamHandle : CudaContextChildHandle
{
    internal CudaStreamHandle(nint stream, CudaContextHandle context, bool ownsHandle) : base(stream, context, ownsHandle) { }

    public static CudaStreamHandle Borrow(nint stream, CudaContextHandle context) => new(stream, context, ownsHandle: false);

    protected override CudaResult Destroy(nint value) => CudaImports.cuStreamDestroy_v2(value);
}

/// <summary>An event (cuEventDestroy_v2).</summary>
public sealed class CudaEventHandle(nint evt, CudaContextHandle context)
    : CudaContextChildHandle(evt, context, ownsHandle: true)
{
    protected override CudaResult Destroy(nint value) => CudaImports.cuEventDestroy_v2(value);
}

/// <summary>Device memory from cuMemAlloc (cuMemFree_v2); Pointer is the CUdeviceptr, ByteLength its size.
/// Borrow wraps memory owned elsewhere (an ILGPU buffer's NativePtr).</summary>
public sealed class CudaDeviceMemory : CudaContextChildHandle
{
    internal CudaDeviceMemory(ulong pointer, long byteLength, CudaContextHandle context, bool ownsHandle)
        : base((nint)pointer, context, ownsHandle) => ByteLength = byteLength;

    public static CudaDeviceMemory Borrow(ulong pointer, long byteLength, CudaContextHandle context) =>
        new(pointer, byteLength, context, ownsHandle: false);

    public long ByteLength { get; }

    public ulong Pointer => (ulong)handle;

    protected override CudaResult Destroy(nint value) => CudaImports.cuMemFree_v2((ulong)value);
}

/// <summary>Page-locked host memory from cuMemAllocHost (cuMemFreeHost), for truly asynchronous copies.</summary>
public sealed class CudaPinnedMemory : CudaContextChildHandle
{
    internal CudaPinnedMemory(nint pointer, long byteLength, CudaContextHandle context)
        : base(pointer, context, ownsHandle: true) => ByteLength = byteLength;

    public long ByteLength { get; }

    public nint Pointer => handle;

    /// <summary>The memory as a span of <typeparamref name="T"/> (valid until the handle is disposed).</summary>
    public unsafe Span<T> AsSpan<T>() where T : unmanaged =>
        new((void*)handle, checked((int)(ByteLength / sizeof(T))));

    protected override unsafe CudaResult Destroy(nint value) => CudaImports.cuMemFreeHost((void*)value);
}

/// <summary>A graph (CUgraph) a stream capture returned (cuGraphDestroy).</summary>
public sealed class CudaGraphHandle(nint graph, CudaContextHandle context)
    : CudaContextChildHandle(graph, context, ownsHandle: true)
{
    protected override CudaResult Destroy(nint value) => CudaImports.cuGraphDestroy(value);
}

/// <summary>An instantiated graph (CUgraphExec), launchable on a stream (cuGraphExecDestroy).</summary>
public sealed class CudaGraphExecHandle(nint exec, CudaContextHandle context)
    : CudaContextChildHandle(exec, context, ownsHandle: true)
{
    protected override CudaResult Destroy(nint value) => CudaImports.cuGraphExecDestroy(value);
}
