// SwiGLU on the GPU (cuda/swiglu.cu, embedded as Ptx/swiglu.ptx) over n f32 elements of [N,F] tensors:
//   Forward:  y = silu(gate) * up (y may alias gate or up).
//   Backward: dUp = dy silu(gate), dGate = dy up sig(gate) (1 + gate (1 - sig(gate))), both overwritten.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaSwiGlu(CudaDevice device) : IDisposable
{
    private const int Threads = 256;
    private CudaModuleHandle? _module;
    private CudaFunction? _forward, _backward;

    public void Forward(CudaDeviceMemory gate, CudaDeviceMemory up, CudaDeviceMemory y, long n)
    {
        Require(n, "Forward", (gate, "gate"), (up, "up"), (y, "y"));
        if (n == 0) return;
        _forward ??= CudaDriver.GetFunction(Module(), "swiglu_forward");
        device.Launch(_forward, Grid(n), (Threads, 1, 1), new CudaKernelArguments().Add(gate).Add(up).Add(y).Add(n));
    }

    public void Backward(CudaDeviceMemory dy, CudaDeviceMemory gate, CudaDeviceMemory up, CudaDeviceMemory dGate, CudaDeviceMemory dUp, long n)
    {
        Require(n, "Backward", (dy, "dy"), (gate, "gate"), (up, "up"), (dGate, "dGate"), (dUp, "dUp"));
        if (n == 0) return;
        _backward ??= CudaDriver.GetFunction(Module(), "swiglu_backward");
        device.Launch(_backward, Grid(n), (Threads, 1, 1), new CudaKernelArguments().Add(dy).Add(gate).Add(up).Add(dGate).Add(dUp).Add(n));
    }

    private static (uint, uint, uint) Grid(long n)
    {
        long blocks = ((n + 3) / 4 + Threads - 1) / Threads;
        if (blocks > uint.MaxValue) throw new CudaException($"CudaSwiGlu: {n} elements are more than one launch takes");
        return ((uint)blocks, 1, 1);
    }

    private static void Require(long n, string op, params (CudaDeviceMemory Memory, string Name)[] buffers)
    {
        if (n < 0) throw new CudaException($"CudaSwiGlu.{op}: n must be >= 0, not {n}");
        foreach (var (memory, name) in buffers) CudaLinear.Require(memory, 4 * n, name);
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read("swiglu.ptx"), out _);

    public void Dispose() => _module?.Dispose();
}
