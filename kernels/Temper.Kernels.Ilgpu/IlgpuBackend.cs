// The ILGPU backend: device tensors on one ILGPU accelerator (CUDA, OpenCL, or ILGPU's CPU
// accelerator, which runs the same kernels on the host's threads for CI). Every op checks shapes and
// dtypes like the CPU backend, refuses any tensor that is not this backend's device memory (so no op
// can quietly fall back to the host), and launches its kernels from Ops/ (one file per op) on the
// accelerator's default stream without synchronising. f32 compute with f32 accumulation; Linear,
// LoRA, Embedding and the LM head read f32 or bf16 (ushort) weights. The only host<->device traffic
// is FromHost/ToHost, small per-call arguments (ids, positions, masks, labels) through the arena, the
// RoPE cos/sin tables (built once per frequency set) and SumOfSquares' partial sums; all are counted.
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using Temper.Core;
using Temper.Kernels.Ilgpu.Ops;

namespace Temper.Kernels.Ilgpu;

public sealed partial class IlgpuBackend : IBackend
{
    private readonly Context? _ownedContext;
    private readonly Accelerator _acc;
    private readonly bool _ownsAccelerator;
    private readonly DeviceContext _dc;

    /// <summary>The device context (kernels, arena, PTX route), for the tests.</summary>
    internal DeviceContext DeviceContext => _dc;
    private readonly RopeTables _rope;
    private readonly DevicePool _pool;
    private long _uploaded, _downloaded, _reductionBytes;

    /// <summary>
    /// A backend over an accelerator the caller owns (and disposes after this backend). Its context
    /// must be built with <c>EnableAlgorithms()</c> (ILGPU.Algorithms), which maps MathF.Exp/Log/Sqrt in
    /// the kernels to device code on CUDA and OpenCL, as <see cref="Create"/> does.
    /// </summary>
    public IlgpuBackend(Accelerator accelerator) : this(null, accelerator, ownsAccelerator: false) { }

    private IlgpuBackend(Context? ownedContext, Accelerator accelerator, bool ownsAccelerator)
    {
        _ownedContext = ownedContext;
        _acc = accelerator;
        _ownsAccelerator = ownsAccelerator;
        _dc = new DeviceContext(accelerator);
        if (Environment.GetEnvironmentVariable("TEMPER_KERNELS") == "ptx") _dc.PtxKernels = true;
        _rope = new RopeTables(_dc);
        _pool = new DevicePool(accelerator, DefaultPoolCap(accelerator));
        _dc.ReleaseCachedMemory = _pool.Release;
        _dc.ArenaHeld = _pool.Hold;
        Name = accelerator.AcceleratorType switch
        {
            AcceleratorType.CPU => "ilgpu-cpu",
            AcceleratorType.Cuda => "cuda",
            AcceleratorType.OpenCL => "opencl",
            var t => t.ToString().ToLowerInvariant(),
        };
    }

    /// <summary>Device kinds <see cref="Create"/> takes.</summary>
    public static IReadOnlyList<string> Kinds { get; } = ["ilgpu-cpu", "cuda", "opencl"];

    /// <summary>
    /// A backend on the first device of a kind: "ilgpu-cpu" (ILGPU's CPU accelerator), "cuda" or
    /// "opencl". Throws TemperException when no such device is present.
    /// </summary>
    public static IlgpuBackend Create(string kind)
    {
        Context? ctx = null;
        try
        {
            switch (kind)
            {
                case "ilgpu-cpu":
                {
                    ctx = Context.Create(b => b.CPU(CPUDeviceKind.Default).Math(MathMode.Default).EnableAlgorithms());
                    var acc = ctx.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
                    return new IlgpuBackend(ctx, acc, ownsAccelerator: true);
                }
                case "cuda":
                {
                    ctx = Context.Create(b => b.Cuda().Math(MathMode.Default).EnableAlgorithms());
                    var devices = ctx.GetCudaDevices();
                    if (devices.Count == 0) throw new TemperException("ilgpu: no CUDA device found");
                    return new IlgpuBackend(ctx, devices[0].CreateAccelerator(ctx), ownsAccelerator: true);
                }
                case "opencl":
                {
                    ctx = Context.Create(b => b.OpenCL().Math(MathMode.Default).EnableAlgorithms());
                    var devices = ctx.GetCLDevices();
                    if (devices.Count == 0) throw new TemperException("ilgpu: no OpenCL device found");
                    return new IlgpuBackend(ctx, devices[0].CreateAccelerator(ctx), ownsAccelerator: true);
                }
                default:
                    throw new TemperException($"ilgpu: unknown device kind '{kind}' (known: {string.Join(", ", Kinds)})");
            }
        }
        catch
        {
            ctx?.Dispose();
            throw;
        }
    }

    /// <summary>Whether a device of <paramref name="kind"/> is present (without creating an accelerator).</summary>
    public static bool IsAvailable(string kind)
    {
        try
        {
            switch (kind)
            {
                case "ilgpu-cpu": return true;
                case "cuda":
                {
                    using var ctx = Context.Create(b => b.Cuda());
                    return ctx.GetCudaDevices().Count > 0;
                }
                case "opencl":
                {
                    using var ctx = Context.Create(b => b.OpenCL());
                    return ctx.GetCLDevices().Count > 0;
                }
                default: return false;
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return false;
        }
    }

    public string Name { get; }
    public Accelerator Accelerator => _acc;

    /// <summary>Bytes copied host -> device by FromHost.</summary>
    public long UploadedBytes => _uploaded;
    /// <summary>Bytes copied device -> host by ToHost.</summary>
    public long DownloadedBytes => _downloaded;
    /// <summary>Bytes of small per-call arguments and RoPE tables copied host -> device.</summary>
    public long ArgumentBytes => _dc.Arena.UploadedBytes + _rope.UploadedBytes;
    /// <summary>Bytes of reduction partials read back (SumOfSquares).</summary>
    public long ReductionBytes => _reductionBytes;

    /// <summary>Device bytes held by the tensor pool for reuse (freed tensors' buffers).</summary>
    public long PooledBytes => _pool.CachedBytes;
    /// <summary>Tensor allocations served from the pool / by a fresh device allocation.</summary>
    public (long Hits, long Misses) PoolCounts => (_pool.Hits, _pool.Misses);
    /// <summary>The most bytes the pool keeps (default on CUDA: the device's memory, since an allocation the device refuses
    /// frees the cache and tries again; elsewhere 1/8 of it, at most 4 GiB); 0 disables pooling.</summary>
    public long PoolCapBytes
    {
        get => _pool.CapBytes;
        set
        {
            _pool.CapBytes = Math.Max(0, value);
            if (_pool.CachedBytes > _pool.CapBytes) TrimPool();
        }
    }

    /// <summary>Frees every pooled buffer (after the queued work that may still use them).</summary>
    public void TrimPool()
    {
        _acc.Synchronize();
        _pool.Trim();
    }

    // On CUDA every freed buffer is kept: a training step frees and takes again the same sizes (about 20 GiB of activations
    // at the 1B shape), and past a 4 GiB cap each one cost a cuMemFree (which waits for the device) and a cuMemAlloc: 381
    // allocations and 27 ms of a profiled 1B step on an H100 (2026-11-25). Host memory (ILGPU's CPU accelerator) keeps the cap.
    private static long DefaultPoolCap(Accelerator acc) => acc.AcceleratorType == AcceleratorType.Cuda
        ? acc.MemorySize
        : Math.Min(4L << 30, Math.Max(64L << 20, acc.MemorySize / 8));

    /// <summary>LmHeadCrossEntropy's and LmHeadDistillation's vocabulary chunk (rows of the LM head per pass); 0 chooses by size.</summary>
    public int VocabChunk { get; set; }

    /// <summary>
    /// Whether matrix products with bf16 or NF4 weights run on tensor cores (TF32 inputs, f32 sums; CUDA only,
    /// off by default: TEMPER_TENSOR_CORES=1 turns it on). Off, they take the exact f32 kernel.
    /// </summary>
    public bool TensorCores
    {
        get => _dc.TensorCores;
        set => _dc.TensorCores = value && _acc.AcceleratorType == AcceleratorType.Cuda;
    }

    /// <summary>
    /// Whether ops that have a CUDA C++ kernel (Temper.Kernels.Cuda: today the Linear products with bf16
    /// weights and attention forward and backward for head dims 64 and 128, on tensor cores) run it instead of the
    /// ILGPU one: `--kernels ptx`, or TEMPER_KERNELS=ptx.
    /// CUDA, or ILGPU's CPU accelerator when TEMPER_CUDA_DRIVER names the CUDA emulator (CI checks the routing
    /// there); elsewhere it stays off. Off unless asked for here; the CLI's `--kernels auto` asks where
    /// PtxKernelsPreferred (the op-check passed and the bench measured them faster on an H100, 2026-11-25).
    /// </summary>
    public bool PtxKernels
    {
        get => _dc.PtxKernels;
        set => _dc.PtxKernels = value;
    }

    /// <summary>LoRA linears' rank-r products on the CUDA C++ kernels too (DeviceContext.LoraRankKernels; TEMPER_LORA_RANK=1).</summary>
    public bool LoraRankKernels
    {
        get => _dc.LoraRankKernels;
        set => _dc.LoraRankKernels = value;
    }

    /// <summary>An NVIDIA GPU of compute capability 8.0 or later, where the CUDA C++ kernels' PTX (compute_80) runs.</summary>
    public bool PtxKernelsPreferred => _acc is ILGPU.Runtime.Cuda.CudaAccelerator { Architecture: { Major: >= 8 } };

    /// <summary>Waits for every queued kernel and copy.</summary>
    public void Synchronize() => _acc.Synchronize();

    // ---- memory ----

    public Tensor Zeros(Shape shape, DType dtype = DType.F32)
    {
        var s = Allocate(dtype.ByteCount(shape.Elements));
        s.Buffer.View.MemSetToZero(_dc.Stream);
        return new Tensor(shape, dtype, s);
    }

    /// <summary>
    /// A debugging aid: Uninitialized fills its buffer with 0xFF bytes (NaN as f32 and bf16), so an op that
    /// leaves part of an output it should overwrite unwritten shows NaN instead of a stale pooled value.
    /// Also set by the environment variable TEMPER_POISON_MEMORY=1 (CpuBackend reads it too).
    /// </summary>
    public bool PoisonMemory { get; set; } = Environment.GetEnvironmentVariable("TEMPER_POISON_MEMORY") == "1";

    public Tensor Uninitialized(Shape shape, DType dtype = DType.F32)
    {
        var s = Allocate(dtype.ByteCount(shape.Elements));
        if (PoisonMemory) s.Buffer.View.MemSet(_dc.Stream, 0xFF);
        return new Tensor(shape, dtype, s);
    }

    public Tensor FromHost(Tensor host)
    {
        Require(host.IsHost, "FromHost", $"tensor {Describe(host)} is not a host tensor");
        var s = Allocate(host.ByteCount);
        var bytes = host.Bytes;
        if (!bytes.IsEmpty) s.Buffer.View.SubView(0, bytes.Length).CopyFromCPU(_dc.Stream, (ReadOnlySpan<byte>)bytes);
        _uploaded += bytes.Length;
        return new Tensor(host.Shape, host.DType, s, host.Name);
    }

    public Tensor ToHost(Tensor t)
    {
        var s = Storage("ToHost", t);
        var host = Tensor.Zeros(t.Shape, t.DType, t.Name);
        var bytes = host.Bytes;
        if (!bytes.IsEmpty)
        {
            s.Buffer.View.SubView(0, bytes.Length).CopyToCPU(_dc.Stream, bytes);
            _dc.Stream.Synchronize();
        }
        _downloaded += bytes.Length;
        return host;
    }

    /// <summary>Copies rows [srcRow, srcRow + rows) of src into rows from dstRow of dst; a row is src's last dimension, which dst must share.</summary>
    public void CopyRows(Tensor src, int srcRow, Tensor dst, int dstRow, int rows)
    {
        const string op = "CopyRows";
        var ss = Storage(op, src);
        var ds = Storage(op, dst);
        Require(src.DType == dst.DType && src.Shape.Rank >= 1 && dst.Shape.Rank >= 1 && src.Shape[-1] == dst.Shape[-1], op,
            $"src {Describe(src)} and dst {Describe(dst)} must share dtype and last dimension");
        int w = src.Shape[-1];
        Require(srcRow >= 0 && dstRow >= 0 && rows >= 0 && srcRow + (long)rows <= src.Shape.Rows && dstRow + (long)rows <= dst.Shape.Rows, op,
            $"rows {srcRow}+{rows} of src {src.Shape} -> {dstRow}+{rows} of dst {dst.Shape} out of range");
        long rowBytes = src.DType.ByteCount(w);
        Require(src.DType.Bits() >= 8, op, $"dtype {src.DType} is not byte-addressable");
        _dc.Arena.Reset();
        Ops.CopyRows.Run(_dc, Bytes(ss), srcRow * rowBytes, Bytes(ds), dstRow * rowBytes, rows * rowBytes);
    }

    // ---- forward ----

    public void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output)
    {
        const string op = "Embedding";
        Require(table.Shape.Rank == 2 && (table.DType == DType.F32 || table.DType == DType.BF16), op, $"table {Describe(table)} must be [V,C] f32 or bf16");
        int v = table.Shape[0], c = table.Shape[1];
        Require(output.DType == DType.F32 && output.Shape.Rank >= 1 && output.Shape[-1] == c && output.Elements == (long)ids.Length * c,
            op, $"output {Describe(output)} must be f32 [{ids.Length},{c}] for table {Describe(table)} and {ids.Length} ids");
        CheckIds(op, ids, v);
        Begin();
        Ops.Embedding.Forward(_dc, Weight(op, table), ids, F(op, output), c);
    }

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor? rstd = null)
    {
        const string op = "RmsNorm";
        F32(op, x, weight, y, rstd);
        Require(x.Shape.Rank >= 1 && weight.Shape.Rank == 1 && weight.Shape[0] == x.Shape[-1] && y.Shape == x.Shape,
            op, $"x {x.Shape}, weight {weight.Shape}, y {y.Shape}: weight must be [C] and y the shape of x");
        Require(rstd == null || rstd.Elements == x.Shape.Rows, op, $"rstd {rstd?.Shape} must hold one value per row of x {x.Shape}");
        Begin();
        Ops.RmsNorm.Forward(_dc, F(op, x), F(op, weight), eps, F(op, y), FOpt(op, rstd), x.Shape.Rows, x.Shape[-1]);
    }

    public void AddRmsNorm(Tensor a, Tensor b, Tensor sum, Tensor weight, float eps, Tensor y, Tensor? rstd = null)
    {
        const string op = "AddRmsNorm";
        F32(op, a, b, sum, weight, y, rstd);
        Require(a.Shape.Rank >= 1 && b.Shape == a.Shape && sum.Shape == a.Shape && weight.Shape.Rank == 1 && weight.Shape[0] == a.Shape[-1] && y.Shape == a.Shape,
            op, $"a {a.Shape}, b {b.Shape}, sum {sum.Shape}, weight {weight.Shape}, y {y.Shape}: weight must be [C], the rest the shape of a");
        Require(rstd == null || rstd.Elements == a.Shape.Rows, op, $"rstd {rstd?.Shape} must hold one value per row of a {a.Shape}");
        Begin();
        Ops.RmsNorm.AddForward(_dc, F(op, a), F(op, b), F(op, sum), F(op, weight), eps, F(op, y), FOpt(op, rstd), a.Shape.Rows, a.Shape[-1]);
    }

    public void Linear(Tensor x, Tensor weight, Tensor? bias, Tensor y, bool accumulate = false)
    {
        const string op = "Linear";
        var (n, k, m) = CheckLinear(op, x, weight, bias, y);
        Begin();
        Ops.Linear.Forward(_dc, F(op, x), Weight(op, weight), FOpt(op, bias), F(op, y), n, k, m, accumulate);
    }

    public void LoraLinear(Tensor x, Tensor weight, Tensor? bias, Tensor loraA, Tensor loraB, float scale, Tensor y, Tensor? xa = null)
    {
        const string op = "LoraLinear";
        var (n, k, m) = CheckLinear(op, x, weight, bias, y);
        F32(op, loraA, loraB, xa);
        Require(loraA.Shape.Rank == 2 && loraA.Shape[1] == k && loraB.Shape.Rank == 2 && loraB.Shape[0] == m && loraB.Shape[1] == loraA.Shape[0],
            op, $"A {loraA.Shape} must be [r,{k}] and B {loraB.Shape} [{m},r] for weight {weight.Shape}");
        int r = loraA.Shape[0];
        Require(xa == null || xa.Shape == x.Shape.WithLast(r), op, $"xa {xa?.Shape} must be {x.Shape.WithLast(r)}");
        Begin();
        Ops.LoraLinear.Forward(_dc, F(op, x), Weight(op, weight), FOpt(op, bias), F(op, loraA), F(op, loraB), scale, F(op, y), FOpt(op, xa), n, k, m, r);
    }

    public void DoraNorm(Tensor weight, Tensor loraA, Tensor loraB, float scale, Tensor norm)
    {
        const string op = "DoraNorm";
        F32(op, loraA, loraB, norm);
        Require(weight.DType == DType.F32 || weight.DType == DType.BF16, op, $"weight {Describe(weight)} must be f32 or bf16");
        Require(weight.Shape.Rank == 2 && loraA.Shape.Rank == 2 && loraB.Shape.Rank == 2 && loraA.Shape[1] == weight.Shape[1] && loraB.Shape[0] == weight.Shape[0] && loraB.Shape[1] == loraA.Shape[0]
            && norm.Shape == new Shape(weight.Shape[0]), op, $"weight {weight.Shape}, A {loraA.Shape}, B {loraB.Shape}, norm {norm.Shape}: need W [M,K], A [r,K], B [M,r], norm [M]");
        Begin();
        Ops.DoraNorm.Compute(_dc, Weight(op, weight), F(op, loraA), F(op, loraB), scale, F(op, norm), weight.Shape[0], weight.Shape[1], loraA.Shape[0]);
    }

    public void DoraScale(Tensor z, Tensor magnitude, Tensor norm, Tensor? bias, Tensor y)
    {
        const string op = "DoraScale";
        F32(op, z, magnitude, norm, bias, y);
        int m = CheckDoraVectors(op, z, norm, magnitude);
        Require(y.Shape == z.Shape && (bias == null || bias.Shape == new Shape(m)), op, $"y {y.Shape} must be the shape of z {z.Shape}, bias {bias?.Shape} [{m}]");
        Begin();
        Ops.DoraScale.Forward(_dc, F(op, z), F(op, magnitude), F(op, norm), FOpt(op, bias), F(op, y), z.Shape.Rows, m);
    }

    private int CheckDoraVectors(string op, Tensor z, Tensor norm, Tensor vector)
    {
        Require(z.Shape.Rank >= 1 && norm.Shape == new Shape(z.Shape[-1]) && vector.Shape == norm.Shape, op,
            $"z {z.Shape}, norm {norm.Shape}, {vector.Shape}: norm and the magnitude (or its gradient) must be [M], z [N,M]");
        return z.Shape[-1];
    }

    public void Rope(Tensor x, ReadOnlySpan<int> positions, RopeFrequencies freqs)
    {
        int heads = CheckRope("Rope", x, positions, freqs);
        Begin();
        Ops.Rope.Apply(_dc, _rope, F("Rope", x), positions, freqs, heads, 1f);
    }

    public void Attention(in AttentionArgs a)
    {
        const string op = "Attention";
        var dims = CheckAttention(op, a);
        Begin();
        if (a.Q.DType == DType.BF16)
            Ops.Attention.ForwardFromBf16(_dc, Bf16(op, a.Q), Bf16(op, a.K), Bf16(op, a.V), F(op, a.Output), FOpt(op, a.Lse), a.KeyMask.Span, a.SegmentIds.Span, dims);
        else Ops.Attention.Forward(_dc, F(op, a.Q), F(op, a.K), F(op, a.V), F(op, a.Output), FOpt(op, a.Lse), a.KeyMask.Span, a.SegmentIds.Span, dims);
    }

    public void RoundToBf16(Tensor x, Tensor y)
    {
        const string op = "RoundToBf16";
        F32(op, x);
        Require(y.DType == DType.BF16 && y.Shape == x.Shape, op, $"{Describe(y)} must be bf16 of x's shape {x.Shape}");
        Begin();
        Ops.RoundBf16.Run(_dc, F(op, x), Bf16(op, y), Count(x));
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor y)
    {
        const string op = "SwiGlu";
        F32(op, y);
        GateAndUp(op, gate, up);
        Require(up.Shape == gate.Shape && y.Shape == gate.Shape, op, $"gate {gate.Shape}, up {up.Shape}, y {y.Shape} must have one shape");
        Begin();
        Ops.SwiGlu.Forward(_dc, Weight(op, gate), Weight(op, up), F(op, y), Count(gate));
    }

    public void SwiGluRounded(Tensor gate, Tensor up, Tensor y, Tensor gateBf16, Tensor upBf16)
    {
        const string op = "SwiGluRounded";
        F32(op, gate, up, y);
        Require(gateBf16.DType == DType.BF16 && upBf16.DType == DType.BF16, op, $"{Describe(gateBf16)} and {Describe(upBf16)} must be bf16");
        Require(up.Shape == gate.Shape && y.Shape == gate.Shape && gateBf16.Shape == gate.Shape && upBf16.Shape == gate.Shape,
            op, $"gate {gate.Shape}, up {up.Shape}, y {y.Shape}, gateBf16 {gateBf16.Shape}, upBf16 {upBf16.Shape} must have one shape");
        Begin();
        Ops.SwiGlu.Rounded(_dc, F(op, gate), F(op, up), F(op, y), Storage(op, gateBf16).View<ushort>(Math.Max(1, gateBf16.Elements)),
            Storage(op, upBf16).View<ushort>(Math.Max(1, upBf16.Elements)), Count(gate));
    }

    /// <summary>Device memory is scarce and the GPU computes in bf16: a bf16 model's MLP keeps gate and up in bf16 (DecoderBackprop).</summary>
    public bool KeepsBf16Activations => true;

    // SwiGlu's and SwiGluBackward's gate and up: both f32 or both bf16.
    private void GateAndUp(string op, Tensor gate, Tensor up) =>
        Require(gate.DType == up.DType && gate.DType is DType.F32 or DType.BF16, op, $"gate {Describe(gate)} and up {Describe(up)} must both be f32 or both bf16");

    public void Dropout(Tensor x, ulong seed, float p, Tensor y)
    {
        const string op = "Dropout";
        F32(op, x, y);
        Require(y.Shape == x.Shape, op, $"x {x.Shape}, y {y.Shape} must have one shape");
        Require(p >= 0 && p < 1, op, $"probability {p} must be in [0, 1)");
        Begin();
        Ops.Dropout.Forward(_dc, F(op, x), F(op, y), seed, (uint)Math.Ceiling(p * (double)(1 << 24)), 1f / (1f - p), Count(x));
    }

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        const string op = "Add";
        F32(op, a, b, y);
        Require(b.Shape == a.Shape && y.Shape == a.Shape, op, $"a {a.Shape}, b {b.Shape}, y {y.Shape} must have one shape");
        Begin();
        Ops.Add.Forward(_dc, F(op, a), F(op, b), F(op, y), Count(a));
    }

    public void LogSoftmax(Tensor x, Tensor y)
    {
        const string op = "LogSoftmax";
        F32(op, x, y);
        Require(x.Shape.Rank >= 1 && x.Shape[-1] > 0 && y.Shape == x.Shape, op, $"x {x.Shape}, y {y.Shape} must have one non-empty shape");
        Begin();
        Ops.LogSoftmax.Forward(_dc, F(op, x), F(op, y), x.Shape.Rows, x.Shape[-1]);
    }

    // ---- backward ----

    public void EmbeddingBackward(Tensor dOut, ReadOnlySpan<int> ids, Tensor dTable)
    {
        const string op = "EmbeddingBackward";
        F32(op, dOut, dTable);
        Require(dTable.Shape.Rank == 2 && dOut.Shape.Rank >= 1 && dOut.Shape[-1] == dTable.Shape[1] && dOut.Elements == (long)ids.Length * dTable.Shape[1],
            op, $"dOut {dOut.Shape} must be [{ids.Length},C] for dTable {dTable.Shape} [V,C]");
        CheckIds(op, ids, dTable.Shape[0]);
        Begin();
        Ops.Embedding.Backward(_dc, F(op, dOut), ids, F(op, dTable), dTable.Shape[1]);
    }

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dWeight, bool accumulateDx = false)
    {
        const string op = "RmsNormBackward";
        F32(op, dy, x, weight, rstd, dx, dWeight);
        Require(x.Shape.Rank >= 1 && dy.Shape == x.Shape && dx.Shape == x.Shape && weight.Shape.Rank == 1 && weight.Shape[0] == x.Shape[-1]
            && rstd.Elements == x.Shape.Rows && (dWeight == null || dWeight.Shape == weight.Shape),
            op, $"dy {dy.Shape}, x {x.Shape}, dx {dx.Shape}, weight {weight.Shape}, rstd {rstd.Shape}, dWeight {dWeight?.Shape}");
        Begin();
        Ops.RmsNorm.Backward(_dc, F(op, dy), F(op, x), F(op, weight), F(op, rstd), F(op, dx), FOpt(op, dWeight), x.Shape.Rows, x.Shape[-1], accumulateDx);
    }

    public void LinearBackward(Tensor dy, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias, bool accumulateDx = false)
    {
        const string op = "LinearBackward";
        var (n, k, m) = CheckLinear(op, x, weight, null, dy);
        F32(op, dx, dWeight, dBias);
        Require(dx == null || dx.Shape == x.Shape, op, $"dx {dx?.Shape} must be the shape of x {x.Shape}");
        Require(dWeight == null || dWeight.Shape == weight.Shape, op, $"dWeight {dWeight?.Shape} must be the shape of weight {weight.Shape}");
        Require(dBias == null || dBias.Shape == new Shape(m), op, $"dBias {dBias?.Shape} must be [{m}]");
        Begin();
        Ops.Linear.Backward(_dc, F(op, dy), F(op, x), Weight(op, weight), FOpt(op, dx), FOpt(op, dWeight), FOpt(op, dBias), n, k, m, accumulateDx);
    }

    public void LoraLinearBackward(Tensor dy, Tensor x, Tensor xa, Tensor loraA, Tensor loraB, float scale, Tensor? dx, Tensor? dA, Tensor? dB)
    {
        const string op = "LoraLinearBackward";
        F32(op, dy, x, xa, loraA, loraB, dx, dA, dB);
        Require(loraA.Shape.Rank == 2 && loraB.Shape.Rank == 2 && loraB.Shape[1] == loraA.Shape[0] && x.Shape.Rank >= 1 && x.Shape[-1] == loraA.Shape[1],
            op, $"x {x.Shape}, A {loraA.Shape}, B {loraB.Shape}: need A [r,K], B [M,r]");
        int r = loraA.Shape[0], k = loraA.Shape[1], m = loraB.Shape[0];
        Require(dy.Shape == x.Shape.WithLast(m) && xa.Shape == x.Shape.WithLast(r) && (dx == null || dx.Shape == x.Shape)
            && (dA == null || dA.Shape == loraA.Shape) && (dB == null || dB.Shape == loraB.Shape),
            op, $"dy {dy.Shape}, x {x.Shape}, xa {xa.Shape}, dx {dx?.Shape}, dA {dA?.Shape}, dB {dB?.Shape} for A {loraA.Shape}, B {loraB.Shape}");
        Begin();
        Ops.LoraLinear.Backward(_dc, F(op, dy), F(op, x), F(op, xa), F(op, loraA), F(op, loraB), scale, FOpt(op, dx), FOpt(op, dA), FOpt(op, dB), x.Shape.Rows, k, m, r);
    }

    public void DoraMagnitudeBackward(Tensor dy, Tensor z, Tensor norm, Tensor dMagnitude)
    {
        const string op = "DoraMagnitudeBackward";
        F32(op, dy, z, norm, dMagnitude);
        int m = CheckDoraVectors(op, z, norm, dMagnitude);
        Require(dy.Shape == z.Shape, op, $"dy {dy.Shape} must be the shape of z {z.Shape}");
        Begin();
        Ops.DoraScale.MagnitudeBackward(_dc, F(op, dy), F(op, z), F(op, norm), F(op, dMagnitude), z.Shape.Rows, m);
    }

    public void RopeBackward(Tensor dx, ReadOnlySpan<int> positions, RopeFrequencies freqs)
    {
        int heads = CheckRope("RopeBackward", dx, positions, freqs);
        Begin();
        Ops.Rope.Apply(_dc, _rope, F("RopeBackward", dx), positions, freqs, heads, -1f);
    }

    public void AttentionBackward(in AttentionArgs a, Tensor dOut, Tensor dq, Tensor dk, Tensor dv)
    {
        const string op = "AttentionBackward";
        var dims = CheckAttention(op, a);
        F32(op, dOut, dq, dk, dv);
        Require(dOut.Shape == a.Q.Shape && dq.Shape == a.Q.Shape && dk.Shape == a.K.Shape && dv.Shape == a.K.Shape,
            op, $"dOut {dOut.Shape}, dq {dq.Shape} must be q's {a.Q.Shape}; dk {dk.Shape}, dv {dv.Shape} k's {a.K.Shape}");
        Begin();
        if (a.Q.DType == DType.BF16)
            Ops.Attention.BackwardFromBf16(_dc, Bf16(op, a.Q), Bf16(op, a.K), Bf16(op, a.V), F(op, a.Output), FOpt(op, a.Lse), F(op, dOut), F(op, dq), F(op, dk), F(op, dv),
                a.KeyMask.Span, a.SegmentIds.Span, dims);
        else Ops.Attention.Backward(_dc, F(op, a.Q), F(op, a.K), F(op, a.V), F(op, a.Output), FOpt(op, a.Lse), F(op, dOut), F(op, dq), F(op, dk), F(op, dv), a.KeyMask.Span, a.SegmentIds.Span, dims);
    }

    public void SwiGluBackward(Tensor dy, Tensor gate, Tensor up, Tensor dGate, Tensor dUp)
    {
        const string op = "SwiGluBackward";
        F32(op, dy, dGate, dUp);
        GateAndUp(op, gate, up);
        Require(gate.Shape == dy.Shape && up.Shape == dy.Shape && dGate.Shape == dy.Shape && dUp.Shape == dy.Shape,
            op, $"dy {dy.Shape}, gate {gate.Shape}, up {up.Shape}, dGate {dGate.Shape}, dUp {dUp.Shape} must have one shape");
        Begin();
        Ops.SwiGlu.Backward(_dc, F(op, dy), Weight(op, gate), Weight(op, up), F(op, dGate), F(op, dUp), Count(dy));
    }

    /// <summary>Gradients are of sum_n losses[n] lossScale rowScales[n] (rowScales empty = all 1).</summary>
    public void LmHeadCrossEntropy(Tensor hidden, Tensor lmHead, ReadOnlySpan<int> labels, Tensor losses, float lossScale, Tensor? dHidden, Tensor? dLmHead, ReadOnlySpan<float> rowScales = default)
    {
        const string op = "LmHeadCrossEntropy";
        F32(op, hidden, losses, dHidden, dLmHead);
        var (n, c, v) = LmHeadShapes.CrossEntropy(hidden, lmHead, labels, losses, dHidden, dLmHead, rowScales, Name);
        Begin();
        Ops.LmHeadCrossEntropy.Run(_dc, F(op, hidden), Weight(op, lmHead), labels, F(op, losses), lossScale, FOpt(op, dHidden), FOpt(op, dLmHead), rowScales, n, c, v, VocabChunk);
    }

    public void LmHeadDistillation(Tensor studentHidden, Tensor studentLmHead, Tensor teacherHidden, Tensor teacherLmHead, ReadOnlySpan<int> mask, float temperature, bool reverse,
        Tensor losses, float lossScale, Tensor? dHidden, Tensor? dLmHead)
    {
        const string op = "LmHeadDistillation";
        F32(op, studentHidden, teacherHidden, losses, dHidden, dLmHead);
        var (n, cs, ct, v) = LmHeadShapes.Distillation(studentHidden, studentLmHead, teacherHidden, teacherLmHead, mask, temperature, losses, dHidden, dLmHead, Name);
        Begin();
        Ops.LmHeadDistillation.Run(_dc, F(op, studentHidden), Weight(op, studentLmHead), F(op, teacherHidden), Weight(op, teacherLmHead), mask, temperature, reverse,
            F(op, losses), lossScale, FOpt(op, dHidden), FOpt(op, dLmHead), n, cs, ct, v, VocabChunk);
    }

    // ---- optimizer and reductions ----

    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, in AdamWParams p)
    {
        const string op = "AdamWStep";
        F32(op, param, grad, m, v);
        Require(grad.Shape == param.Shape && m.Shape == param.Shape && v.Shape == param.Shape, op, $"param {param.Shape}, grad {grad.Shape}, m {m.Shape}, v {v.Shape} must have one shape");
        Require(p.Step >= 1, op, $"step {p.Step} must count from 1");
        Begin();
        Ops.AdamW.Step(_dc, F(op, param), F(op, grad), F(op, m), F(op, v), p, Count(param));
    }

    /// <summary>With PTX kernels on, every tensor in one CUDA C++ launch (CudaAdamW.MultiStep); else AdamWStep each.</summary>
    public void AdamWSteps(IReadOnlyList<AdamWTensors> tensors, in AdamWParams p)
    {
        const string op = "AdamWSteps";
        if (_dc.PtxAdamW is not { } ptx)
        {
            foreach (var t in tensors) AdamWStep(t.Param, t.Grad, t.M, t.V, p);
            return;
        }
        Require(p.Step >= 1, op, $"step {p.Step} must count from 1");
        var borrowed = new List<Temper.Cuda.Driver.CudaDeviceMemory>();
        Temper.Cuda.Driver.CudaDeviceMemory Borrow(Tensor t)
        {
            var m = Ops.Gemm.Borrow(_dc, F(op, t));
            borrowed.Add(m);
            return m;
        }
        try
        {
            var list = new Temper.Kernels.Cuda.AdamWTensor[tensors.Count];
            for (int i = 0; i < list.Length; i++)
            {
                var (param, grad, m, v) = tensors[i];
                F32(op, param, grad, m, v);
                Require(grad.Shape == param.Shape && m.Shape == param.Shape && v.Shape == param.Shape, op, $"param {param.Shape}, grad {grad.Shape}, m {m.Shape}, v {v.Shape} must have one shape");
                list[i] = new(Borrow(param), Borrow(grad), Borrow(m), Borrow(v), param.Elements);
            }
            Begin();
            ptx.MultiStep(list, p);
        }
        finally
        {
            foreach (var m in borrowed) m.Dispose();
        }
    }

    public double SumOfSquares(Tensor x) => SumOfSquares([x]);

    public double SumOfSquares(IReadOnlyList<Tensor> xs)
    {
        const string op = "SumOfSquares";
        var views = new (ArrayView<float>, int)[xs.Count];
        for (int i = 0; i < xs.Count; i++)
        {
            F32(op, xs[i]);
            views[i] = (F(op, xs[i]), Count(xs[i]));
        }
        Begin();
        double r = Ops.SumOfSquares.Compute(_dc, views, out long bytes);
        _reductionBytes += bytes;
        return r;
    }

    public void Clear(Tensor x)
    {
        var s = Storage("Clear", x);
        if (x.ByteCount > 0) Bytes(s).SubView(0, x.ByteCount).MemSetToZero(_dc.Stream);
    }

    public void Scale(Tensor x, float s)
    {
        const string op = "Scale";
        F32(op, x);
        Begin();
        Ops.Scale.Apply(_dc, F(op, x), s, Count(x));
    }

    public void ScaleRows(Tensor x, ReadOnlySpan<float> scales)
    {
        const string op = "ScaleRows";
        F32(op, x);
        Require(x.Shape.Rank >= 1 && x.Shape.Rows == scales.Length, op, $"x {x.Shape} must have one row per scale ({scales.Length})");
        Begin();
        Ops.ScaleRows.Apply(_dc, F(op, x), scales, x.Shape[-1]);
    }

    public void Dispose()
    {
        try
        {
            if (!_acc.IsDisposed) _acc.Synchronize();
        }
        finally
        {
            _rope.Dispose();
            _dc.Dispose();
            _pool.Dispose();
            if (_ownsAccelerator) _acc.Dispose();
            _ownedContext?.Dispose();
        }
    }

    // ---- memory helpers ----

    private DeviceStorage Allocate(long bytes) => new(this, _pool, _pool.Rent(bytes));

    private void Begin() => _dc.Arena.Reset();

    private DeviceStorage Storage(string op, Tensor t)
    {
        if (t.Storage is not DeviceStorage s || !ReferenceEquals(s.Device, this))
            throw new ArgumentException($"{Name} {op}: {Describe(t)} is not in this backend's device memory (it lives on {t.Storage.Device?.Name ?? "the host"})");
        ObjectDisposedException.ThrowIf(s.IsDisposed, t);
        return s;
    }

    private static ArrayView<byte> Bytes(DeviceStorage s) => s.Buffer.View;

    private ArrayView<float> F(string op, Tensor t) => Storage(op, t).View<float>(Math.Max(1, t.Elements));

    private ArrayView<float>? FOpt(string op, Tensor? t) => t == null ? null : F(op, t);

    private ArrayView<ushort> Bf16(string op, Tensor t) => Storage(op, t).View<ushort>(Math.Max(1, t.Elements));

    private WeightView Weight(string op, Tensor t) => t.DType == DType.BF16
        ? new WeightView(Bf16(op, t))
        : new WeightView(F(op, t));

    private static int Count(Tensor t) => checked((int)t.Elements);

    // ---- checks ----

    private (int N, int K, int M) CheckLinear(string op, Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        F32(op, x, bias, y);
        Require(weight.DType == DType.F32 || weight.DType == DType.BF16, op, $"weight {Describe(weight)} must be f32 or bf16");
        Require(x.Shape.Rank >= 1 && weight.Shape.Rank == 2 && weight.Shape[1] == x.Shape[-1], op, $"x {x.Shape} and weight {weight.Shape}: weight must be [M,{(x.Shape.Rank >= 1 ? x.Shape[-1] : 0)}]");
        int k = weight.Shape[1], m = weight.Shape[0];
        Require(y.Shape == x.Shape.WithLast(m), op, $"y {y.Shape} must be {x.Shape.WithLast(m)} for x {x.Shape} and weight {weight.Shape}");
        Require(bias == null || (bias.Shape.Rank == 1 && bias.Shape[0] == m), op, $"bias {bias?.Shape} must be [{m}] for weight {weight.Shape}");
        Require((long)x.Shape.Rows * Math.Max(k, m) <= int.MaxValue && (long)m * k <= int.MaxValue, op, $"x {x.Shape}, weight {weight.Shape}: more than 2^31 elements in one operand");
        return (x.Shape.Rows, k, m);
    }

    private int CheckRope(string op, Tensor x, ReadOnlySpan<int> positions, RopeFrequencies freqs)
    {
        F32(op, x);
        Require(x.Shape.Rank >= 2 && x.Shape[-1] == freqs.HeadDim && freqs.HeadDim > 0, op, $"x {x.Shape} must be [N,H,{freqs.HeadDim}] for these frequencies");
        int heads = x.Shape[-2];
        Require(heads > 0 && x.Elements == (long)positions.Length * heads * freqs.HeadDim, op, $"x {x.Shape} must hold {positions.Length} positions of [{heads},{freqs.HeadDim}]");
        return heads;
    }

    // q, k and v all f32 or all bf16; the output and lse f32.
    private AttentionDims CheckAttention(string op, in AttentionArgs a)
    {
        F32(op, a.Output, a.Lse);
        if (a.Q.DType != DType.BF16) F32(op, a.Q, a.K, a.V);
        else Require(a.K.DType == DType.BF16 && a.V.DType == DType.BF16, op, $"q is bf16, so {Describe(a.K)} and {Describe(a.V)} must be too");
        var (q, k) = (a.Q.Shape, a.K.Shape);
        Require(q.Rank == 4 && k.Rank == 4 && a.V.Shape == k && a.Output.Shape == q && k[0] == q[0] && k[3] == q[3] && k[2] > 0 && q[2] % k[2] == 0,
            op, $"q {q}, k {k}, v {a.V.Shape}, output {a.Output.Shape}: need q,output [B,Tq,H,D], k,v [B,S,Hkv,D], H a multiple of Hkv");
        int batch = q[0], tq = q[1], heads = q[2], d = q[3], s = k[1], kvHeads = k[2];
        Require(d <= Ops.Attention.MaxHeadDim, op, $"head dim {d} (q {q}) is over the {Ops.Attention.MaxHeadDim} the attention tiles hold");
        Require(a.KvLength >= 0 && a.KvLength <= s && a.QueryOffset >= 0, op, $"kvLength {a.KvLength} must be within the cache's {s} rows and offset {a.QueryOffset} >= 0 (k {k})");
        Require(a.KeyMask.IsEmpty || a.KeyMask.Length == batch * a.KvLength, op, $"key mask has {a.KeyMask.Length} entries, need B*kvLength = {batch}x{a.KvLength}");
        Require(a.Lse == null || a.Lse.Shape == new Shape(batch, heads, tq), op, $"lse {a.Lse?.Shape} must be [{batch},{heads},{tq}]");
        Require(a.SegmentIds.IsEmpty || (a.SegmentIds.Length == batch * a.KvLength && a.QueryOffset + tq <= a.KvLength), op,
            $"segment ids have {a.SegmentIds.Length} entries, need B*kvLength = {batch}x{a.KvLength} covering the queries (offset {a.QueryOffset} + {tq})");
        return new AttentionDims { B = batch, Tq = tq, H = heads, S = s, Hkv = kvHeads, D = d, KvLength = a.KvLength, QueryOffset = a.QueryOffset, Scale = a.Scale };
    }

    private void CheckIds(string op, ReadOnlySpan<int> ids, int v)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)v) throw new ArgumentException($"{Name} {op}: id {id} is outside the table's {v} rows");
    }

    private void Require(bool ok, string op, string detail)
    {
        if (!ok) throw new ArgumentException($"{Name} {op}: {detail}");
    }

    private void Require(bool ok, string op, [System.Runtime.CompilerServices.InterpolatedStringHandlerArgument(nameof(ok))] ref CheckMessage detail)
    {
        if (!ok) throw new ArgumentException($"{Name} {op}: {detail.ToStringAndClear()}");
    }

    private void F32(string op, params ReadOnlySpan<Tensor?> ts)
    {
        foreach (var t in ts)
        {
            if (t == null) continue;
            if (t.DType != DType.F32) throw new ArgumentException($"{Name} {op}: {Describe(t)} must be f32");
            Storage(op, t);
        }
    }

    private static string Describe(Tensor t) => $"{t.Name ?? "tensor"} {t.DType}{t.Shape}";
}
