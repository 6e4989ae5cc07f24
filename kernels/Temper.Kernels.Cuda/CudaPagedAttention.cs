// Paged attention over the KV cache's block tables (cuda/paged_attention.cu, embedded as Ptx/paged_attention.ptx),
// f32 arithmetic over f32 or bf16 caches (bf16Cache: the bits, widened as read): q[Rows,H,D] token rows of many sequences; k/v caches [Blocks, BlockSize, Hkv, D];
// tables[Sequences, MaxBlocks], rowSequence[Rows], rowKvLength[Rows] int -> out[Rows,H,D]. Row n of sequence
// rowSequence[n] sees keys 0..rowKvLength[n]-1; key p lives at slot p % BlockSize of block
// tables[s, p / BlockSize]; head h reads kv head h / (H/Hkv); a row that sees no key gets zeros (the
// semantics of IBackend.PagedAttention). D = 64 or 128; the caches 16-byte aligned. The tables and lengths are used as given: callers
// check them on the host first (ServingShapes.PagedAttention). Blocks of 128 threads per (row, kv head,
// slice of up to 8 query heads, key split); with more than one split (FlashDecoding: few rows, long
// sequences) the splits' partials go to a workspace of WorkspaceBytes and the last split block of each unit to
// finish merges them (per-unit counters that this instance keeps zeroed: allocated by the first call with splits,
// grown outside a stream capture; a CUDA-graph caller makes one uncaptured call first, as CudaDecodeGraph does).
// The module is loaded once per device context, on first use.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

/// <summary>Paged attention; <paramref name="overlapPrevious"/>: every launch may overlap the kernel before it (programmatic
/// dependent launch, compute capability 9.0: the compute_90 build Ptx/paged_attention.sm90.ptx, whose blocks wait for that kernel first).</summary>
public sealed class CudaPagedAttention(CudaDevice device, bool overlapPrevious = false) : IDisposable
{
    /// <summary>The most key splits of one row.</summary>
    public const int MaxSplits = 32;

    private const int Threads = 128, HeadsPerBlock = 8, KeysPerSplit = 128;
    private CudaModuleHandle? _module;
    private readonly Dictionary<string, CudaFunction> _functions = [];
    private CudaDeviceMemory? _counters; // a zero per unit (the kernel's last split block sets its unit's back)
    private int _multiprocessors;

    /// <summary>Whether launches may overlap the kernel before them: the constructor's choice, which CudaDecodeGraph.Profile turns
    /// off while it captures. Never turned on after construction.</summary>
    internal bool OverlapPrevious { get; set; } = overlapPrevious;

    private readonly string _ptx = overlapPrevious ? "paged_attention.sm90.ptx" : "paged_attention.ptx";

    /// <summary>The sizes of one call; MaxKvLength (the longest row's key count) only guides the choice of splits.</summary>
    public readonly record struct Shape(int Rows, int H, int Hkv, int D, int Blocks, int BlockSize, int Sequences, int MaxBlocks, int MaxKvLength, float Scale);

    /// <summary>The key splits Forward uses when given none: enough blocks for two per multiprocessor, at least 128 keys a split.</summary>
    public int Splits(Shape a)
    {
        long units = Units(a);
        if (units == 0 || a.MaxKvLength <= KeysPerSplit) return 1;
        if (_multiprocessors == 0) _multiprocessors = device.MultiprocessorCount;
        long byLength = (a.MaxKvLength + KeysPerSplit - 1) / KeysPerSplit, byDevice = (2L * _multiprocessors + units - 1) / units;
        return (int)Math.Clamp(Math.Min(byLength, byDevice), 1, MaxSplits);
    }

    /// <summary>Bytes of the workspace a call with <paramref name="splits"/> splits needs (none for one split).</summary>
    public static long WorkspaceBytes(Shape a, int splits) => splits > 1 ? 4L * splits * a.Rows * a.H * (a.D + 2) : 0;

    /// <summary>out for q through the block tables; splits 0 chooses (Splits), else 1..MaxSplits; workspace of
    /// WorkspaceBytes when there is more than one split. <paramref name="bf16Cache"/>: the caches hold bf16 bits (2 bytes a value).</summary>
    public void Forward(CudaDeviceMemory q, CudaDeviceMemory kCache, CudaDeviceMemory vCache, CudaDeviceMemory output, CudaDeviceMemory tables,
        CudaDeviceMemory rowSequence, CudaDeviceMemory rowKvLength, CudaDeviceMemory? workspace, Shape a, int splits = 0, bool bf16Cache = false)
    {
        Check(a, splits);
        if (splits == 0) splits = Splits(a);
        Require(q, 4L * a.Rows * a.H * a.D, "q");
        long cacheBytes = (bf16Cache ? 2L : 4L) * a.Blocks * a.BlockSize * a.Hkv * a.D;
        Require(kCache, cacheBytes, "the k cache");
        Require(vCache, cacheBytes, "the v cache");
        if (!IsAligned(kCache) || !IsAligned(vCache))
            throw new CudaException($"CudaPagedAttention: the {(IsAligned(kCache) ? "v" : "k")} cache at 0x{(IsAligned(kCache) ? vCache : kCache).Pointer:x} is not 16-byte aligned (the kernel's loads are)");
        Require(output, 4L * a.Rows * a.H * a.D, "output");
        Require(tables, 4L * a.Sequences * a.MaxBlocks, "tables");
        Require(rowSequence, 4L * a.Rows, "rowSequence");
        Require(rowKvLength, 4L * a.Rows, "rowKvLength");
        long units = Units(a);
        if (units == 0) return;
        if (units > int.MaxValue) throw new CudaException($"CudaPagedAttention: {units} blocks (rows {a.Rows} x kv heads {a.Hkv} x head slices) exceed the grid");
        if (splits > 1)
        {
            if (workspace == null) throw new CudaException($"CudaPagedAttention: {splits} key splits need a workspace of {WorkspaceBytes(a, splits)} bytes");
            Require(workspace, WorkspaceBytes(a, splits), "the workspace");
        }
        var function = Function($"paged_attention_{(bf16Cache ? "bf16" : "f32")}_d{a.D}");
        ulong counters = splits > 1 ? Counters(units).Pointer : 0UL;
        var args = new CudaKernelArguments().Add(q).Add(kCache).Add(vCache).Add(output).Add(splits > 1 ? workspace!.Pointer : 0UL).Add(counters)
            .Add(tables).Add(rowSequence).Add(rowKvLength).Add(a.Rows).Add(a.H).Add(a.Hkv).Add(a.BlockSize).Add(a.MaxBlocks).Add(splits).Add(a.Scale);
        device.Launch(function, ((uint)units, (uint)splits, 1), (Threads, 1, 1), args, overlapPrevious: OverlapPrevious);
    }

    // At least `units` zeroed counters: a new buffer (at least 1024) is zeroed when CudaScratch grows it.
    private CudaDeviceMemory Counters(long units)
    {
        var held = _counters;
        var counters = CudaScratch.AtLeast<uint>(device, ref _counters, units, 1024);
        if (!ReferenceEquals(counters, held)) CudaDriver.SetBytesAsync(counters.Pointer, 0, counters.ByteLength, device.Stream);
        return counters;
    }

    /// <summary>Whether a cache's address suits the kernel's 16-byte loads.</summary>
    public static bool IsAligned(CudaDeviceMemory cache) => cache.Pointer % 16 == 0;

    private static long Units(Shape a) => a.Hkv == 0 ? 0 : (long)a.Rows * a.Hkv * ((a.H / a.Hkv + HeadsPerBlock - 1) / HeadsPerBlock);

    private static void Check(Shape a, int splits)
    {
        if (a.D != 64 && a.D != 128) throw new CudaException($"CudaPagedAttention: head dim {a.D} is not supported (64 or 128)");
        if (a.Rows < 0 || a.H < 0 || a.Hkv < 0 || a.Blocks < 0 || a.Sequences < 0 || a.MaxKvLength < 0)
            throw new CudaException($"CudaPagedAttention: sizes must be >= 0, not {a}");
        if (a.BlockSize <= 0 || a.MaxBlocks <= 0) throw new CudaException($"CudaPagedAttention: block size {a.BlockSize} and blocks per sequence {a.MaxBlocks} must be > 0");
        if (a.H > 0 && (a.Hkv == 0 || a.H % a.Hkv != 0)) throw new CudaException($"CudaPagedAttention: {a.H} heads are not a multiple of {a.Hkv} kv heads");
        if (splits < 0 || splits > MaxSplits) throw new CudaException($"CudaPagedAttention: {splits} key splits (0 to choose, or 1 to {MaxSplits})");
        if ((long)a.Rows * a.H * a.D > int.MaxValue) throw new CudaException($"CudaPagedAttention: {a.Rows} rows x {a.H} heads x {a.D} exceed the kernel's int sizes");
    }

    private CudaFunction Function(string name)
    {
        if (!_functions.TryGetValue(name, out var function)) _functions[name] = function = CudaDriver.GetFunction(Module(), name);
        return function;
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read(_ptx), out _);

    private static void Require(CudaDeviceMemory memory, long bytes, string what)
    {
        if (memory.ByteLength < bytes) throw new CudaException($"CudaPagedAttention: {what} holds {memory.ByteLength} bytes, the sizes need {bytes}");
    }

    public void Dispose()
    {
        _counters?.Dispose();
        _module?.Dispose();
    }
}
