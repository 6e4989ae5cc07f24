// SwiGLU, the oracle: y = silu(gate) * up with silu(g) = g / (1 + exp(-g)) (torch's form), all [N,F].
// Backward: dUp = dy * silu(g), dGate = dy * up * sigmoid(g) * (1 + g * (1 - sigmoid(g))).
// ForwardRounded (IBackend.SwiGluRounded): gate and up rounded to bf16 (nearest even) and kept, y from the rounded values.
using Temper.Core;

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

    public static void ForwardRounded(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y, Span<ushort> gateBf16, Span<ushort> upBf16)
    {
        for (int i = 0; i < y.Length; i++)
        {
            gateBf16[i] = BFloat16.FromSingle(gate[i]);
            upBf16[i] = BFloat16.FromSingle(up[i]);
            float g = BFloat16.ToSingle(gateBf16[i]);
            y[i] = g / (1f + MathF.Exp(-g)) * BFloat16.ToSingle(upBf16[i]);
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
