// RMSNorm on the GPU (cuda/rmsnorm.cu, embedded as Ptx/rmsnorm.ptx), f32 rows of x[rows, c]:
//   Forward:  y = w[c] * (x * rstd), rstd[rows] = 1 / sqrt(mean(x^2) + eps) (rstd optional); y may alias x.
//   AddForward: sum = a + b, then Forward of sum, in one kernel (a residual add and the norm after it).
//   Backward: dx[rows, c] = rstd (dy w - xhat mean(dy w xhat)) (overwritten; may alias dy or x) and, when
//             given, dw[c] += sum_n dy xhat, without atomics (the same result run after run).
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Kernels.Cuda;

public sealed class CudaRmsNorm(CudaDevice device) : IDisposable
{
    private const int Threads = 256, WeightColumns = 32, WeightLanes = 8;
    private CudaModuleHandle? _module;
    private CudaFunction? _forward, _addForward, _backwardRows, _backwardWeight;

    public void Forward(CudaDeviceMemory x, CudaDeviceMemory weight, float eps, CudaDeviceMemory y, CudaDeviceMemory? rstd, int rows, int c)
    {
        RequireRows(x, weight, y, rows, c, "Forward");
        if (rstd != null) CudaLinear.Require(rstd, 4L * rows, "rstd");
        if (rows == 0 || c == 0) return;
        _forward ??= CudaDriver.GetFunction(Module(), "rmsnorm_forward");
        var args = new CudaKernelArguments().Add(x).Add(weight).Add(y).Add(rstd?.Pointer ?? 0UL).Add(c).Add(eps);
        device.Launch(_forward, ((uint)rows, 1, 1), (Threads, 1, 1), args);
    }

    /// <summary>sum = a + b, then Forward(sum, ...) in one kernel: the same bits as the add then the norm (sum may alias a or b).</summary>
    public void AddForward(CudaDeviceMemory a, CudaDeviceMemory b, CudaDeviceMemory sum, CudaDeviceMemory weight, float eps, CudaDeviceMemory y, CudaDeviceMemory? rstd, int rows, int c)
    {
        RequireRows(a, weight, y, rows, c, "AddForward");
        CudaLinear.Require(b, 4L * rows * c, "b");
        CudaLinear.Require(sum, 4L * rows * c, "sum");
        if (rstd != null) CudaLinear.Require(rstd, 4L * rows, "rstd");
        if (rows == 0 || c == 0) return;
        _addForward ??= CudaDriver.GetFunction(Module(), "rmsnorm_add_forward");
        var args = new CudaKernelArguments().Add(a).Add(b).Add(sum).Add(weight).Add(y).Add(rstd?.Pointer ?? 0UL).Add(c).Add(eps);
        device.Launch(_addForward, ((uint)rows, 1, 1), (Threads, 1, 1), args);
    }

    public void Backward(CudaDeviceMemory dy, CudaDeviceMemory x, CudaDeviceMemory weight, CudaDeviceMemory rstd, CudaDeviceMemory dx, CudaDeviceMemory? dWeight, int rows, int c,
        bool accumulate = false)
    {
        RequireRows(x, weight, dx, rows, c, "Backward");
        CudaLinear.Require(dy, 4L * rows * c, "dy");
        CudaLinear.Require(rstd, 4L * rows, "rstd");
        if (dWeight != null) CudaLinear.Require(dWeight, 4L * c, "dWeight");
        if (rows == 0 || c == 0) return;
        if (dWeight != null)
        {
            // Before dx, which may alias dy or x.
            _backwardWeight ??= CudaDriver.GetFunction(Module(), "rmsnorm_backward_weight");
            var wargs = new CudaKernelArguments().Add(dy).Add(x).Add(rstd).Add(dWeight).Add(rows).Add(c);
            device.Launch(_backwardWeight, ((uint)((c + WeightColumns - 1) / WeightColumns), 1, 1), (WeightColumns, WeightLanes, 1), wargs);
        }
        _backwardRows ??= CudaDriver.GetFunction(Module(), "rmsnorm_backward_rows");
        var args = new CudaKernelArguments().Add(dy).Add(x).Add(weight).Add(rstd).Add(dx).Add(c).Add(accumulate ? 1 : 0);
        device.Launch(_backwardRows, ((uint)rows, 1, 1), (Threads, 1, 1), args);
    }

    private static void RequireRows(CudaDeviceMemory x, CudaDeviceMemory weight, CudaDeviceMemory y, int rows, int c, string op)
    {
        if (rows < 0 || c < 0) throw new CudaException($"CudaRmsNorm.{op}: rows and c must be >= 0, not {rows} and {c}");
        CudaLinear.Require(x, 4L * rows * c, "x");
        CudaLinear.Require(weight, 4L * c, "weight");
        CudaLinear.Require(y, 4L * rows * c, "the output");
    }

    private CudaModuleHandle Module() => _module ??= device.LoadModule(KernelPtx.Read("rmsnorm.ptx"), out _);

    public void Dispose() => _module?.Dispose();
}
