// The forward Linear product on Hopper tensor cores (cuda/gemm_bf16_sm90.cu, embedded as
// Ptx/gemm_bf16_sm90.ptx, PTX for sm_90a: wgmma from a cp.async ring in the 128B-swizzled layout):
//   y[N,M] = alpha x[N,K] W[M,K]^T + bias[M] (optional) + y (when accumulate)
// x and W bf16 (x already converted, as CudaLinear does once per product), y and bias f32; K a multiple
// of 8, x and W 16-byte aligned. Blocks of 256 threads (two warpgroups) per 128 x 128 tile of y, or
// 128 x 256 when Wide. CudaLinear runs it for its pipelined forward products only where UseOnThisDevice
// says so: compute capability exactly 9.0 and TEMPER_GEMM_SM90=1 (or =wide: the 128 x 256 tiles), opt-in
// until an H100 has checked it. The module is
// loaded on first use (on another GPU the driver refuses sm_90a PTX; the CUDA emulator runs it anywhere).
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaGemmSm90(CudaDevice device) : IDisposable
{
    /// <summary>The environment variable that opts CudaLinear in: "1" (128 x 128 tiles) or "wide" (128 x 256).</summary>
    public const string OptInVariable = "TEMPER_GEMM_SM90";

    private const int Tile = 128, Threads = 256;
    private CudaModuleHandle? _module;
    private CudaFunction? _nt, _ntWide;

    /// <summary>128 x 256 tiles of y (gemm_bf16_sm90_nt_wide) instead of 128 x 128.</summary>
    public bool Wide { get; init; }

    // 4 stages of an x tile (128 rows) and a W tile (128 or 256 rows), 128 bytes a row, + 1024 for alignment.
    private static int SharedBytes(bool wide) => 4 * (128 + (wide ? 256 : 128)) * 128 + 1024;

    /// <summary>True for compute capability 9.0 with the opt-in variable set to "1" or "wide".</summary>
    public static bool Selected((int Major, int Minor) capability, string? optIn) => capability == (9, 0) && optIn is "1" or "wide";

    public static bool UseOnThisDevice(CudaDevice device) => Selected(device.ComputeCapability, Environment.GetEnvironmentVariable(OptInVariable));

    /// <summary>The instance CudaLinear uses: Wide where the opt-in variable says "wide".</summary>
    public static CudaGemmSm90 FromEnvironment(CudaDevice device) => new(device) { Wide = Environment.GetEnvironmentVariable(OptInVariable) == "wide" };

    /// <summary>y = alpha x W^T (+ bias) (+ y): x [n,k] bf16, w [m,k] bf16, bias [m] f32 or null, y [n,m] f32.</summary>
    public void Forward(CudaDeviceMemory xBf16, CudaDeviceMemory w, CudaDeviceMemory? bias, CudaDeviceMemory y, int n, int k, int m, float alpha = 1f, bool accumulate = false)
    {
        if (n < 0 || k < 0 || m < 0) throw new CudaException($"CudaGemmSm90.Forward: sizes must be >= 0, not n {n}, k {k}, m {m}");
        if (k % 8 != 0 || xBf16.Pointer % 16 != 0 || w.Pointer % 16 != 0)
            throw new CudaException($"CudaGemmSm90.Forward: k must be a multiple of 8 (not {k}) and x, w 16-byte aligned");
        CudaLinear.Require(xBf16, 2L * n * k, "x");
        CudaLinear.Require(w, 2L * m * k, "w");
        CudaLinear.Require(y, 4L * n * m, "y");
        if (bias != null) CudaLinear.Require(bias, 4L * m, "bias");
        if ((long)n * m == 0) return;
        ref var f = ref Wide ? ref _ntWide : ref _nt;
        if (f == null)
        {
            _module ??= device.LoadModule(KernelPtx.Read("gemm_bf16_sm90.ptx"), out _);
            f = CudaDriver.GetFunction(_module, Wide ? "gemm_bf16_sm90_nt_wide" : "gemm_bf16_sm90_nt");
            CudaDriver.SetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, SharedBytes(Wide));
        }
        int columns = Wide ? 2 * Tile : Tile;
        var args = new CudaKernelArguments().Add(xBf16).Add(w).Add(bias?.Pointer ?? 0UL).Add(y).Add(n).Add(k).Add(m).Add(alpha).Add(accumulate ? 1 : 0);
        device.Launch(f, ((uint)((m + columns - 1) / columns), (uint)((n + Tile - 1) / Tile), 1), (Threads, 1, 1), args, SharedBytes(Wide));
    }

    public void Dispose() => _module?.Dispose();
}
