// SwiGLU on the GPU (cuda/swiglu.cu, embedded as Ptx/swiglu.ptx) over n elements of [N,F] tensors, y and gradients f32:
//   Forward:         y = silu(gate) * up, gate and up f32 (y may alias gate or up) or, ForwardBf16, bf16.
//   ForwardRounded:  gate and up f32 rounded to bf16 into gateBf16 and upBf16, y from the rounded values (y may alias gate or up).
//   Backward:        dUp = dy silu(gate), dGate = dy up sig(gate) (1 + gate (1 - sig(gate))), both overwritten; BackwardBf16: gate
//                    and up in bf16.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaSwiGlu(CudaDevice device) : IDisposable
{
    private const int Threads = 256;
    private CudaModuleHandle? _module;
    private CudaFunction? _forward, _forwardBf16, _forwardRounded, _backward, _backwardBf16;

    public void Forward(CudaDeviceMemory gate, CudaDeviceMemory up, CudaDeviceMemory y, long n) =>
        Run(ref _forward, "swiglu_forward", n, [(gate, "gate", 4), (up, "up", 4), (y, "y", 4)]);

    public void ForwardBf16(CudaDeviceMemory gate, CudaDeviceMemory up, CudaDeviceMemory y, long n) =>
        Run(ref _forwardBf16, "swiglu_forward_bf16", n, [(gate, "gate", 2), (up, "up", 2), (y, "y", 4)]);

    public void ForwardRounded(CudaDeviceMemory gate, CudaDeviceMemory up, CudaDeviceMemory y, CudaDeviceMemory gateBf16, CudaDeviceMemory upBf16, long n) =>
        Run(ref _forwardRounded, "swiglu_forward_rounded", n, [(gate, "gate", 4), (up, "up", 4), (y, "y", 4), (gateBf16, "gateBf16", 2), (upBf16, "upBf16", 2)]);

    public void Backward(CudaDeviceMemory dy, CudaDeviceMemory gate, CudaDeviceMemory up, CudaDeviceMemory dGate, CudaDeviceMemory dUp, long n) =>
        Run(ref _backward, "swiglu_backward", n, [(dy, "dy", 4), (gate, "gate", 4), (up, "up", 4), (dGate, "dGate", 4), (dUp, "dUp", 4)]);

    public void BackwardBf16(CudaDeviceMemory dy, CudaDeviceMemory gate, CudaDeviceMemory up, CudaDeviceMemory dGate, CudaDeviceMemory dUp, long n) =>
        Run(ref _backwardBf16, "swiglu_backward_bf16", n, [(dy, "dy", 4), (gate, "gate", 2), (up, "up", 2), (dGate, "dGate", 4), (dUp, "dUp", 4)]);

    // The kernel's buffers in its parameter order, then n.
    private void Run(ref CudaFunction? function, string kernel, long n, (CudaDeviceMemory Memory, string Name, int ElementBytes)[] buffers)
    {
        if (n < 0) throw new CudaException($"CudaSwiGlu {kernel}: n must be >= 0, not {n}");
        var args = new CudaKernelArguments();
        foreach (var (memory, name, bytes) in buffers)
        {
            CudaLinear.Require(memory, bytes * n, name);
            args.Add(memory);
        }
        if (n == 0) return;
        function ??= CudaDriver.GetFunction(Module(), kernel);
        long blocks = ((n + 3) / 4 + Threads - 1) / Threads;
        if (blocks > uint.MaxValue) throw new CudaException($"CudaSwiGlu: {n} elements are more than one launch takes");
        device.Launch(function, ((uint)blocks, 1, 1), (Threads, 1, 1), args.Add(n));
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read("swiglu.ptx"), out _);

    public void Dispose() => _module?.Dispose();
}
