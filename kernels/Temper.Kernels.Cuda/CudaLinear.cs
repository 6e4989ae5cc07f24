// The Linear products with bf16 or NF4 weights on tensor cores (cuda/linear_bf16.cu, embedded as
// Ptx/linear_bf16.ptx):
//   Forward:       y[N,M]  = alpha x[N,K] W[M,K]^T + bias[M] (optional) + y (when accumulate)
//   InputGradient: dx[N,K] = alpha dy[N,M] W[M,K] + dx (when accumulate)
// Activations f32 (rounded to bf16 as staged), W bf16, results f32; blocks of 256 threads per 128 x 128
// tile of the result. Either may add a LoRA term in its epilogue (LowRankTerm: y += s L R^T, rank <= 16):
//   forward:        L = xa [N,r] = x A^T, R = B [M,r], s = scale          (LowRankTerm.Forward)
//   input gradient: L = dxa [N,r] = scale dy B, R = A [r,K], s = 1          (LowRankTerm.InputGradient)
// The pipelined bf16 products (gemm_bf16.cu, sm_80) take the sm_90a GEMM (CudaGemmSm90) on compute capability 9.0:
// the forward by default, the input gradient opt-in (TEMPER_GEMM_SM90_NN=1) as W^T (CudaTranspose, into scratch)
// then the forward product on it. The module is loaded once per device context, on first use.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

/// <summary>y += Scale L R^T in a Linear's epilogue; R's element (column j, rank q) at R[j * ColumnStride + q * RankStride].</summary>
public sealed record LowRankTerm(CudaDeviceMemory L, CudaDeviceMemory R, int Rank, int ColumnStride, int RankStride, float Scale)
{
    /// <summary>The forward's LoRA term: xa [n, rank] times B [m, rank]^T, scaled.</summary>
    public static LowRankTerm Forward(CudaDeviceMemory xa, CudaDeviceMemory b, int rank, float scale) => new(xa, b, rank, rank, 1, scale);

    /// <summary>The input gradient's LoRA term: dxa [n, rank] (already scaled) times A [rank, k].</summary>
    public static LowRankTerm InputGradient(CudaDeviceMemory dxa, CudaDeviceMemory a, int rank, int k) => new(dxa, a, rank, 1, k, 1f);
}

/// <summary>A Linear's weight [m, k] on the device: bf16, or NF4 (packed codes, the decoded f32 absmax of each
/// 64-element block, and the 16-value code book as f32).</summary>
public abstract record LinearWeight
{
    private LinearWeight() { }

    internal abstract void Require(int m, int k);
    internal abstract CudaKernelArguments AddTo(CudaKernelArguments args);

    public sealed record Bf16(CudaDeviceMemory W) : LinearWeight
    {
        internal override void Require(int m, int k) => CudaLinear.Require(W, 2L * m * k, "w");
        internal override CudaKernelArguments AddTo(CudaKernelArguments args) => args.Add(W);
    }

    public sealed record Nf4(CudaDeviceMemory Codes, CudaDeviceMemory Absmax, CudaDeviceMemory CodeBook) : LinearWeight
    {
        internal override void Require(int m, int k)
        {
            long elements = (long)m * k;
            CudaLinear.Require(Codes, (elements + 1) / 2, "the NF4 codes");
            CudaLinear.Require(Absmax, 4 * ((elements + 63) / 64), "the NF4 absmax");
            CudaLinear.Require(CodeBook, 4 * 16, "the NF4 code book");
        }

        internal override CudaKernelArguments AddTo(CudaKernelArguments args) => args.Add(Codes).Add(Absmax).Add(CodeBook);
    }
}

public sealed class CudaLinear(CudaDevice device) : IDisposable
{
    /// <summary>The largest LoRA rank the epilogue takes.</summary>
    public const int MaxLowRank = 16;

    private const int Tile = 128, Threads = 256;
    private CudaModuleHandle? _module;
    private CudaFunction? _nt, _nn, _nf4Nt, _nf4Nn, _convert, _gemmNt, _gemmNn;
    private CudaModuleHandle? _gemmModule;
    private CudaDeviceMemory? _xBf16; // the activations in bf16 for gemm_bf16_nt, grown as needed
    private CudaGemmSm90? _sm90; // gemm_bf16_sm90.cu for the forward, where Sm90, and the input gradient, where Sm90InputGradient
    private CudaTranspose? _transpose; // W^T for the sm_90a input gradient
    private CudaDeviceMemory? _wT;    // ... into this, grown as needed
    private CudaNf4? _nf4;            // NF4 weights to bf16 for the pipelined products, where Nf4Dequantize
    private CudaDeviceMemory? _wNf4;  // ... into this, grown as needed
    private const int GemmThreads = 128, GemmSharedBytes = 3 * (128 + 128) * 40 * 2; // gemm_bf16.cu's ring

    /// <summary>Device bytes this instance holds of its own (the bf16 copy of the activations).</summary>
    public long ScratchBytes => (_xBf16?.ByteLength ?? 0) + (_wT?.ByteLength ?? 0) + (_wNf4?.ByteLength ?? 0);

    /// <summary>The environment variable that opts NF4 products of at least Nf4DequantizeMinRows rows in to the dequantise-then-GEMM route ("1").</summary>
    public const string Nf4DequantizeVariable = "TEMPER_NF4_DEQUANT";

    /// <summary>Fewer rows than this (decoding) keep the fused NF4 kernels: the whole weight's dequantisation would outweigh the product.</summary>
    public const int Nf4DequantizeMinRows = 128;

    /// <summary>Whether NF4 products of at least Nf4DequantizeMinRows rows (training) dequantise the weight to bf16 into scratch
    /// (CudaNf4.ToBf16: the values the fused kernels stage) and run the pipelined bf16 products (gemm_bf16.cu, or the sm_90a
    /// GEMM where those routes are on) instead of linear_bf16.cu's fused NF4 kernels (WMMA): null (the default) decides on
    /// first use by TEMPER_NF4_DEQUANT=1 (opt-in: checked on the CUDA emulator, not yet on a GPU); true or false forces it.</summary>
    public bool? Nf4Dequantize { get; set; }

    private bool Nf4DequantizeHere => Nf4Dequantize ??= Environment.GetEnvironmentVariable(Nf4DequantizeVariable) == "1";

    /// <summary>The environment variable that opts the input gradient in to the sm_90a GEMM ("1"), until a GPU has checked it.</summary>
    public const string Sm90InputGradientVariable = "TEMPER_GEMM_SM90_NN";

    /// <summary>True (the default): bf16 products whose summed and W row lengths are multiples of 8 run
    /// gemm_bf16.cu (the activations converted to bf16 once, a cp.async pipeline, mma.sync); false:
    /// linear_bf16.cu (WMMA) for every product. Forward products without a LoRA term run gemm_bf16_sm90.cu
    /// (wgmma) instead where CudaGemmSm90.UseOnThisDevice (compute capability 9.0 unless TEMPER_GEMM_SM90=0).</summary>
    public bool Pipelined { get; set; } = true;

    /// <summary>Whether pipelined forward products without a LoRA term run gemm_bf16_sm90.cu (wgmma): null (the
    /// default) decides on first use by CudaGemmSm90.UseOnThisDevice; true forces it (the CUDA emulator's checks;
    /// a GPU other than compute capability 9.0 refuses its PTX); false never.</summary>
    public bool? Sm90 { get; set; }

    /// <summary>Whether pipelined forward products without a LoRA term run gemm_bf16_sm90.cu here (Sm90, decided now if unset).</summary>
    public bool Sm90Forward => Sm90 ??= CudaGemmSm90.UseOnThisDevice(device);

    /// <summary>Whether pipelined input gradients without a LoRA term run as W^T (transpose_16.cu, into scratch) then the
    /// sm_90a forward GEMM, dx = dy (W^T)^T: null (the default) decides on first use, true where Sm90Forward and
    /// TEMPER_GEMM_SM90_NN=1 (opt-in: checked on the CUDA emulator, not yet on a GPU); true or false forces it.</summary>
    public bool? Sm90InputGradient { get; set; }

    private bool Sm90InputGradientHere => Sm90InputGradient ??= Sm90Forward && Environment.GetEnvironmentVariable(Sm90InputGradientVariable) == "1";

    /// <summary>The environment variable that sends products with a LoRA term to the sm_90a GEMM's LoRA epilogue ("1"), until a GPU has checked it.</summary>
    public const string Sm90LoraVariable = "TEMPER_GEMM_SM90_LORA";

    /// <summary>Whether products with a LoRA term may take the sm_90a GEMM (its epilogue adds the term: the forward where
    /// Sm90Forward, the input gradient where Sm90InputGradient): null (the default) decides on first use, true where
    /// Sm90Forward and TEMPER_GEMM_SM90_LORA=1 (opt-in: checked on the CUDA emulator, not yet on a GPU); true or false
    /// forces it. Otherwise they run gemm_bf16.cu's LoRA epilogue.</summary>
    public bool? Sm90Lora { get; set; }

    /// <summary>Whether pipelined products with a LoRA term run the sm_90a GEMM's LoRA epilogue here (Sm90Lora decided now if unset).</summary>
    public bool Sm90LoraEpilogue => Sm90Forward && (Sm90Lora ??= Environment.GetEnvironmentVariable(Sm90LoraVariable) == "1");

    /// <summary>y = alpha x W^T (+ bias) (+ y) (+ the LoRA term): x [n,k] f32, w [m,k] bf16 or NF4, bias [m] f32 or null, y [n,m] f32.</summary>
    public void Forward(CudaDeviceMemory x, LinearWeight w, CudaDeviceMemory? bias, CudaDeviceMemory y, int n, int k, int m, float alpha = 1f, bool accumulate = false,
        LowRankTerm? lora = null)
    {
        if (n < 0 || k < 0 || m < 0) throw new CudaException($"CudaLinear.Forward: sizes must be >= 0, not n {n}, k {k}, m {m}");
        Require(x, 4L * n * k, "x");
        w.Require(m, k);
        Require(y, 4L * n * m, "y");
        if (bias != null) Require(bias, 4L * m, "bias");
        if (lora != null) RequireLowRank(lora, n, m, "CudaLinear.Forward");
        if ((long)n * m == 0) return;
        if (Pipelined && w is LinearWeight.Bf16 bw && k % 8 == 0 && bw.W.Pointer % 16 == 0)
        {
            PipelinedProduct(false, x, bw.W, bias, y, n, k, m, alpha, accumulate, lora);
            return;
        }
        if (Pipelined && w is LinearWeight.Nf4 nw && k % 8 == 0 && n >= Nf4DequantizeMinRows && Nf4DequantizeHere)
        {
            PipelinedProduct(false, x, Dequantized(nw, m, k), bias, y, n, k, m, alpha, accumulate, lora);
            return;
        }
        var f = w is LinearWeight.Nf4 ? _nf4Nt ??= CudaDriver.GetFunction(Module(), "linear_nf4_nt") : _nt ??= CudaDriver.GetFunction(Module(), "linear_bf16_nt");
        var args = AddLowRank(w.AddTo(new CudaKernelArguments().Add(x)).Add(bias?.Pointer ?? 0UL).Add(y).Add(n).Add(k).Add(m).Add(alpha).Add(accumulate ? 1 : 0), lora);
        device.Launch(f, ((uint)((m + Tile - 1) / Tile), (uint)((n + Tile - 1) / Tile), 1), (Threads, 1, 1), args);
    }

    /// <summary>dx = alpha dy W (+ dx) (+ the LoRA term): dy [n,m] f32, w [m,k] bf16 or NF4, dx [n,k] f32.</summary>
    public void InputGradient(CudaDeviceMemory dy, LinearWeight w, CudaDeviceMemory dx, int n, int k, int m, float alpha = 1f, bool accumulate = false,
        LowRankTerm? lora = null)
    {
        if (n < 0 || k < 0 || m < 0) throw new CudaException($"CudaLinear.InputGradient: sizes must be >= 0, not n {n}, k {k}, m {m}");
        Require(dy, 4L * n * m, "dy");
        w.Require(m, k);
        Require(dx, 4L * n * k, "dx");
        if (lora != null) RequireLowRank(lora, n, k, "CudaLinear.InputGradient");
        if ((long)n * k == 0) return;
        if (Pipelined && w is LinearWeight.Bf16 bw && k % 8 == 0 && m % 8 == 0 && bw.W.Pointer % 16 == 0)
        {
            PipelinedProduct(true, dy, bw.W, null, dx, n, k, m, alpha, accumulate, lora);
            return;
        }
        if (Pipelined && w is LinearWeight.Nf4 nw && k % 8 == 0 && m % 8 == 0 && n >= Nf4DequantizeMinRows && Nf4DequantizeHere)
        {
            PipelinedProduct(true, dy, Dequantized(nw, m, k), null, dx, n, k, m, alpha, accumulate, lora);
            return;
        }
        var f = w is LinearWeight.Nf4 ? _nf4Nn ??= CudaDriver.GetFunction(Module(), "linear_nf4_nn") : _nn ??= CudaDriver.GetFunction(Module(), "linear_bf16_nn");
        var args = AddLowRank(w.AddTo(new CudaKernelArguments().Add(dy)).Add(dx).Add(n).Add(k).Add(m).Add(alpha).Add(accumulate ? 1 : 0), lora);
        device.Launch(f, ((uint)((k + Tile - 1) / Tile), (uint)((n + Tile - 1) / Tile), 1), (Threads, 1, 1), args);
    }

    /// <summary>The forward product on activations already in bf16, as Forward runs it after converting them
    /// (gemm_bf16.cu, or gemm_bf16_sm90.cu where Sm90): y = alpha x W^T (+ bias) (+ y), x [n,k] bf16, w [m,k] bf16,
    /// k a multiple of 8, x and w 16-byte aligned. `temper bench gemm` times it alone against cuBLAS.</summary>
    public void ForwardBf16(CudaDeviceMemory xBf16, CudaDeviceMemory w, CudaDeviceMemory? bias, CudaDeviceMemory y, int n, int k, int m, float alpha = 1f, bool accumulate = false)
    {
        if (n < 0 || k < 0 || m < 0 || k % 8 != 0 || xBf16.Pointer % 16 != 0 || w.Pointer % 16 != 0)
            throw new CudaException($"CudaLinear.ForwardBf16: sizes must be >= 0 and k a multiple of 8 (n {n}, k {k}, m {m}), x and w 16-byte aligned");
        Require(xBf16, 2L * n * k, "x");
        Require(w, 2L * m * k, "w");
        Require(y, 4L * n * m, "y");
        if (bias != null) Require(bias, 4L * m, "bias");
        if ((long)n * m == 0) return;
        ProductFromBf16(false, xBf16, w, bias, y, n, k, m, alpha, accumulate, null);
    }

    // gemm_bf16.cu: NT y[n,m] = x[n,k] W^T, or NN (inputGradient) y[n,k] = x[n,m] W; x converted to bf16 first.
    private void PipelinedProduct(bool inputGradient, CudaDeviceMemory x, CudaDeviceMemory w, CudaDeviceMemory? bias, CudaDeviceMemory y, int n, int k, int m, float alpha, bool accumulate,
        LowRankTerm? lora)
    {
        long elements = (long)n * (inputGradient ? m : k);
        var xBf16 = CudaScratch.AtLeast<ushort>(device, ref _xBf16, elements, 1L << 20);
        ConvertToBf16(x, xBf16, elements);
        ProductFromBf16(inputGradient, xBf16, w, bias, y, n, k, m, alpha, accumulate, lora);
    }

    // An NF4 weight [m,k] as bf16 in scratch (the values the fused NF4 kernels stage).
    private CudaDeviceMemory Dequantized(LinearWeight.Nf4 w, int m, int k)
    {
        long elements = (long)m * k;
        var bf16 = CudaScratch.AtLeast<ushort>(device, ref _wNf4, elements, 1L << 20);
        (_nf4 ??= new CudaNf4(device)).ToBf16(w, bf16, elements);
        return bf16;
    }

    /// <summary>output[i] = bf16(x[i]), rounded to nearest even, for i below <paramref name="elements"/>: the
    /// activations' conversion before a pipelined product (gemm_bf16.cu's convert_f32_bf16).</summary>
    public void ConvertToBf16(CudaDeviceMemory x, CudaDeviceMemory output, long elements)
    {
        Require(x, 4 * elements, "x");
        Require(output, 2 * elements, "the bf16 output");
        if (elements == 0) return;
        _convert ??= CudaDriver.GetFunction(GemmModule(), "convert_f32_bf16");
        long quads = (elements + 3) / 4;
        device.Launch(_convert, (checked((uint)((quads + GemmThreads - 1) / GemmThreads)), 1, 1), (GemmThreads, 1, 1),
            new CudaKernelArguments().Add(x).Add(output).Add(elements));
    }

    private void ProductFromBf16(bool inputGradient, CudaDeviceMemory xBf16, CudaDeviceMemory w, CudaDeviceMemory? bias, CudaDeviceMemory y, int n, int k, int m, float alpha, bool accumulate,
        LowRankTerm? lora)
    {
        int cols = inputGradient ? k : m;
        if (!inputGradient && (lora == null ? Sm90Forward : Sm90LoraEpilogue))
        {
            (_sm90 ??= CudaGemmSm90.FromEnvironment(device)).Forward(xBf16, w, bias, y, n, k, m, alpha, accumulate, lora);
            return;
        }
        if (inputGradient && Sm90InputGradientHere && (lora == null || Sm90LoraEpilogue))
        {
            // dx[n,k] = dy[n,m] W[m,k] = dy (W^T)^T: the forward product with W^T [k,m] as its weight, m deep.
            var wT = CudaScratch.AtLeast<ushort>(device, ref _wT, (long)m * k, 1L << 20);
            (_transpose ??= new CudaTranspose(device)).Transpose16(w, wT, m, k);
            (_sm90 ??= CudaGemmSm90.FromEnvironment(device)).Forward(xBf16, wT, null, y, n, m, k, alpha, accumulate, lora);
            return;
        }
        ref var gemm = ref inputGradient ? ref _gemmNn : ref _gemmNt;
        if (gemm == null)
        {
            gemm = CudaDriver.GetFunction(GemmModule(), inputGradient ? "gemm_bf16_nn" : "gemm_bf16_nt");
            CudaDriver.SetFunctionAttribute(gemm, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, GemmSharedBytes);
        }
        var args = new CudaKernelArguments().Add(xBf16).Add(w);
        if (!inputGradient) args.Add(bias?.Pointer ?? 0UL);
        args = AddLowRank(args.Add(y).Add(n).Add(k).Add(m).Add(alpha).Add(accumulate ? 1 : 0), lora);
        device.Launch(gemm, ((uint)((cols + Tile - 1) / Tile), (uint)((n + Tile - 1) / Tile), 1), (GemmThreads, 1, 1), args, GemmSharedBytes);
    }

    internal static CudaKernelArguments AddLowRank(CudaKernelArguments args, LowRankTerm? lora) => lora == null
        ? args.Add(0UL).Add(0UL).Add(0).Add(0).Add(0).Add(0f)
        : args.Add(lora.L).Add(lora.R).Add(lora.Rank).Add(lora.ColumnStride).Add(lora.RankStride).Add(lora.Scale);

    internal static void RequireLowRank(LowRankTerm lora, int rows, int cols, string op)
    {
        if (lora.Rank < 1 || lora.Rank > MaxLowRank || lora.ColumnStride < 0 || lora.RankStride < 0)
            throw new CudaException($"{op}: the LoRA term's rank must be 1 to {MaxLowRank} and its strides >= 0, not rank {lora.Rank}, strides {lora.ColumnStride}/{lora.RankStride}");
        Require(lora.L, 4L * rows * lora.Rank, "the LoRA term's L");
        Require(lora.R, 4L * (((long)cols - 1) * lora.ColumnStride + ((long)lora.Rank - 1) * lora.RankStride + 1), "the LoRA term's R");
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read("linear_bf16.ptx"), out _);
    private CudaModuleHandle GemmModule() => _gemmModule ??= device.LoadModule(KernelPtx.Read("gemm_bf16.ptx"), out _);

    internal static void Require(CudaDeviceMemory memory, long bytes, string what)
    {
        if (memory.ByteLength < bytes) throw new CudaException($"CudaLinear: {what} holds {memory.ByteLength} bytes, the sizes need {bytes}");
    }

    public void Dispose()
    {
        _module?.Dispose();
        _gemmModule?.Dispose();
        _sm90?.Dispose();
        _transpose?.Dispose();
        _nf4?.Dispose();
        _xBf16?.Dispose();
        _wT?.Dispose();
        _wNf4?.Dispose();
    }
}

/// <summary>The PTX compiled from cuda/*.cu and embedded in this assembly (Ptx/*.ptx).</summary>
public static class KernelPtx
{
    private const string Prefix = "Temper.Kernels.Cuda.Ptx.";

    public static IReadOnlyList<string> Names => EmbeddedPtx.NamesIn(typeof(KernelPtx).Assembly, Prefix);

    public static string Read(string ptxFileName) => EmbeddedPtx.Read(typeof(KernelPtx).Assembly, Prefix, ptxFileName);
}
