// SwiGLU, the oracle: y = silu(gate) * up with silu(g) = g / (1 + exp(-g)) (torch's form), all [N,F].
// Backward: dUp = dy * silu(g), dGate = dy * up * sigmoid(g) * (1 + g * (1 - sigmoid(g))).
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

    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> dGate, Span<float> dUp)
    {
        for (int i = 0; i < dy.Length; i++)
        {
            double g = gate[i], sig = 1 / (1 + Math.Exp(-g));
            dUp[i] = (float)(dy[i] * g * sig);
            dGate[i] = (float)(dy[i] * (double)up[i] * sig * (1 + g * (1 - sig)));
        }
    }
}
