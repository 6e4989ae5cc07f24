// The forward Linear product on Hopper tensor cores (cuda/gemm_bf16_sm90.cu, embedded as
// Ptx/gemm_bf16_sm90.ptx, PTX for sm_90a: wgmma from a cp.async ring in the 128B-swizzled layout, or with
// Tma from a ring that a producer warp fills by TMA copies through tensor maps encoded here per call):
//   y[N,M] = alpha x[N,K] W[M,K]^T + bias[M] (optional) + s L R^T (optional LoRA term, LowRankTerm) + y (when accumulate)
// x and W bf16 (x already converted, as CudaLinear does once per product), y and bias f32; K a multiple
// of 8, x and W 16-byte aligned. Blocks of 256 threads (two warpgroups) per 128 x 128 tile of y, or
// 128 x 256 when Wide; with Tma 384 threads (a producer warpgroup more), persistent: min(tiles, SMs) blocks,
// each looping over its tiles. CudaLinear runs it for its
// pipelined forward products where UseOnThisDevice says so: compute capability exactly 9.0, with the variant
// TEMPER_GEMM_SM90 names (1: 128 x 128 tiles; wide: 128 x 256; tma, tma-wide: the TMA kernels, where the
// driver encodes tensor maps; 0: none, gemm_bf16.cu) or, unset, tma-wide (wide without tensor maps): checked
// and timed on an H100 on 2026-11-25, tma-wide at 0.82x to 0.92x of cuBLAS (docs/PERF.md). The module is
// loaded on first use (on another GPU the driver refuses sm_90a PTX; the CUDA emulator runs it anywhere).
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaGemmSm90(CudaDevice device) : IDisposable
{
    /// <summary>The environment variable that opts CudaLinear in: "1" (128 x 128 tiles), "wide" (128 x 256),
    /// "tma" or "tma-wide" (the same tiles loaded by TMA).</summary>
    public const string OptInVariable = "TEMPER_GEMM_SM90";

    private const int Tile = 128, Threads = 256, TmaThreads = 384, SliceDepth = 64;
    private const CudaTensorMapSwizzle TmaSwizzle = CudaTensorMapSwizzle.Bytes128; // the layout the kernel's wgmma descriptors read
    private static int _unavailableNoted;
    private CudaModuleHandle? _module;
    private CudaFunction? _nt, _ntWide, _tmaNt, _tmaNtWide;
    private int _multiprocessors;

    // The TMA kernels are persistent: one block per SM (their shared memory allows no second), each looping over tiles.
    private int Multiprocessors => _multiprocessors > 0 ? _multiprocessors : _multiprocessors = Math.Max(1, device.MultiprocessorCount);

    /// <summary>128 x 256 tiles of y (gemm_bf16_sm90_nt_wide) instead of 128 x 128.</summary>
    public bool Wide { get; init; }

    /// <summary>Operands loaded by TMA copies (gemm_bf16_sm90_tma_nt, _tma_nt_wide) instead of cp.async; needs a
    /// driver that encodes tensor maps (CudaTensorMaps.Unavailable is null).</summary>
    public bool Tma { get; init; }

    // A stage: an x tile (128 rows) and a W tile (128 or 256 rows), 128 bytes a row. The cp.async ring has 4
    // stages; the TMA ring 6 (128 x 128) or 4 (wide) and two 8-byte mbarriers a stage. + 1024 for alignment.
    private static int Stages(bool wide, bool tma) => tma && !wide ? 6 : 4;
    private static int SharedBytes(bool wide, bool tma) => Stages(wide, tma) * ((128 + (wide ? 256 : 128)) * 128 + (tma ? 16 : 0)) + 1024;

    /// <summary>The variant for a device and the variable's value, null for none (gemm_bf16.cu): on compute capability
    /// 9.0 "1", "wide", "tma" or "tma-wide" as named (the TMA ones only where <paramref name="tensorMapsUnavailable"/>
    /// is null), unset meaning tma-wide (wide where tensor maps are unavailable); any other value, "0" say, none.</summary>
    public static string? Variant((int Major, int Minor) capability, string? optIn, string? tensorMapsUnavailable = null) =>
        capability != (9, 0) ? null
        : optIn == null ? DefaultVariant(tensorMapsUnavailable)
        : optIn is "1" or "wide" || optIn is "tma" or "tma-wide" && tensorMapsUnavailable == null ? optIn
        : null;

    // Unset: the fastest on an H100 (docs/PERF.md, 2026-11-25), or its cp.async twin where tensor maps are unavailable.
    private static string DefaultVariant(string? tensorMapsUnavailable) => tensorMapsUnavailable == null ? "tma-wide" : "wide";

    public static bool Selected((int Major, int Minor) capability, string? optIn, string? tensorMapsUnavailable = null) =>
        Variant(capability, optIn, tensorMapsUnavailable) != null;

    /// <summary>Selected for this device and environment; an opt-in to the TMA kernels that the driver cannot
    /// serve says why on stderr, once, and the product runs gemm_bf16.cu as without the opt-in.</summary>
    public static bool UseOnThisDevice(CudaDevice device)
    {
        string? optIn = Environment.GetEnvironmentVariable(OptInVariable);
        string? unavailable = optIn is "tma" or "tma-wide" ? CudaTensorMaps.Unavailable : null;
        if (unavailable != null && device.ComputeCapability == (9, 0) && Interlocked.Exchange(ref _unavailableNoted, 1) == 0)
            Console.Error.WriteLine($"{OptInVariable}={optIn} not used: {unavailable}");
        return Selected(device.ComputeCapability, optIn, unavailable);
    }

    /// <summary>The instance CudaLinear uses: Wide where the variable says "wide" or "tma-wide", Tma where "tma...";
    /// unset, tma-wide (wide where tensor maps are unavailable).</summary>
    public static CudaGemmSm90 FromEnvironment(CudaDevice device)
    {
        string optIn = Environment.GetEnvironmentVariable(OptInVariable) ?? DefaultVariant(CudaTensorMaps.Unavailable);
        return new(device) { Wide = optIn is "wide" or "tma-wide", Tma = optIn is "tma" or "tma-wide" };
    }

    /// <summary>y = alpha x W^T (+ bias) (+ y) (+ the LoRA term): x [n,k] bf16, w [m,k] bf16, bias [m] f32 or null, y [n,m] f32.</summary>
    public void Forward(CudaDeviceMemory xBf16, CudaDeviceMemory w, CudaDeviceMemory? bias, CudaDeviceMemory y, int n, int k, int m, float alpha = 1f, bool accumulate = false,
        LowRankTerm? lora = null)
    {
        if (n < 0 || k < 0 || m < 0) throw new CudaException($"CudaGemmSm90.Forward: sizes must be >= 0, not n {n}, k {k}, m {m}");
        if (k % 8 != 0 || xBf16.Pointer % 16 != 0 || w.Pointer % 16 != 0)
            throw new CudaException($"CudaGemmSm90.Forward: k must be a multiple of 8 (not {k}) and x, w 16-byte aligned");
        CudaLinear.Require(xBf16, 2L * n * k, "x");
        CudaLinear.Require(w, 2L * m * k, "w");
        CudaLinear.Require(y, 4L * n * m, "y");
        if (bias != null) CudaLinear.Require(bias, 4L * m, "bias");
        if (lora != null) CudaLinear.RequireLowRank(lora, n, m, "CudaGemmSm90.Forward");
        if ((long)n * m == 0) return;
        bool tma = Tma && k > 0; // K = 0 loads nothing (and makes no tensor map): the cp.async kernel writes the epilogue
        int columns = Wide ? 2 * Tile : Tile;
        var f = Function(tma);
        var args = new CudaKernelArguments();
        if (tma)
            args.Add(CudaTensorMaps.Encode2D(xBf16.Pointer, CudaTensorMapDataType.BFloat16, n, k, 2L * k, Tile, SliceDepth, TmaSwizzle))
                .Add(CudaTensorMaps.Encode2D(w.Pointer, CudaTensorMapDataType.BFloat16, m, k, 2L * k, columns, SliceDepth, TmaSwizzle));
        else
            args.Add(xBf16).Add(w);
        CudaLinear.AddLowRank(args.Add(bias?.Pointer ?? 0UL).Add(y).Add(n).Add(k).Add(m).Add(alpha).Add(accumulate ? 1 : 0), lora);
        long tiles = (long)((m + columns - 1) / columns) * ((n + Tile - 1) / Tile);
        var grid = tma ? ((uint)Math.Min(tiles, Multiprocessors), 1u, 1u) : ((uint)((m + columns - 1) / columns), (uint)((n + Tile - 1) / Tile), 1u);
        device.Launch(f, grid, ((uint)(tma ? TmaThreads : Threads), 1, 1), args, SharedBytes(Wide, tma));
    }

    private CudaFunction Function(bool tma)
    {
        ref var f = ref tma ? ref Wide ? ref _tmaNtWide : ref _tmaNt : ref Wide ? ref _ntWide : ref _nt;
        if (f == null)
        {
            _module ??= device.LoadModule(KernelPtx.Read("gemm_bf16_sm90.ptx"), out _);
            f = CudaDriver.GetFunction(_module, "gemm_bf16_sm90_" + (tma ? "tma_" : "") + (Wide ? "nt_wide" : "nt"));
            CudaDriver.SetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, SharedBytes(Wide, tma));
        }
        return f;
    }

    public void Dispose() => _module?.Dispose();
}
