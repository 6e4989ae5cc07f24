// Residual add, the oracle: y = a + b elementwise (y may alias a).
namespace Temper.Kernels.Cpu.Reference;

public static class AddReference
{
    public static void Forward(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++) y[i] = a[i] + b[i];
    }
}
