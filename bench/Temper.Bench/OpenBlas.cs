// OpenBLAS, the CPU GEMM peer, bound with [LibraryImport] (Debian's libopenblas0; see bench/setup.sh).
using System.Runtime.InteropServices;

namespace Temper.Bench;

public static unsafe partial class OpenBlas
{
    private const string Lib = "libopenblas.so.0";
    public const int RowMajor = 101, NoTrans = 111, Trans = 112;

    [LibraryImport(Lib, EntryPoint = "cblas_sgemm")]
    internal static partial void Sgemm(int order, int transA, int transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc);

    [LibraryImport(Lib, EntryPoint = "openblas_get_corename")]
    private static partial nint CoreName();

    [LibraryImport(Lib, EntryPoint = "openblas_get_config")]
    private static partial nint Config();

    [LibraryImport(Lib, EntryPoint = "openblas_get_num_threads")]
    internal static partial int Threads();

    [LibraryImport(Lib, EntryPoint = "openblas_set_num_threads")]
    internal static partial void SetThreads(int threads);

    /// <summary>"core Haswell, threads 2, OpenBLAS 0.3.21 ..." or why the library is missing.</summary>
    public static string Describe()
    {
        try
        {
            return $"OpenBLAS core {Marshal.PtrToStringAnsi(CoreName())}, threads {Threads()}, config '{Marshal.PtrToStringAnsi(Config())}'";
        }
        catch (DllNotFoundException)
        {
            return "libopenblas.so.0 not found (run bench/setup.sh)";
        }
    }
}

public static class CpuInfo
{
    public static string ModelName()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return "unknown";
    }
}
