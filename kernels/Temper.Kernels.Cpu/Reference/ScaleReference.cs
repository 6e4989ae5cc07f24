// In-place scale, the oracle: x *= s.
namespace Temper.Kernels.Cpu.Reference;

public static class ScaleReference
{
    public static void Apply(Span<float> x, float s)
    {
        for (int i = 0; i < x.Length; i++) x[i] *= s;
    }
}
