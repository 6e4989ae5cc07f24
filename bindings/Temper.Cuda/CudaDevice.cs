// The small facade tests and kernels use: open a device (init, retain its primary context, make it current,
// create a stream), load PTX from this assembly's embedded resources, upload/download spans, launch 1-D
// or 3-D grids and time with events. Everything runs on the device's one stream; Dispose frees the stream
// and releases the context after the modules and buffers the caller disposed.
using System.Reflection;
using Temper.Cuda.Driver;

namespace Temper.Cuda;

public sealed class CudaDevice : IDisposable
{
    CudaDevice(int ordinal)
    {
        Ordinal = ordinal;
        Handle = CudaDriver.Device(ordinal);
        Name = CudaDriver.DeviceName(Handle);
        Context = CudaDriver.RetainPrimaryContext(Handle);
        CudaDriver.SetCurrentContext(Context);
        Stream = CudaDriver.CreateStream(Context);
    }

    CudaDevice(int ordinal, CudaContextHandle context, CudaStreamHandle stream)
    {
        Ordinal = ordinal;
        Handle = CudaDriver.Device(ordinal);
        Name = CudaDriver.DeviceName(Handle);
        Context = context;
        CudaDriver.SetCurrentContext(Context);
        Stream = stream;
    }

    /// <summary>A facade over a context and stream someone else owns (ILGPU's CUDA accelerator): launches
    /// go to that stream, in order with its own work; Dispose releases neither.</summary>
    public static CudaDevice Borrow(nint context, int ordinal, nint stream)
    {
        var borrowed = CudaContextHandle.Borrow(context, ordinal);
        return new CudaDevice(ordinal, borrowed, CudaStreamHandle.Borrow(stream, borrowed));
    }

    /// <summary>Initialises the driver and opens device <paramref name="ordinal"/>; throws a one-line
    /// CudaException when there is no driver or no such device.</summary>
    public static CudaDevice Open(int ordinal = 0)
    {
        CudaDriver.Init();
        int count = CudaDriver.DeviceCount();
        if (ordinal < 0 || ordinal >= count)
            throw new CudaException($"no CUDA device {ordinal}: the driver sees {count} device(s)");
        return new CudaDevice(ordinal);
    }

    /// <summary>The name the CUDA emulator (kernels/Temper.Kernels.Cuda/emu) gives its one device.</summary>
    public const string EmulatorName = "Temper CUDA emulator (CPU)";

    public int Ordinal { get; }

    /// <summary>True on the CUDA emulator: kernels from cuda/*.cu run on the CPU; no PTX JIT, no timing.</summary>
    public bool IsEmulated => Name == EmulatorName;
    public int Handle { get; }
    public string Name { get; }
    public CudaContextHandle Context { get; }
    public CudaStreamHandle Stream { get; }

    public (int Major, int Minor) ComputeCapability =>
        (Attribute(CudaDeviceAttribute.ComputeCapabilityMajor), Attribute(CudaDeviceAttribute.ComputeCapabilityMinor));

    public int MultiprocessorCount => Attribute(CudaDeviceAttribute.MultiprocessorCount);

    /// <summary>The most dynamic shared memory one block may opt in to (bytes), e.g. 232448 on H100.</summary>
    public int MaxSharedMemoryPerBlockOptin => Attribute(CudaDeviceAttribute.MaxSharedMemoryPerBlockOptin);

    public long TotalMemory => CudaDriver.DeviceTotalMemory(Handle);

    public int Attribute(CudaDeviceAttribute attribute) => CudaDriver.DeviceAttribute(Handle, attribute);

    /// <summary>Makes this device's context current on the calling thread (needed once per thread).</summary>
    public void MakeCurrent() => CudaDriver.SetCurrentContext(Context);

    /// <summary>Loads an embedded PTX resource of Temper.Cuda by file name, e.g. "vector_add.ptx".</summary>
    public CudaModuleHandle LoadEmbeddedModule(string ptxFileName) =>
        LoadModule(EmbeddedPtx.Read(ptxFileName), out _);

    public CudaModuleHandle LoadModule(string ptx, out string infoLog) => CudaDriver.LoadModule(Context, ptx, out infoLog);

    /// <summary>Called when an allocation finds the device out of memory: frees what a caller caches on this context (a
    /// tensor pool sharing it) and says whether it freed anything, in which case the allocation is tried once more.</summary>
    public Func<bool>? ReleaseCachedMemory { get; set; }

    public CudaDeviceMemory Allocate<T>(long count) where T : unmanaged
    {
        long bytes = checked(count * SizeOf<T>());
        try { return CudaDriver.Allocate(Context, bytes); }
        catch (CudaException e) when (e.Result == CudaResult.OutOfMemory && ReleaseCachedMemory != null)
        {
            if (!ReleaseCachedMemory()) throw;
        }
        return CudaDriver.Allocate(Context, bytes);
    }

    /// <summary>Allocates device memory for <paramref name="values"/> and copies them in (waits for the copy).</summary>
    public CudaDeviceMemory Upload<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var memory = Allocate<T>(values.Length);
        CopyToDevice(values, memory);
        return memory;
    }

    /// <summary>Copies <paramref name="values"/> to the start of <paramref name="memory"/>; returns when done.</summary>
    public unsafe void CopyToDevice<T>(ReadOnlySpan<T> values, CudaDeviceMemory memory) where T : unmanaged
    {
        long bytes = checked((long)values.Length * SizeOf<T>());
        if (bytes > memory.ByteLength) throw new CudaException($"copy of {bytes} bytes into a {memory.ByteLength}-byte device buffer");
        fixed (T* p = values) CudaDriver.CopyHostToDeviceAsync(memory.Pointer, p, bytes, Stream);
        Synchronize(); // the span is pageable and may move once unpinned
    }

    /// <summary>Copies the start of <paramref name="memory"/> into <paramref name="values"/>; returns when done.</summary>
    public unsafe void CopyToHost<T>(CudaDeviceMemory memory, Span<T> values) where T : unmanaged
    {
        long bytes = checked((long)values.Length * SizeOf<T>());
        if (bytes > memory.ByteLength) throw new CudaException($"copy of {bytes} bytes out of a {memory.ByteLength}-byte device buffer");
        fixed (T* p = values)
        {
            CudaDriver.CopyDeviceToHostAsync(p, memory.Pointer, bytes, Stream);
            Synchronize();
        }
    }

    public T[] Download<T>(CudaDeviceMemory memory) where T : unmanaged
    {
        var values = new T[memory.ByteLength / SizeOf<T>()];
        CopyToHost<T>(memory, values);
        return values;
    }

    /// <summary>A 1-D launch: <paramref name="threads"/> threads in blocks of <paramref name="blockSize"/>.</summary>
    public void Launch(CudaFunction function, int threads, int blockSize, CudaKernelArguments arguments, int sharedMemoryBytes = 0)
    {
        uint blocks = (uint)((threads + blockSize - 1) / blockSize);
        Launch(function, (blocks, 1, 1), ((uint)blockSize, 1, 1), arguments, sharedMemoryBytes);
    }

    /// <summary>A launch on this device's stream; <paramref name="overlapPrevious"/>: see CudaDriver.Launch.</summary>
    public void Launch(CudaFunction function, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block,
        CudaKernelArguments arguments, int sharedMemoryBytes = 0, bool overlapPrevious = false) =>
        CudaDriver.Launch(function, grid, block, (uint)sharedMemoryBytes, Stream, arguments, overlapPrevious);

    public void Synchronize() => CudaDriver.StreamSynchronize(Stream);

    public CudaEventHandle CreateEvent() => CudaDriver.CreateEvent(Context);

    public void Record(CudaEventHandle evt) => CudaDriver.RecordEvent(evt, Stream);

    public void Dispose()
    {
        Stream.Dispose();
        Context.Dispose();
    }

    static unsafe int SizeOf<T>() where T : unmanaged => sizeof(T);
}

/// <summary>The hand-written PTX kernels embedded in Temper.Cuda (Ptx/*.ptx), and the reader other
/// assemblies with embedded PTX (Temper.Kernels.Cuda) use with their own resource prefix.</summary>
public static class EmbeddedPtx
{
    const string Prefix = "Temper.Cuda.Ptx.";

    /// <summary>The file names of the embedded PTX resources.</summary>
    public static IReadOnlyList<string> Names => NamesIn(typeof(EmbeddedPtx).Assembly, Prefix);

    public static string Read(string ptxFileName) => Read(typeof(EmbeddedPtx).Assembly, Prefix, ptxFileName);

    public static IReadOnlyList<string> NamesIn(System.Reflection.Assembly assembly, string prefix) =>
        [.. assembly.GetManifestResourceNames().Where(n => n.StartsWith(prefix, StringComparison.Ordinal)).Select(n => n[prefix.Length..]).Order()];

    public static string Read(System.Reflection.Assembly assembly, string prefix, string ptxFileName)
    {
        using var stream = assembly.GetManifestResourceStream(prefix + ptxFileName)
            ?? throw new CudaException($"no embedded PTX '{ptxFileName}' in {assembly.GetName().Name} (have: {string.Join(", ", NamesIn(assembly, prefix))})");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
