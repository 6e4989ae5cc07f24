// What the op files need from the backend: the accelerator, its stream, the per-call arena, the
// loaded kernels (each compiled once per accelerator on first use, then cached by name) and constant
// tables (code books) uploaded once and kept on the device.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu;

internal sealed class DeviceContext(Accelerator acc) : IDisposable
{
    private readonly Dictionary<string, Delegate> _kernels = [];
    private readonly Dictionary<string, MemoryBuffer1D<float, Stride1D.Dense>> _constants = [];

    public Accelerator Accelerator { get; } = acc;
    public AcceleratorStream Stream => Accelerator.DefaultStream;
    public DeviceArena Arena => _arena ??= new(Accelerator, () => ReleaseCachedMemory(), bytes => ArenaHeld(bytes));
    private DeviceArena? _arena;

    /// <summary>Told of every change in the bytes the arena holds (the backend's meter counts them).</summary>
    public Action<long> ArenaHeld { get; set; } = _ => { };

    /// <summary>Frees what the backend caches on this device (its tensor pool) when an allocation finds the device out of
    /// memory; says whether anything was freed. The arena's growth and the PTX kernels' own allocations call it.</summary>
    public Func<bool> ReleaseCachedMemory { get; set; } = () => false;

    /// <summary>Whether products with bf16/NF4 weights use tensor cores (TF32; CUDA only). Off unless
    /// TEMPER_TENSOR_CORES=1: on the H100 the tensor-core kernel (6.6 TFLOP/s) still trails the f32 one
    /// (12.6), since ILGPU routes inline-PTX outputs through local memory (docs/PERF.md).</summary>
    public bool TensorCores { get; set; } = acc.AcceleratorType == AcceleratorType.Cuda && Environment.GetEnvironmentVariable("TEMPER_TENSOR_CORES") == "1";

    /// <summary>The launcher for <paramref name="name"/>, loading (compiling) it on first use.</summary>
    public T Kernel<T>(string name, Func<Accelerator, T> load) where T : Delegate
    {
        if (!_kernels.TryGetValue(name, out var k))
        {
            k = load(Accelerator);
            _kernels[name] = k;
        }
        return (T)k;
    }

    /// <summary>The device copy of a constant table, uploaded on first use under <paramref name="name"/>.</summary>
    public ArrayView<float> Constant(string name, ReadOnlySpan<float> values)
    {
        if (!_constants.TryGetValue(name, out var buffer))
        {
            buffer = Accelerator.Allocate1D<float>(values.Length);
            buffer.View.CopyFromCPU(Stream, values);
            _constants[name] = buffer;
        }
        return buffer.View;
    }

    /// <summary>The CUDA C++ Linear (Temper.Kernels.Cuda) on this accelerator's context and stream, when
    /// PTX kernels are switched on (IlgpuBackend.PtxKernels; CUDA, or the CPU accelerator over the CUDA
    /// emulator: OpenPtxDevice); null otherwise.</summary>
    public Temper.Kernels.Cuda.CudaLinear? PtxLinear { get; private set; }

    /// <summary>The CUDA C++ attention forward and backward (D = 64, 128) beside PtxLinear; null when PTX kernels are off.</summary>
    public Temper.Kernels.Cuda.CudaAttention? PtxAttention { get; private set; }

    /// <summary>The CUDA C++ NF4 decoding (its code book is the NF4 Linear's) beside PtxLinear; null when PTX kernels are off.</summary>
    public Temper.Kernels.Cuda.CudaNf4? PtxNf4 { get; private set; }
    /// <summary>The CUDA C++ paged attention (D = 64, 128; f32) beside PtxLinear; null when PTX kernels are off.</summary>
    public Temper.Kernels.Cuda.CudaPagedAttention? PtxPagedAttention { get; private set; }
    /// <summary>The CUDA C++ RMSNorm, SwiGLU, RoPE and AdamW (f32) beside PtxLinear; null when PTX kernels are off.</summary>
    public Temper.Kernels.Cuda.CudaRmsNorm? PtxRmsNorm { get; private set; }
    public Temper.Kernels.Cuda.CudaSwiGlu? PtxSwiGlu { get; private set; }
    public Temper.Kernels.Cuda.CudaRope? PtxRope { get; private set; }
    public Temper.Kernels.Cuda.CudaAdamW? PtxAdamW { get; private set; }
    /// <summary>The CUDA C++ rank-r LoRA products (xa, dxa, dA, dB; f32) beside PtxLinear; null when PTX kernels are off.</summary>
    public Temper.Kernels.Cuda.CudaLoraRank? PtxLoraRank { get; private set; }

    /// <summary>Whether LoRA linears run their rank-r products on PtxLoraRank (when PTX kernels are on): opt-in
    /// (TEMPER_LORA_RANK=1) until a GPU has run CudaLoraRankChecks; checked so far on the CUDA emulator only.</summary>
    public bool LoraRankKernels { get; set; } = Environment.GetEnvironmentVariable("TEMPER_LORA_RANK") == "1";

    private Temper.Cuda.CudaDevice? _ptxDevice;

    /// <summary>The borrowed CUDA context the PTX kernels run in (null when they are off).</summary>
    public Temper.Cuda.Driver.CudaContextHandle? PtxContext => _ptxDevice?.Context;

    public bool PtxKernels
    {
        get => PtxLinear != null;
        set
        {
            if (value == PtxKernels) return;
            if (!value || OpenPtxDevice() is not { } device)
            {
                PtxLinear?.Dispose();
                PtxAttention?.Dispose();
                PtxNf4?.Dispose();
                PtxPagedAttention?.Dispose();
                PtxRmsNorm?.Dispose();
                PtxSwiGlu?.Dispose();
                PtxRope?.Dispose();
                PtxAdamW?.Dispose();
                PtxLoraRank?.Dispose();
                _ptxDevice?.Dispose();
                (PtxLinear, PtxAttention, PtxNf4, PtxPagedAttention, _ptxDevice) = (null, null, null, null, null);
                (PtxRmsNorm, PtxSwiGlu, PtxRope, PtxAdamW, PtxLoraRank) = (null, null, null, null, null);
                return;
            }
            _ptxDevice = device;
            _ptxDevice.ReleaseCachedMemory = () => ReleaseCachedMemory();
            PtxLinear = new Temper.Kernels.Cuda.CudaLinear(_ptxDevice);
            PtxAttention = new Temper.Kernels.Cuda.CudaAttention(_ptxDevice);
            PtxNf4 = new Temper.Kernels.Cuda.CudaNf4(_ptxDevice);
            PtxPagedAttention = new Temper.Kernels.Cuda.CudaPagedAttention(_ptxDevice);
            PtxRmsNorm = new Temper.Kernels.Cuda.CudaRmsNorm(_ptxDevice);
            PtxSwiGlu = new Temper.Kernels.Cuda.CudaSwiGlu(_ptxDevice);
            PtxRope = new Temper.Kernels.Cuda.CudaRope(_ptxDevice);
            PtxAdamW = new Temper.Kernels.Cuda.CudaAdamW(_ptxDevice);
            PtxLoraRank = new Temper.Kernels.Cuda.CudaLoraRank(_ptxDevice);
        }
    }

    /// <summary>The CUDA device the PTX kernels launch on: on ILGPU's CUDA accelerator its own context and
    /// stream (borrowed), so the kernels stay in order with ILGPU's. On ILGPU's CPU accelerator the CUDA
    /// emulator (TEMPER_CUDA_DRIVER=libtemper_cuda_emu.so), whose kernels dereference the host addresses
    /// of ILGPU's CPU buffers; no driver is loaded unless TEMPER_CUDA_DRIVER names one, and a real driver
    /// there is refused (its device could not read host buffers). Null: no PTX kernels here.
    /// Order on the CPU accelerator: ILGPU's CPU launches return only after every thread finished
    /// (CPUAccelerator.Launch waits on its multiprocessors' barrier), its copies and memsets are memcpy and
    /// InitBlock in the call, and the emulator runs each launch and copy inside the call too (emu/driver.cpp:
    /// streams are synchronous unless they capture). So each op, ILGPU's or the emulator's, has finished when
    /// it returns, and the next one sees its writes: no synchronisation is needed between the two.</summary>
    private Temper.Cuda.CudaDevice? OpenPtxDevice()
    {
        if (Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator cuda)
            return Temper.Cuda.CudaDevice.Borrow(cuda.NativePtr, cuda.DeviceId, ((ILGPU.Runtime.Cuda.CudaStream)cuda.DefaultStream).StreamPtr);
        if (Accelerator is not ILGPU.Runtime.CPU.CPUAccelerator || !EmulatorConfigured) return null;
        Temper.Cuda.CudaDevice device;
        try { device = Temper.Cuda.CudaDevice.Open(); }
        catch (Temper.Cuda.Driver.CudaException) { return null; } // a driver without a device: off, as without one
        if (device.IsEmulated) return device;
        device.Dispose();
        return null;
    }

    /// <summary>Whether TEMPER_CUDA_DRIVER names a driver library and it loads (the emulator, if anything
    /// on a CPU accelerator; CudaDevice.IsEmulated tells).</summary>
    private static bool EmulatorConfigured =>
        Environment.GetEnvironmentVariable(Temper.Cuda.Driver.CudaLibrary.OverrideVariable) is { Length: > 0 } && Temper.Cuda.Driver.CudaLibrary.IsAvailable;

    public void Dispose()
    {
        PtxKernels = false;
        foreach (var b in _constants.Values) b.Dispose();
        _constants.Clear();
        _arena?.Dispose();
    }
}
