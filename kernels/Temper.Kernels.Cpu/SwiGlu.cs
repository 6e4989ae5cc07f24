// SwiGLU: y = silu(gate) * up = gate / (1 + exp(-gate)) * up, all [N,F] flattened; SIMD exp.
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class SwiGlu
{
    public static void Forward(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y)
    {
        if (gate.Length != y.Length || up.Length != y.Length)
            throw new ArgumentException($"SwiGlu: gate has {gate.Length} values, up {up.Length}, y {y.Length}");
        int n = y.Length, i = 0;
        fixed (float* pg = gate) fixed (float* pu = up) fixed (float* py = y)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                for (; i <= n - 16; i += 16)
                {
                    var g = Vector512.Load(pg + i);
                    (g / (Vector512<float>.One + Vector512.Exp(-g)) * Vector512.Load(pu + i)).Store(py + i);
                }
            }
            if (Vector256.IsHardwareAccelerated)
            {
                for (; i <= n - 8; i += 8)
                {
                    var g = Vector256.Load(pg + i);
                    (g / (Vector256<float>.One + Vector256.Exp(-g)) * Vector256.Load(pu + i)).Store(py + i);
                }
            }
            if (Vector128.IsHardwareAccelerated)
            {
                for (; i <= n - 4; i += 4)
                {
                    var g = Vector128.Load(pg + i);
                    (g / (Vector128<float>.One + Vector128.Exp(-g)) * Vector128.Load(pu + i)).Store(py + i);
                }
            }
            for (; i < n; i++) py[i] = pg[i] / (1f + MathF.Exp(-pg[i])) * pu[i];
        }
    }
}
