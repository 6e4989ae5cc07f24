// Modules, functions and launches: PTX is JIT-compiled by the driver (cuModuleLoadDataEx) with its error
// and info logs captured, so a bad kernel fails with ptxas's own line; functions expose their attributes
// and the dynamic shared-memory opt-in (> 48 KB needs MaxDynamicSharedSizeBytes set first); launches take
// a grid and block (x, y, z), dynamic shared bytes, a stream and the kernel's arguments.
using System.Runtime.InteropServices;
using System.Text;

namespace Temper.Cuda.Driver;

/// <summary>A kernel entry of a loaded module (CUfunction); valid while its module is.</summary>
public sealed class CudaFunction(nint handle, string name, CudaModuleHandle module)
{
    public nint Handle { get; } = handle;
    public string Name { get; } = name;
    public CudaModuleHandle Module { get; } = module;
}

public static unsafe partial class CudaDriver
{
    const int JitLogBytes = 16 * 1024;

    /// <summary>JIT-compiles <paramref name="ptx"/> for the current context's device. <paramref name="infoLog"/>
    /// gets the JIT's info log (registers, spills with verbose logging); a failure throws with the error log.</summary>
    public static CudaModuleHandle LoadModule(CudaContextHandle context, string ptx, out string infoLog)
    {
        byte[] image = new byte[Encoding.UTF8.GetByteCount(ptx) + 1]; // NUL-terminated, as the driver expects
        Encoding.UTF8.GetBytes(ptx, image);
        byte* errorLog = stackalloc byte[JitLogBytes];
        byte* info = stackalloc byte[JitLogBytes];
        errorLog[0] = 0;
        info[0] = 0;
        CudaJitOption* options = stackalloc CudaJitOption[]
        {
            CudaJitOption.ErrorLogBuffer, CudaJitOption.ErrorLogBufferSizeBytes,
            CudaJitOption.InfoLogBuffer, CudaJitOption.InfoLogBufferSizeBytes, CudaJitOption.LogVerbose,
        };
        void** values = stackalloc void*[] { errorLog, (void*)JitLogBytes, info, (void*)JitLogBytes, (void*)1 };
        nint module;
        CudaResult result;
        fixed (byte* p = image) result = CudaImports.cuModuleLoadDataEx(&module, p, 5, options, values);
        infoLog = LogText(info, JitLogBytes);
        if (result != CudaResult.Success)
        {
            string log = LogText(errorLog, JitLogBytes);
            string message = CudaCheck.Message(result, nameof(CudaImports.cuModuleLoadDataEx));
            throw new CudaException(log.Length == 0 ? message : $"{message}: {log}", result);
        }
        return new CudaModuleHandle(module, context);
    }

    /// <summary>A log buffer's text on one line (the JIT writes one message per line).</summary>
    static string LogText(byte* buffer, int capacity)
    {
        buffer[capacity - 1] = 0;
        string text = Marshal.PtrToStringUTF8((nint)buffer) ?? "";
        return string.Join("; ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }

    public static CudaFunction GetFunction(CudaModuleHandle module, string name)
    {
        byte[] utf8 = new byte[Encoding.UTF8.GetByteCount(name) + 1];
        Encoding.UTF8.GetBytes(name, utf8);
        nint function;
        CudaResult result;
        fixed (byte* p = utf8) result = CudaImports.cuModuleGetFunction(&function, module.DangerousGetHandle(), p);
        GC.KeepAlive(module);
        if (result != CudaResult.Success)
            throw new CudaException($"{CudaCheck.Message(result, nameof(CudaImports.cuModuleGetFunction))}: no entry '{name}' in the module", result);
        return new CudaFunction(function, name, module);
    }

    public static int FunctionAttribute(CudaFunction function, CudaFunctionAttribute attribute)
    {
        int value;
        CudaCheck.Ok(CudaImports.cuFuncGetAttribute(&value, attribute, function.Handle));
        return value;
    }

    /// <summary>Sets a function attribute; MaxDynamicSharedSizeBytes opts a kernel in to more than 48 KB of
    /// dynamic shared memory (up to the device's MaxSharedMemoryPerBlockOptin minus its static shared size).</summary>
    public static void SetFunctionAttribute(CudaFunction function, CudaFunctionAttribute attribute, int value) =>
        CudaCheck.Ok(CudaImports.cuFuncSetAttribute(function.Handle, attribute, value));

    /// <summary>Launches <paramref name="function"/> on <paramref name="stream"/> (null: the legacy default stream).
    /// <paramref name="overlapPrevious"/>: programmatic dependent launch (compute capability 9.0, cuLaunchKernelEx with
    /// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION): the kernel may start before the one before it in the stream
    /// has finished, so every one of its threads must execute griddepcontrol.wait before it reads that one's output
    /// (kernels/Temper.Kernels.Cuda/cuda/grid_dependency.cuh).</summary>
    public static void Launch(CudaFunction function, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block,
        uint sharedMemoryBytes, CudaStreamHandle? stream, CudaKernelArguments arguments, bool overlapPrevious = false)
    {
        int count = arguments.Count;
        void** pointers = stackalloc void*[Math.Max(count, 1)];
        fixed (byte* storage = arguments.Storage)
        {
            for (int i = 0; i < count; i++) pointers[i] = storage + arguments.Offset(i);
            if (overlapPrevious)
            {
                var attribute = new CudaLaunchAttribute { Id = CudaLaunchAttribute.ProgrammaticStreamSerialization, Value = 1 };
                var config = new CudaLaunchConfig
                {
                    GridX = grid.X, GridY = grid.Y, GridZ = grid.Z, BlockX = block.X, BlockY = block.Y, BlockZ = block.Z,
                    SharedMemoryBytes = sharedMemoryBytes, Stream = Raw(stream), Attributes = &attribute, AttributeCount = 1,
                };
                CudaCheck.Ok(CudaImports.cuLaunchKernelEx(&config, function.Handle, pointers, null));
            }
            else
                CudaCheck.Ok(CudaImports.cuLaunchKernel(function.Handle, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z,
                    sharedMemoryBytes, Raw(stream), pointers, null));
        }
        GC.KeepAlive(stream);
        GC.KeepAlive(function.Module);
    }
}

/// <summary>A kernel's arguments in declaration order, each copied by value into one buffer (the driver
/// copies them again at launch, so a CudaKernelArguments can be reused or changed between launches).</summary>
public sealed class CudaKernelArguments
{
    byte[] storage = new byte[128];
    readonly List<int> offsets = [];
    int used;

    public int Count => offsets.Count;

    internal byte[] Storage => storage;

    internal int Offset(int index) => offsets[index];

    /// <summary>Appends a value argument (int, float, a CUdeviceptr as ulong, a struct matching the kernel's).</summary>
    public unsafe CudaKernelArguments Add<T>(T value) where T : unmanaged
    {
        int offset = (used + 7) / 8 * 8; // the driver reads each argument through its own pointer

        if (offset + sizeof(T) > storage.Length) Array.Resize(ref storage, Math.Max(storage.Length * 2, offset + sizeof(T)));
        MemoryMarshal.Write(storage.AsSpan(offset), in value);
        offsets.Add(offset);
        used = offset + sizeof(T);
        return this;
    }

    /// <summary>Appends a device pointer argument.</summary>
    public CudaKernelArguments Add(CudaDeviceMemory memory) => Add(memory.Pointer);
}
