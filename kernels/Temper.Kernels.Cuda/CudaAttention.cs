// Causal GQA attention on tensor cores: the forward (cuda/attention_bf16.cu, embedded as Ptx/attention_bf16.ptx)
//   q[B,Tq,H,D], k/v[B,S,Hkv,D] (the first KvLength rows used) -> out[B,Tq,H,D], lse[B,H,Tq] (optional),
//   and the backward (cuda/attention_bf16_backward.cu) out, lse, dOut[B,Tq,H,D] -> dq[B,Tq,H,D], dk/dv[B,S,Hkv,D]
//   (overwritten; delta[B,H,Tq] scratch), all f32; mask[B,KvLength] and segments[B,KvLength] int, optional. Query i sits at position
//   QueryOffset + i and sees key j when j <= position, j < KvLength, mask[b,j] != 0 and segment[b,j] ==
//   segment[b,position]; head h reads kv head h / (H/Hkv). q, k, v and P are rounded to bf16 for the
//   tensor cores (dO and dS too in the backward), sums and softmax f32. D = 64 or 128. Blocks of 128 threads
//   per (b, h, 64 queries) (the backward's dk/dv: per (b, kv head, 64 keys)), with more than 48 KB of dynamic
//   shared memory (each function is opted in on first use).
// Kernel picks the forward: cuda/attention_bf16_mma.cu (Ptx/attention_bf16_mma.ptx: S, P and O in registers on
//   mma.sync, blocks per 128 queries): MmaTwoRowTiles with 32 query rows a warp (4 warps; D = 64 only, D = 128 runs
//   Mma; the default, TEMPER_ATTENTION_MMA unset or 2), Mma with 16 (8 warps; 1), or Wmma (cuda/attention_bf16.cu; 0).
//   On an H100 (2026-11-25, B4 H16 T2048 D64 causal) the forward took 0.198, 0.217 and 0.578 ms (docs/PERF.md).
//   MmaTwoRowTilesWide (3; D = 64 only): MmaTwoRowTiles' warps, 8 of them, 256 queries a block, so each f32 K/V tile
//   read from L2 and converted serves twice the queries (at 128 that traffic, ~0.57 GB a forward at B4 H16 T2048,
//   is about half the kernel's time at L2 rates); opt-in until a GPU has timed it.
//   Same arguments, same results up to f32 summation order.
//   Bf16 inputs (Forward's bf16Inputs: q, k, v as bf16 bits, out and lse f32) run the mma.sync kernels' _bf16in builds, which
//   read half the bytes and convert nothing (as SDPA reads bf16): MmaTwoRowTilesWide where Kernel is, else MmaTwoRowTiles
//   for D = 64 and Mma for D = 128. Their results are the bits of f32 inputs holding the same values.
// Backward picks the backward's dq and dk/dv kernels: attention_bf16_backward.cu's WMMA ones (Wmma, the default) or, for
//   D = 64, cuda/attention_bf16_backward_mma.cu's (Mma: operands and products in registers on mma.sync; opt-in by
//   TEMPER_ATTENTION_BACKWARD_MMA=1 until a GPU has checked and timed it). Same arguments, same rounding. Bf16 inputs
//   (Backward's bf16Inputs) run either set's _bf16in builds, the bits of f32 inputs holding the same values.
// Each module is loaded once per device context, on first use.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaAttention(CudaDevice device) : IDisposable
{
    private const int QueryTile = 64, Threads = 128, MmaQueryTile = 128;
    private CudaModuleHandle? _module, _mmaModule, _backwardModule, _mmaBackwardModule;
    private CudaFunction? _d64, _d128, _mma64, _mma64x2, _mma64x2Wide, _mma128, _mma64x2Bf16, _mma64x2WideBf16, _mma128Bf16, _delta;
    private readonly Dictionary<string, CudaFunction> _backwardFunctions = []; // the dq and dk/dv kernels, by name

    /// <summary>The sizes of one attention call (the names of kernels/Temper.Kernels.Ilgpu/Ops/Attention.cs).</summary>
    public readonly record struct Shape(int B, int Tq, int H, int S, int Hkv, int D, int KvLength, int QueryOffset, float Scale);

    /// <summary>Dynamic shared memory of a block (attention_bf16.cu's Layout, which checks it).</summary>
    public static int SharedBytes(int d) => 3 * 64 * (d + 8) * 2 + 4 * 16 * 68 * 4 + 4 * 16 * 72 * 2 + 7 * 64 * 4;

    /// <summary>The forward's kernel: attention_bf16.cu (WMMA) or attention_bf16_mma.cu with 16 or 32 query rows a warp.</summary>
    public enum ForwardKernel { Wmma, Mma, MmaTwoRowTiles, MmaTwoRowTilesWide }

    /// <summary>The environment variable that picks the forward: "0" (Wmma), "1" (Mma), "2" (MmaTwoRowTiles, also when unset)
    /// or "3" (MmaTwoRowTilesWide).</summary>
    public const string MmaOptInVariable = "TEMPER_ATTENTION_MMA";

    /// <summary>The forward's kernel; by default as TEMPER_ATTENTION_MMA says (MmaTwoRowTiles when unset).</summary>
    public ForwardKernel Kernel { get; init; } = Environment.GetEnvironmentVariable(MmaOptInVariable) switch
    {
        "0" => ForwardKernel.Wmma,
        "1" => ForwardKernel.Mma,
        "3" => ForwardKernel.MmaTwoRowTilesWide,
        _ => ForwardKernel.MmaTwoRowTiles,
    };

    /// <summary>The backward's dq and dk/dv kernels: attention_bf16_backward.cu (WMMA) or attention_bf16_backward_mma.cu (mma.sync, D = 64).</summary>
    public enum BackwardKernels { Wmma, Mma }

    /// <summary>The environment variable that opts the backward in to the mma.sync kernels ("1").</summary>
    public const string BackwardMmaOptInVariable = "TEMPER_ATTENTION_BACKWARD_MMA";

    /// <summary>The backward's kernels for D = 64 (D = 128 always runs Wmma); by default Mma where TEMPER_ATTENTION_BACKWARD_MMA=1.</summary>
    public BackwardKernels Backward64 { get; init; } =
        Environment.GetEnvironmentVariable(BackwardMmaOptInVariable) == "1" ? BackwardKernels.Mma : BackwardKernels.Wmma;

    /// <summary>Dynamic shared memory of an attention_bf16_backward_mma.cu block: Q, dO, K and V tiles bf16 [64][72] and six int/float rows of 64.</summary>
    public const int MmaBackwardSharedBytes = 4 * 64 * 72 * 2 + 6 * 64 * 4;

    /// <summary>Dynamic shared memory of an attention_bf16_mma.cu block (its MmaConfig, which checks it): two buffers
    /// of a K and a V tile of 64 keys (D = 64, 16 rows a warp) or 32, bf16 [keys][D + 8], the Q tile (128 rows, 256 for
    /// the wide kernel) from buffer 1 on, and two buffers of the keys' mask flags and segments.</summary>
    public static int MmaSharedBytes(int d, bool twoRowTiles, bool wide = false)
    {
        int keys = d == 64 && !twoRowTiles ? 64 : 32, kv = 2 * keys * (d + 8) * 2;
        return Math.Max(2 * kv, kv + MmaQueryRows(wide) * (d + 8) * 2) + 4 * keys * 4;
    }

    private static int MmaQueryRows(bool wide) => wide ? 2 * MmaQueryTile : MmaQueryTile;

    /// <summary>Dynamic shared memory of a backward block (attention_bf16_backward.cu's Layout, which checks it).</summary>
    public static int BackwardSharedBytes(int d) => 4 * 64 * (d + 8) * 2 + 4 * 16 * 68 * 4 + 4 * 16 * 72 * 2 + 6 * 64 * 4;

    /// <summary>out (and lse when given) for q, k, v (f32, or bf16 where bf16Inputs); mask and segments [B,KvLength] when given.</summary>
    public void Forward(CudaDeviceMemory q, CudaDeviceMemory k, CudaDeviceMemory v, CudaDeviceMemory output, CudaDeviceMemory? lse,
        CudaDeviceMemory? mask, CudaDeviceMemory? segments, Shape a, bool bf16Inputs = false)
    {
        Check(a, segments != null);
        long inputBytes = bf16Inputs ? 2 : 4;
        Require(q, inputBytes * a.B * a.Tq * a.H * a.D, "q");
        Require(k, inputBytes * a.B * a.S * a.Hkv * a.D, "k");
        Require(v, inputBytes * a.B * a.S * a.Hkv * a.D, "v");
        Require(output, 4L * a.B * a.Tq * a.H * a.D, "output");
        if (lse != null) Require(lse, 4L * a.B * a.H * a.Tq, "lse");
        if (mask != null) Require(mask, 4L * a.B * a.KvLength, "mask");
        if (segments != null) Require(segments, 4L * a.B * a.KvLength, "segments");
        var kernel = bf16Inputs && Kernel != ForwardKernel.MmaTwoRowTilesWide ? ForwardKernel.MmaTwoRowTiles : Kernel; // bf16: mma.sync builds only
        if (kernel is ForwardKernel.MmaTwoRowTiles or ForwardKernel.MmaTwoRowTilesWide && a.D != 64) kernel = ForwardKernel.Mma;
        bool wide = kernel == ForwardKernel.MmaTwoRowTilesWide;
        int tile = kernel == ForwardKernel.Wmma ? QueryTile : MmaQueryRows(wide);
        long blocks = (long)a.B * a.H * ((a.Tq + tile - 1) / tile);
        if (blocks == 0) return;
        if (blocks > int.MaxValue) throw new CudaException($"CudaAttention: {blocks} blocks (B {a.B} x H {a.H} x query tiles) exceed the grid");
        int shared = kernel == ForwardKernel.Wmma ? SharedBytes(a.D) : MmaSharedBytes(a.D, kernel != ForwardKernel.Mma, wide);
        uint threads = kernel == ForwardKernel.MmaTwoRowTiles ? 128u : kernel is ForwardKernel.Mma or ForwardKernel.MmaTwoRowTilesWide ? 256u : Threads;
        var function = (kernel, a.D, bf16Inputs) switch
        {
            (ForwardKernel.Mma, _, true) => _mma128Bf16 ??= MmaFunction("attention_bf16_mma_forward_d128_bf16in", shared),
            (ForwardKernel.MmaTwoRowTilesWide, _, true) => _mma64x2WideBf16 ??= MmaFunction("attention_bf16_mma_forward_d64_x2_q256_bf16in", shared),
            (_, _, true) => _mma64x2Bf16 ??= MmaFunction("attention_bf16_mma_forward_d64_x2_bf16in", shared),
            (ForwardKernel.Wmma, 64, _) => _d64 ??= Function("attention_bf16_forward_d64", shared),
            (ForwardKernel.Wmma, _, _) => _d128 ??= Function("attention_bf16_forward_d128", shared),
            (ForwardKernel.Mma, 64, _) => _mma64 ??= MmaFunction("attention_bf16_mma_forward_d64", shared),
            (ForwardKernel.Mma, _, _) => _mma128 ??= MmaFunction("attention_bf16_mma_forward_d128", shared),
            (ForwardKernel.MmaTwoRowTilesWide, _, _) => _mma64x2Wide ??= MmaFunction("attention_bf16_mma_forward_d64_x2_q256", shared),
            _ => _mma64x2 ??= MmaFunction("attention_bf16_mma_forward_d64_x2", shared),
        };
        var args = new CudaKernelArguments().Add(q).Add(k).Add(v).Add(output).Add(lse?.Pointer ?? 0UL).Add(mask?.Pointer ?? 0UL).Add(segments?.Pointer ?? 0UL)
            .Add(a.B).Add(a.Tq).Add(a.H).Add(a.S).Add(a.Hkv).Add(a.KvLength).Add(a.QueryOffset).Add(a.Scale).Add(shared);
        device.Launch(function, ((uint)blocks, 1, 1), (threads, 1, 1), args, shared);
    }

    /// <summary>dq, dk, dv (overwritten; key rows past KvLength get 0) for dOut, given q, k, v (f32, or bf16 where bf16Inputs: the
    /// _bf16in kernels) and the forward's out and lse with these sizes; delta [B,H,Tq] is scratch. mask and segments [B,KvLength]
    /// when given, as in the forward.</summary>
    public void Backward(CudaDeviceMemory q, CudaDeviceMemory k, CudaDeviceMemory v, CudaDeviceMemory output, CudaDeviceMemory lse,
        CudaDeviceMemory dOut, CudaDeviceMemory dq, CudaDeviceMemory dk, CudaDeviceMemory dv, CudaDeviceMemory delta,
        CudaDeviceMemory? mask, CudaDeviceMemory? segments, Shape a, bool bf16Inputs = false)
    {
        Check(a, segments != null);
        long qBytes = 4L * a.B * a.Tq * a.H * a.D, kBytes = 4L * a.B * a.S * a.Hkv * a.D, rowBytes = 4L * a.B * a.H * a.Tq;
        long inputDivisor = bf16Inputs ? 2 : 1;
        Require(q, qBytes / inputDivisor, "q");
        Require(k, kBytes / inputDivisor, "k");
        Require(v, kBytes / inputDivisor, "v");
        Require(output, qBytes, "output");
        Require(lse, rowBytes, "lse");
        Require(dOut, qBytes, "dOut");
        Require(dq, qBytes, "dq");
        Require(dk, kBytes, "dk");
        Require(dv, kBytes, "dv");
        Require(delta, rowBytes, "delta");
        if (mask != null) Require(mask, 4L * a.B * a.KvLength, "mask");
        if (segments != null) Require(segments, 4L * a.B * a.KvLength, "segments");
        long rows = (long)a.B * a.Tq * a.H, queryBlocks = (long)a.B * a.H * ((a.Tq + QueryTile - 1) / QueryTile);
        long keyBlocks = (long)a.B * a.Hkv * ((a.S + QueryTile - 1) / QueryTile);
        if (Math.Max((rows + 3) / 4, Math.Max(queryBlocks, keyBlocks)) > int.MaxValue)
            throw new CudaException($"CudaAttention: the backward's grid for {a} exceeds the grid limit");
        bool mma = a.D == 64 && Backward64 == BackwardKernels.Mma;
        int shared = mma ? MmaBackwardSharedBytes : BackwardSharedBytes(a.D);
        if (rows > 0)
        {
            _delta ??= BackwardFunction("attention_bf16_backward_delta", 0);
            device.Launch(_delta, ((uint)((rows + 3) / 4), 1, 1), (Threads, 1, 1), new CudaKernelArguments().Add(output).Add(dOut).Add(delta)
                .Add(a.B).Add(a.Tq).Add(a.H).Add(a.D), 0);
            var dqFunction = BackwardKernel(mma ? "attention_bf16_mma_backward_dq_d64" : $"attention_bf16_backward_dq_d{a.D}", bf16Inputs, shared);
            device.Launch(dqFunction, ((uint)queryBlocks, 1, 1), (Threads, 1, 1), new CudaKernelArguments().Add(q).Add(k).Add(v).Add(dOut).Add(lse).Add(delta).Add(dq)
                .Add(mask?.Pointer ?? 0UL).Add(segments?.Pointer ?? 0UL).Add(a.B).Add(a.Tq).Add(a.H).Add(a.S).Add(a.Hkv).Add(a.KvLength).Add(a.QueryOffset).Add(a.Scale).Add(shared), shared);
        }
        if (keyBlocks == 0) return;
        var dkdvFunction = BackwardKernel(mma ? "attention_bf16_mma_backward_dkdv_d64" : $"attention_bf16_backward_dkdv_d{a.D}", bf16Inputs, shared);
        device.Launch(dkdvFunction, ((uint)keyBlocks, 1, 1), (Threads, 1, 1), new CudaKernelArguments().Add(q).Add(k).Add(v).Add(dOut).Add(lse).Add(delta).Add(dk).Add(dv)
            .Add(mask?.Pointer ?? 0UL).Add(segments?.Pointer ?? 0UL).Add(a.B).Add(a.Tq).Add(a.H).Add(a.S).Add(a.Hkv).Add(a.KvLength).Add(a.QueryOffset).Add(a.Scale).Add(shared), shared);
    }

    private static void Check(Shape a, bool segments)
    {
        if (a.D != 64 && a.D != 128) throw new CudaException($"CudaAttention: head dim {a.D} is not supported (64 or 128)");
        if (a.B < 0 || a.Tq < 0 || a.H < 0 || a.S < 0 || a.Hkv < 0 || a.KvLength < 0 || a.QueryOffset < 0)
            throw new CudaException($"CudaAttention: sizes must be >= 0, not {a}");
        if (a.H > 0 && (a.Hkv == 0 || a.H % a.Hkv != 0)) throw new CudaException($"CudaAttention: {a.H} heads are not a multiple of {a.Hkv} kv heads");
        if (a.KvLength > a.S) throw new CudaException($"CudaAttention: KvLength {a.KvLength} exceeds the {a.S} rows of k and v");
        if (segments && a.Tq > 0 && a.QueryOffset + a.Tq > a.KvLength)
            throw new CudaException($"CudaAttention: with segments every query position needs a segment id, but QueryOffset {a.QueryOffset} + Tq {a.Tq} > KvLength {a.KvLength}");
    }

    // A kernel of one of the three modules (each loaded on first use), opted in to its dynamic shared memory.
    private CudaFunction Function(ref CudaModuleHandle? module, string ptx, string name, int shared)
    {
        var function = CudaDriver.GetFunction(module ??= device.LoadModule(KernelPtx.Read(ptx), out _), name);
        if (shared > 0) CudaDriver.SetFunctionAttribute(function, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, shared);
        return function;
    }

    // A backward dq or dk/dv kernel by name (of either module; "_bf16in" appended for bf16 inputs), loaded once.
    private CudaFunction BackwardKernel(string name, bool bf16Inputs, int shared)
    {
        name += bf16Inputs ? "_bf16in" : "";
        if (_backwardFunctions.TryGetValue(name, out var function)) return function;
        function = name.StartsWith("attention_bf16_mma_", StringComparison.Ordinal) ? MmaBackwardFunction(name, shared) : BackwardFunction(name, shared);
        _backwardFunctions[name] = function;
        return function;
    }

    private CudaFunction Function(string name, int shared) => Function(ref _module, "attention_bf16.ptx", name, shared);
    private CudaFunction MmaFunction(string name, int shared) => Function(ref _mmaModule, "attention_bf16_mma.ptx", name, shared);
    private CudaFunction BackwardFunction(string name, int shared) => Function(ref _backwardModule, "attention_bf16_backward.ptx", name, shared);
    private CudaFunction MmaBackwardFunction(string name, int shared) => Function(ref _mmaBackwardModule, "attention_bf16_backward_mma.ptx", name, shared);

    private static void Require(CudaDeviceMemory memory, long bytes, string what)
    {
        if (memory.ByteLength < bytes) throw new CudaException($"CudaAttention: {what} holds {memory.ByteLength} bytes, the sizes need {bytes}");
    }

    public void Dispose()
    {
        _module?.Dispose();
        _mmaModule?.Dispose();
        _backwardModule?.Dispose();
        _mmaBackwardModule?.Dispose();
    }
}
