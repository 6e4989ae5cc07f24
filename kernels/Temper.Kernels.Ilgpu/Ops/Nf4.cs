// NF4 on the device (QLoRA base weights). Absmax decodes the double-quantised block scales, one thread
// per 64-block: absmax[b] = dyn[q[b]] * scale[b/256] + offset (two f32 roundings on the CPU
// accelerator; a CUDA build may contract them into one FMA, which moves an absmax by at most an ulp).
// Nf4Weights is the GEMM's weight operand over the packed codes: element i is
// lut[nibble(i)] * absmax[i/64], decoded as the kernel reads it, so the linear ops reuse Gemm's tiled
// kernel for NT (forward y = x W^T) and NN (input gradient dx = dy W) and never hold the dequantised matrix.
// Dequantize writes the whole f32 matrix (for checks and merging), one thread per element.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal readonly struct Nf4Weights(ArrayView<byte> codes, ArrayView<float> absmax, ArrayView<float> lut) : IWeights
{
    private readonly ArrayView<byte> _codes = codes;
    private readonly ArrayView<float> _absmax = absmax;
    private readonly ArrayView<float> _lut = lut;

    public float Get(int i)
    {
        int b = _codes[i >> 1];
        int code = (i & 1) == 0 ? b >> 4 : b & 15;
        return _lut[code] * _absmax[i >> 6];
    }
}

internal static class Nf4
{
    public static void AbsmaxKernel(Index1D b, ArrayView<byte> q, ArrayView<float> scales, ArrayView<float> dyn, float offset, ArrayView<float> absmax)
    {
        int block = b;
        float scaled = dyn[(int)q[block]] * scales[block >> 8];
        absmax[block] = scaled + offset;
    }

    public static void DequantizeKernel(Index1D i, Nf4Weights w, ArrayView<float> output) => output[i] = w.Get(i);

    public static void Absmax(DeviceContext dc, ArrayView<byte> q, ArrayView<float> scales, ArrayView<float> dyn, float offset, ArrayView<float> absmax, int blocks)
    {
        if (blocks == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<byte>, ArrayView<float>, ArrayView<float>, float, ArrayView<float>>>("nf4.absmax",
            a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<byte>, ArrayView<float>, ArrayView<float>, float, ArrayView<float>>(AbsmaxKernel))(blocks, q, scales, dyn, offset, absmax);
    }

    public static void Dequantize(DeviceContext dc, Nf4Weights w, ArrayView<float> output, int n)
    {
        if (n == 0) return;
        dc.Kernel<Action<Index1D, Nf4Weights, ArrayView<float>>>("nf4.dequantize",
            a => a.LoadAutoGroupedStreamKernel<Index1D, Nf4Weights, ArrayView<float>>(DequantizeKernel))(n, w, output);
    }

    /// <summary>y[N,M] = (accumulate ? y : 0) + x w^T + bias.</summary>
    public static void Forward(DeviceContext dc, ArrayView<float> x, Nf4Weights w, ArrayView<float>? bias, ArrayView<float> y, int n, int k, int m, bool accumulate) =>
        Gemm.NT(dc, x, w, bias, y, n, k, m, 1f, accumulate);

    /// <summary>dx[N,K] = (accumulate ? dx : 0) + dy[N,M] w[M,K].</summary>
    public static void Backward(DeviceContext dc, ArrayView<float> dy, Nf4Weights w, ArrayView<float> dx, int n, int k, int m, bool accumulate) =>
        Gemm.NN(dc, dy, w, dx, n, k, m, 1f, accumulate);
}
