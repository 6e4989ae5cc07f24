// The decode step's products on the GPU (cuda/gemv_bf16.cu, embedded as Ptx/gemv_bf16.ptx): 1 to 8 activation
// rows against a bf16 weight, memory-bound (the weights are read once, at close to the device's bandwidth):
//   Forward: y[rows,n] = [residual +] [bias +] xn W^T, W [n,k] bf16; optionally each row's argmax into a slot
//   SwiGlu:  y[rows,n] = silu(xn Wg^T + bg) * (xn Wu^T + bu), Wg and Wu [n,k] bf16
//   QkvRope: one row's qkv = xn Wqkv^T + b with the decode step's RoPE and cache append in the epilogue (q rotated into
//            q [H,D]; k rotated and v into the caches [R, T, Hkv, D] at row cacheRow[0], slot position[0])
// with x [rows,k], y, residual [rows,n], bias [n], normWeight [k] f32, and xn = x, or RMSNorm(x) with
// normWeight and eps (folded in: no separate norm kernel). residual may be y itself (in-place residual add);
// x must not overlap y. The argmax slots (rows ulongs, zeroed by the caller) end up holding ArgmaxPack(max,
// index of the max) per row: the smallest index among equal maxima; NaN logits never win.
// Constructing one loads the module and looks up every kernel, so that the launches themselves only launch:
// no allocation, copy or synchronisation, and a fixed argument list per kernel, as a CUDA graph capture needs.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaGemv : IDisposable
{
    /// <summary>The most activation rows one launch takes.</summary>
    public const int MaxRows = 8;

    private const int Threads = 128, Warps = Threads / 32;
    private readonly CudaDevice _device;
    private readonly CudaModuleHandle _module;
    private readonly CudaFunction[] _forward, _swiGlu; // by rows - 1
    private readonly CudaFunction _forwardPersistent, _swiGluPersistent, _qkvRope; // one row

    /// <summary>Loads the kernels; <paramref name="overlapPrevious"/>: every launch may overlap the kernel before it
    /// (programmatic dependent launch, compute capability 9.0: the compute_90 build Ptx/gemv_bf16.sm90.ptx, whose warps
    /// start their first two rounds of weight copies before they wait for that kernel).</summary>
    public CudaGemv(CudaDevice device, bool overlapPrevious = false)
    {
        _device = device;
        OverlapPrevious = overlapPrevious;
        _module = device.LoadModule(KernelPtx.Read(overlapPrevious ? "gemv_bf16.sm90.ptx" : "gemv_bf16.ptx"), out _);
        _forward = [.. Enumerable.Range(1, MaxRows).Select(m => CudaDriver.GetFunction(_module, $"gemv_bf16_m{m}"))];
        _swiGlu = [.. Enumerable.Range(1, MaxRows).Select(m => CudaDriver.GetFunction(_module, $"gemv_swiglu_bf16_m{m}"))];
        _forwardPersistent = CudaDriver.GetFunction(_module, "gemv_bf16_p_m1");
        _swiGluPersistent = CudaDriver.GetFunction(_module, "gemv_swiglu_bf16_p_m1");
        _qkvRope = CudaDriver.GetFunction(_module, "gemv_qkv_rope_bf16_m1");
    }

    /// <summary>Whether launches may overlap the kernel before them: the constructor's choice, which CudaDecodeGraph.Profile turns
    /// off while it captures (its events between the parts time each alone). Never turned on after construction.</summary>
    internal bool OverlapPrevious { get; set; }

    /// <summary>The environment variable that caps the grid ("1": Persistent), until a GPU has timed it.</summary>
    public const string PersistentVariable = "TEMPER_GEMV_PERSISTENT";

    /// <summary>Blocks an SM takes at once when Persistent (each holds 32 KB of static shared memory).</summary>
    public const int PersistentBlocksPerSm = 4;

    /// <summary>False (the default unless TEMPER_GEMV_PERSISTENT=1): a warp per group of outputs, as many blocks as that
    /// takes. True, for one row (batch-1 decoding): the persistent kernels on at most PersistentBlocksPerSm blocks an SM, each
    /// warp looping over groups with its weight copies running on from one group into the next (no block launches after
    /// the first wave, no tail of short blocks). Same sums in the same order either way.</summary>
    public bool Persistent { get; init; } = Environment.GetEnvironmentVariable(PersistentVariable) == "1";

    /// <summary>Outputs one warp computes (gemv_bf16.cu's R): more as rows grow, so that each x value loaded
    /// serves several weight rows (SwiGLU's two weights count twice).</summary>
    private static int OutputsPerWarp(int rows, bool swiGlu) => rows switch
    {
        <= 2 => 1,
        <= 4 => swiGlu ? 1 : 2,
        _ => swiGlu ? 2 : 4,
    };

    /// <summary>y[rows,n] = [residual +] [bias +] xn W^T ; xn = x, or RMSNorm(x) with normWeight/eps; argmax slots optional.</summary>
    public void Forward(CudaDeviceMemory w, CudaDeviceMemory x, CudaDeviceMemory y, int rows, int n, int k,
        CudaDeviceMemory? normWeight = null, float eps = 0f, CudaDeviceMemory? bias = null, CudaDeviceMemory? residual = null, CudaDeviceMemory? argmax = null)
    {
        const string op = "CudaGemv.Forward";
        Check(op, w, "w", x, y, rows, n, k, normWeight);
        if (bias != null) Require(op, bias, 4L * n, "bias", 4);
        if (residual != null) Require(op, residual, 4L * rows * n, "residual", 4);
        if (argmax != null) Require(op, argmax, 8L * rows, "argmax", 8);
        var args = new CudaKernelArguments().Add(w).Add(x).Add(normWeight?.Pointer ?? 0UL).Add(eps).Add(bias?.Pointer ?? 0UL)
            .Add(residual?.Pointer ?? 0UL).Add(y).Add(argmax?.Pointer ?? 0UL).Add(n).Add(k);
        bool persistent = Persistent && rows == 1;
        _device.Launch(persistent ? _forwardPersistent : _forward[rows - 1], ((uint)Grid(n, OutputsPerWarp(rows, false), persistent), 1, 1), (Threads, 1, 1), args, overlapPrevious: OverlapPrevious);
    }

    /// <summary>y[rows,n] = silu(xn Wg^T + bg) * (xn Wu^T + bu)</summary>
    public void SwiGlu(CudaDeviceMemory wGate, CudaDeviceMemory wUp, CudaDeviceMemory x, CudaDeviceMemory y, int rows, int n, int k,
        CudaDeviceMemory? normWeight = null, float eps = 0f, CudaDeviceMemory? gateBias = null, CudaDeviceMemory? upBias = null)
    {
        const string op = "CudaGemv.SwiGlu";
        Check(op, wGate, "wGate", x, y, rows, n, k, normWeight);
        Require(op, wUp, 2L * n * k, "wUp", 16);
        if (gateBias != null) Require(op, gateBias, 4L * n, "gateBias", 4);
        if (upBias != null) Require(op, upBias, 4L * n, "upBias", 4);
        var args = new CudaKernelArguments().Add(wGate).Add(wUp).Add(x).Add(normWeight?.Pointer ?? 0UL).Add(eps)
            .Add(gateBias?.Pointer ?? 0UL).Add(upBias?.Pointer ?? 0UL).Add(y).Add(n).Add(k);
        bool persistent = Persistent && rows == 1;
        _device.Launch(persistent ? _swiGluPersistent : _swiGlu[rows - 1], ((uint)Grid(n, OutputsPerWarp(rows, true), persistent), 1, 1), (Threads, 1, 1), args, overlapPrevious: OverlapPrevious);
    }

    /// <summary>One activation row's q, k, v through Wqkv [(H + 2 Hkv) D, k] (+ bias), q rotated by RoPE into q [H, D], k rotated and
    /// v as they are into kCache / vCache [rows, capacity, Hkv, D] at row cacheRow[0], slot position[0]; cos and sin [capacity, D/2]
    /// (decode_step.cu's decode_rope_append, without head norms). A warp per pair of rows e, e + D/2 of a head.</summary>
    public void QkvRope(CudaDeviceMemory w, CudaDeviceMemory x, CudaDeviceMemory? normWeight, float eps, CudaDeviceMemory? bias,
        CudaDeviceMemory position, CudaDeviceMemory cacheRow, CudaDeviceMemory cos, CudaDeviceMemory sin, CudaDeviceMemory q,
        CudaDeviceMemory kCache, CudaDeviceMemory vCache, int heads, int kvHeads, int headDim, int capacity, int k)
    {
        const string op = "CudaGemv.QkvRope";
        int n = (heads + 2 * kvHeads) * headDim, half = headDim / 2;
        if (heads < 1 || kvHeads < 1 || headDim < 2 || headDim % 2 != 0 || capacity < 1)
            throw new CudaException($"{op}: heads {heads}, kv heads {kvHeads}, head dim {headDim} (even) and capacity {capacity} must be >= 1");
        Check(op, w, "w", x, q, 1, heads * headDim, k, normWeight);
        Require(op, w, 2L * n * k, "w", 16);
        if (bias != null) Require(op, bias, 4L * n, "bias", 4);
        Require(op, position, 4, "position", 4);
        Require(op, cacheRow, 4, "cacheRow", 4);
        Require(op, cos, 4L * capacity * half, "cos", 4);
        Require(op, sin, 4L * capacity * half, "sin", 4);
        Require(op, kCache, 4L * capacity * kvHeads * headDim, "kCache", 4);
        Require(op, vCache, 4L * capacity * kvHeads * headDim, "vCache", 4);
        var args = new CudaKernelArguments().Add(w).Add(x).Add(normWeight?.Pointer ?? 0UL).Add(eps).Add(bias?.Pointer ?? 0UL)
            .Add(position).Add(cacheRow).Add(cos).Add(sin).Add(q).Add(kCache).Add(vCache).Add(heads).Add(kvHeads).Add(half).Add(capacity).Add(n).Add(k);
        _device.Launch(_qkvRope, ((uint)Blocks(n / 2, 1), 1, 1), (Threads, 1, 1), args, overlapPrevious: OverlapPrevious);
    }

    // One group of outputs per warp; Persistent: no more than PersistentBlocksPerSm blocks an SM.
    private static long Blocks(int n, int outputsPerWarp) => ((long)n + outputsPerWarp * Warps - 1) / (outputsPerWarp * Warps);

    private long Grid(int n, int outputsPerWarp, bool persistent) =>
        persistent ? Math.Min(Blocks(n, outputsPerWarp), (long)Math.Max(1, _device.MultiprocessorCount) * PersistentBlocksPerSm) : Blocks(n, outputsPerWarp);

    private static void Check(string op, CudaDeviceMemory w, string wName, CudaDeviceMemory x, CudaDeviceMemory y, int rows, int n, int k, CudaDeviceMemory? normWeight)
    {
        if (rows < 1 || rows > MaxRows) throw new CudaException($"{op}: rows must be 1 to {MaxRows}, not {rows}");
        if (n < 1) throw new CudaException($"{op}: n must be >= 1, not {n}");
        if (k < 8 || k % 8 != 0) throw new CudaException($"{op}: k must be a positive multiple of 8 (16-byte weight loads), not {k}");
        Require(op, w, 2L * n * k, wName, 16);
        Require(op, x, 4L * rows * k, "x", 16);
        Require(op, y, 4L * rows * n, "y", 4);
        if (normWeight != null) Require(op, normWeight, 4L * k, "normWeight", 16);
        if (x.Pointer < y.Pointer + 4UL * (ulong)rows * (ulong)n && y.Pointer < x.Pointer + 4UL * (ulong)rows * (ulong)k)
            throw new CudaException($"{op}: x and y overlap (every warp reads all of x while others write y)");
    }

    private static void Require(string op, CudaDeviceMemory memory, long bytes, string what, int alignment)
    {
        if (memory.ByteLength < bytes) throw new CudaException($"{op}: {what} holds {memory.ByteLength} bytes, the sizes need {bytes}");
        if (memory.Pointer % (ulong)alignment != 0) throw new CudaException($"{op}: {what} must be {alignment}-byte aligned, not at 0x{memory.Pointer:x}");
    }

    /// <summary>The argmax slot of (value, index): argmax_slot.cuh's encoding; a larger slot is a larger value
    /// or, for equal values, a smaller index; NaN sorts below every number, -0 just below +0.</summary>
    public static ulong ArgmaxPack(float value, int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint key = float.IsNaN(value) ? 0u : (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
        return (ulong)key << 32 | (0xFFFFFFFFu - (uint)index);
    }

    /// <summary>The index an argmax slot holds; -1 for a slot nothing was written to (still 0).</summary>
    public static int ArgmaxIndex(ulong slot) => (int)(0xFFFFFFFFu - (uint)slot);

    public void Dispose() => _module.Dispose();
}
