// NF4, the oracle: element-by-element dequantisation (nf4[code] * absmax of its 64-block, the code
// read from its nibble: high for even indices, low for odd), and the NF4 linear as the f64 Linear
// reference over that dequantised matrix (forward y = x W^T + bias, input gradient dx = dy W).
using Temper.Core.Quantization;

namespace Temper.Kernels.Cpu.Reference;

public static class Nf4Reference
{
    public static float[] Dequantize(ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, long elements)
    {
        var w = new float[elements];
        for (long i = 0; i < elements; i++)
        {
            int b = packed[(int)(i / 2)];
            int code = i % 2 == 0 ? b >> 4 : b & 15;
            w[i] = (float)((double)Nf4CodeBook.Values[code] * absmax[(int)(i / Nf4Weight.BlockSize)]);
        }
        return w;
    }

    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, ReadOnlySpan<float> bias, Span<float> y, int n, int k, int m, bool accumulate) =>
        LinearReference.Forward(x, Dequantize(packed, absmax, (long)m * k), bias, y, n, k, m, accumulate);

    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<byte> packed, ReadOnlySpan<float> absmax, Span<float> dx, int n, int k, int m, bool accumulateDx) =>
        LinearReference.Backward(dy, default, Dequantize(packed, absmax, (long)m * k), dx, default, default, n, k, m, accumulateDx);
}
