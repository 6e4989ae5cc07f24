// RoPE on the GPU (cuda/rope.cu, embedded as Ptx/rope.ptx), in place on x[rows, heads, 2 half] f32 (HF
// rotate_half): each row turned by the angles of its position, cos and sin read from tables [P, half]
// the caller built (Temper.Kernels.Ilgpu's RopeTables); positions[rows] (device ints) must be < P, which
// the caller guarantees as it sizes the tables. sign = +1 forward, -1 backward (the transposed rotation).
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaRope(CudaDevice device) : IDisposable
{
    private const int Threads = 256;
    private CudaModuleHandle? _module;
    private CudaFunction? _apply;

    public void Apply(CudaDeviceMemory x, CudaDeviceMemory positions, CudaDeviceMemory cos, CudaDeviceMemory sin, int rows, int heads, int half, float sign)
    {
        if (rows < 0 || heads < 0 || half < 0) throw new CudaException($"CudaRope.Apply: rows, heads and half must be >= 0, not {rows}, {heads}, {half}");
        long pairs = (long)rows * heads * half;
        CudaLinear.Require(x, 8 * pairs, "x");
        CudaLinear.Require(positions, 4L * rows, "positions");
        CudaLinear.Require(cos, 4L * half, "the cos table");
        CudaLinear.Require(sin, 4L * half, "the sin table");
        if (pairs == 0) return;
        int width = half % 4 == 0 && ((x.Pointer | cos.Pointer | sin.Pointer) & 15) == 0 ? 4 : 1;
        long threads = pairs / width;
        if ((threads + Threads - 1) / Threads > uint.MaxValue) throw new CudaException($"CudaRope.Apply: {pairs} pairs are more than one launch takes");
        _apply ??= CudaDriver.GetFunction(Module(), "rope_apply");
        var args = new CudaKernelArguments().Add(x).Add(positions).Add(cos).Add(sin).Add(heads).Add(half).Add(sign).Add(width).Add(threads);
        device.Launch(_apply, ((uint)((threads + Threads - 1) / Threads), 1, 1), (Threads, 1, 1), args);
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read("rope.ptx"), out _);

    public void Dispose() => _module?.Dispose();
}
