// The transpose of a row-major matrix of 16-bit elements (cuda/transpose_16.cu, embedded as Ptx/transpose_16.ptx):
//   Transpose16: output[C,R] = input[R,C]^T (bf16 weights: CudaLinear's sm_90a input gradient multiplies by W^T).
// Blocks of 256 threads per 64 x 64 tile; 8-byte accesses where R and C are multiples of 4.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaTranspose(CudaDevice device) : IDisposable
{
    private const int Tile = 64, Threads = 256;
    private CudaModuleHandle? _module;
    private CudaFunction? _transpose;

    /// <summary>output[c * rows + r] = input[r * cols + c] for 16-bit elements; the two must not overlap.</summary>
    public void Transpose16(CudaDeviceMemory input, CudaDeviceMemory output, int rows, int cols)
    {
        if (rows < 0 || cols < 0) throw new CudaException($"CudaTranspose.Transpose16: sizes must be >= 0, not rows {rows}, cols {cols}");
        CudaLinear.Require(input, 2L * rows * cols, "the input");
        CudaLinear.Require(output, 2L * rows * cols, "the output");
        if ((long)rows * cols == 0) return;
        _transpose ??= CudaDriver.GetFunction(_module ??= device.LoadModule(KernelPtx.Read("transpose_16.ptx"), out _), "transpose_16");
        device.Launch(_transpose, ((uint)((cols + Tile - 1) / Tile), (uint)((rows + Tile - 1) / Tile), 1), (Threads, 1, 1),
            new CudaKernelArguments().Add(input).Add(output).Add(rows).Add(cols));
    }

    public void Dispose() => _module?.Dispose();
}
