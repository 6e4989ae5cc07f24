// SwiGLU, the oracle: y = silu(gate) * up with silu(g) = g / (1 + exp(-g)) (torch's form), all [N,F].
namespace Temper.Kernels.Cpu.Reference;

public static class SwiGluReference
{
    public static void Forward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        for (int i = 0; i < y.Length; i++)
        {
            float g = gate[i];
            y[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }
}
