// SwiGLU: y = silu(gate) * up = gate / (1 + exp(-gate)) * up, all [N,F] flattened; SIMD exp.
// Backward: dUp = dy silu(g), dGate = dy up sigmoid(g) (1 + g (1 - sigmoid(g))).
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class SwiGlu
{
    // Compiled on its own: inlined into CpuBackend's element-wise lambda it left Vector512.Exp's helpers as calls
    // per vector (5x slower in the train step).
    [MethodImpl(MethodImplOptions.NoInlining)]
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

    /// <summary>dUp = dy silu(g); dGate = dy up sigmoid(g) (1 + g (1 - sigmoid(g))).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // as Forward
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> dGate, Span<float> dUp)
    {
        if (gate.Length != dy.Length || up.Length != dy.Length || dGate.Length != dy.Length || dUp.Length != dy.Length)
            throw new ArgumentException($"SwiGlu backward: dy has {dy.Length} values, gate {gate.Length}, up {up.Length}, dGate {dGate.Length}, dUp {dUp.Length}");
        int n = dy.Length, i = 0;
        fixed (float* pd = dy) fixed (float* pg = gate) fixed (float* pu = up) fixed (float* pdg = dGate) fixed (float* pdu = dUp)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                var one = Vector512<float>.One;
                for (; i <= n - 16; i += 16)
                {
                    Vector512<float> g = Vector512.Load(pg + i), d = Vector512.Load(pd + i);
                    var sig = one / (one + Vector512.Exp(-g));
                    (d * (g * sig)).Store(pdu + i);
                    (d * Vector512.Load(pu + i) * sig * (one + g * (one - sig))).Store(pdg + i);
                }
            }
            if (Vector256.IsHardwareAccelerated)
            {
                var one = Vector256<float>.One;
                for (; i <= n - 8; i += 8)
                {
                    Vector256<float> g = Vector256.Load(pg + i), d = Vector256.Load(pd + i);
                    var sig = one / (one + Vector256.Exp(-g));
                    (d * (g * sig)).Store(pdu + i);
                    (d * Vector256.Load(pu + i) * sig * (one + g * (one - sig))).Store(pdg + i);
                }
            }
            for (; i < n; i++)
            {
                float g = pg[i], sig = 1f / (1f + MathF.Exp(-g));
                pdu[i] = pd[i] * (g * sig);
                pdg[i] = pd[i] * pu[i] * sig * (1f + g * (1f - sig));
            }
        }
    }
}
