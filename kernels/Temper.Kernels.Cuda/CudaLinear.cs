// The Linear products with bf16 weights on tensor cores (cuda/linear_bf16.cu, embedded as
// Ptx/linear_bf16.ptx):
//   Bf16:              y[N,M]  = alpha x[N,K] W[M,K]^T + bias[M] (optional) + y (when accumulate)
//   Bf16InputGradient: dx[N,K] = alpha dy[N,M] W[M,K] + dx (when accumulate)
// Activations f32 (rounded to bf16 as staged), W bf16, results f32; blocks of 256 threads per 128 x 128
// tile of the result.
// The module is loaded once per device context, on first use.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaLinear(CudaDevice device) : IDisposable
{
    private const int Tile = 128, Threads = 256;
    private CudaModuleHandle? _module;
    private CudaFunction? _nt, _nn;

    /// <summary>y = alpha x W^T (+ bias) (+ y): x [n,k] f32, w [m,k] bf16, bias [m] f32 or null, y [n,m] f32.</summary>
    public void Bf16(CudaDeviceMemory x, CudaDeviceMemory w, CudaDeviceMemory? bias, CudaDeviceMemory y, int n, int k, int m, float alpha = 1f, bool accumulate = false)
    {
        if (n < 0 || k < 0 || m < 0) throw new CudaException($"CudaLinear.Bf16: sizes must be >= 0, not n {n}, k {k}, m {m}");
        Require(x, 4L * n * k, "x");
        Require(w, 2L * m * k, "w");
        Require(y, 4L * n * m, "y");
        if (bias != null) Require(bias, 4L * m, "bias");
        if ((long)n * m == 0) return;
        _nt ??= CudaDriver.GetFunction(Module(), "linear_bf16_nt");
        var args = new CudaKernelArguments().Add(x).Add(w).Add(bias?.Pointer ?? 0UL).Add(y).Add(n).Add(k).Add(m).Add(alpha).Add(accumulate ? 1 : 0);
        device.Launch(_nt, ((uint)((m + Tile - 1) / Tile), (uint)((n + Tile - 1) / Tile), 1), (Threads, 1, 1), args);
    }

    /// <summary>dx = alpha dy W (+ dx): dy [n,m] f32, w [m,k] bf16, dx [n,k] f32.</summary>
    public void Bf16InputGradient(CudaDeviceMemory dy, CudaDeviceMemory w, CudaDeviceMemory dx, int n, int k, int m, float alpha = 1f, bool accumulate = false)
    {
        if (n < 0 || k < 0 || m < 0) throw new CudaException($"CudaLinear.Bf16InputGradient: sizes must be >= 0, not n {n}, k {k}, m {m}");
        Require(dy, 4L * n * m, "dy");
        Require(w, 2L * m * k, "w");
        Require(dx, 4L * n * k, "dx");
        if ((long)n * k == 0) return;
        _nn ??= CudaDriver.GetFunction(Module(), "linear_bf16_nn");
        var args = new CudaKernelArguments().Add(dy).Add(w).Add(dx).Add(n).Add(k).Add(m).Add(alpha).Add(accumulate ? 1 : 0);
        device.Launch(_nn, ((uint)((k + Tile - 1) / Tile), (uint)((n + Tile - 1) / Tile), 1), (Threads, 1, 1), args);
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read("linear_bf16.ptx"), out _);

    private static void Require(CudaDeviceMemory memory, long bytes, string what)
    {
        if (memory.ByteLength < bytes) throw new CudaException($"CudaLinear: {what} holds {memory.ByteLength} bytes, the sizes need {bytes}");
    }

    public void Dispose() => _module?.Dispose();
}

/// <summary>The PTX compiled from cuda/*.cu and embedded in this assembly (Ptx/*.ptx).</summary>
public static class KernelPtx
{
    private const string Prefix = "Temper.Kernels.Cuda.Ptx.";

    public static IReadOnlyList<string> Names => EmbeddedPtx.NamesIn(typeof(KernelPtx).Assembly, Prefix);

    public static string Read(string ptxFileName) => EmbeddedPtx.Read(typeof(KernelPtx).Assembly, Prefix, ptxFileName);
}
