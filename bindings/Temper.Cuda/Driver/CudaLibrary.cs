// Finds the CUDA driver library (libcuda.so.1 on Linux, nvcuda.dll on Windows) for CudaImports'
// placeholder name "cuda" through a NativeLibrary import resolver, so a machine without the NVIDIA
// driver gets one CudaException line ("no CUDA driver: ...") instead of a DllNotFoundException trace.
using System.Reflection;
using System.Runtime.InteropServices;

namespace Temper.Cuda.Driver;

public static class CudaLibrary
{
    /// <summary>The environment variable that names another driver library to load instead: the CUDA
    /// emulator (kernels/Temper.Kernels.Cuda/emu), which runs the kernels of cuda/*.cu on the CPU.</summary>
    public const string OverrideVariable = "TEMPER_CUDA_DRIVER";

    /// <summary>The file names tried, in order: TEMPER_CUDA_DRIVER's alone when set, else this operating
    /// system's driver library.</summary>
    public static IReadOnlyList<string> CandidateNames { get; } =
        Environment.GetEnvironmentVariable(OverrideVariable) is { Length: > 0 } path ? [path]
        : OperatingSystem.IsWindows() ? ["nvcuda.dll"]
        : ["libcuda.so.1", "libcuda.so"];

    static readonly Lazy<(nint Handle, string? Error)> Loaded = new(() => TryLoad(CandidateNames));

    static CudaLibrary() =>
        NativeLibrary.SetDllImportResolver(typeof(CudaLibrary).Assembly, Resolve);

    /// <summary>Registers the import resolver (the static constructor does it); call before any import.</summary>
    internal static void EnsureResolver() { }

    /// <summary>True when the driver library loads on this machine (says nothing about devices).</summary>
    public static bool IsAvailable => Loaded.Value.Handle != 0;

    /// <summary>Why the driver library is missing; null when it loaded.</summary>
    public static string? LoadError => Loaded.Value.Error;

    /// <summary>True when the loaded driver library exports <paramref name="entryPoint"/> (false when none loaded):
    /// newer calls such as cuTensorMapEncodeTiled (CUDA 12.0) are missing from older drivers.</summary>
    public static bool Exports(string entryPoint) => IsAvailable && NativeLibrary.TryGetExport(Loaded.Value.Handle, entryPoint, out _);

    /// <summary>Throws the one-line CudaException when the driver library cannot be loaded.</summary>
    public static void EnsureLoaded()
    {
        if (!IsAvailable) throw new CudaException(Loaded.Value.Error!);
    }

    static nint Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (name != CudaImports.Library) return 0;
        EnsureLoaded(); // a missing driver surfaces as CudaException at the first call, never DllNotFoundException
        return Loaded.Value.Handle;
    }

    /// <summary>Loads the first of <paramref name="names"/> that exists; otherwise returns the message.</summary>
    internal static (nint Handle, string? Error) TryLoad(IReadOnlyList<string> names)
    {
        foreach (var name in names)
            if (NativeLibrary.TryLoad(name, out var handle)) return (handle, null);
        return (0, MissingLibraryMessage(names));
    }

    internal static string MissingLibraryMessage(IReadOnlyList<string> names) =>
        $"no CUDA driver: could not load {string.Join(" or ", names)} (install the NVIDIA driver, or use a CPU backend)";
}
