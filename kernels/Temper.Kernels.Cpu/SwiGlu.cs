// SwiGLU: y = silu(gate) * up = gate / (1 + exp(-gate)) * up, all [N,F] flattened; SIMD exp.
// Backward: dUp = dy silu(g), dGate = dy up sigmoid(g) (1 + g (1 - sigmoid(g))).
// The bf16 forms (gate and up kept in bf16, IBackend.SwiGluRounded) widen Chunk values at a time into the stack and run
// the f32 kernels on them; ForwardRounded first rounds gate and up to bf16 (nearest even) and writes them out.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Temper.Core;

namespace Temper.Kernels.Cpu;

public static unsafe class SwiGlu
{
    private const int Chunk = 1024;

    /// <summary>y = silu(gate) * up with gate and up in bf16.</summary>
    public static void Forward(ReadOnlySpan<ushort> gate, ReadOnlySpan<ushort> up, Span<float> y)
    {
        if (gate.Length != y.Length || up.Length != y.Length)
            throw new ArgumentException($"SwiGlu: gate has {gate.Length} values, up {up.Length}, y {y.Length}");
        Span<float> g = stackalloc float[Chunk], u = stackalloc float[Chunk];
        for (int i = 0; i < y.Length; i += Chunk)
        {
            int l = Widen(gate, up, i, g, u);
            Forward(g[..l], u[..l], y.Slice(i, l));
        }
    }

    /// <summary>gateBf16, upBf16 = gate, up rounded to bf16; y = silu(gateBf16) * upBf16 (y may alias gate or up).</summary>
    public static void ForwardRounded(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> y, Span<ushort> gateBf16, Span<ushort> upBf16)
    {
        if (gate.Length != y.Length || up.Length != y.Length || gateBf16.Length != y.Length || upBf16.Length != y.Length)
            throw new ArgumentException($"SwiGlu: gate has {gate.Length} values, up {up.Length}, y {y.Length}, gateBf16 {gateBf16.Length}, upBf16 {upBf16.Length}");
        for (int i = 0; i < y.Length; i += Chunk)
        {
            int l = Math.Min(Chunk, y.Length - i);
            BFloat16.FromSingle(gate.Slice(i, l), gateBf16.Slice(i, l));
            BFloat16.FromSingle(up.Slice(i, l), upBf16.Slice(i, l));
            Forward(gateBf16.Slice(i, l), upBf16.Slice(i, l), y.Slice(i, l));
        }
    }

    /// <summary>Backward with gate and up in bf16 (dGate may alias dy).</summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<ushort> gate, ReadOnlySpan<ushort> up, Span<float> dGate, Span<float> dUp)
    {
        if (gate.Length != dy.Length || up.Length != dy.Length || dGate.Length != dy.Length || dUp.Length != dy.Length)
            throw new ArgumentException($"SwiGlu backward: dy has {dy.Length} values, gate {gate.Length}, up {up.Length}, dGate {dGate.Length}, dUp {dUp.Length}");
        Span<float> g = stackalloc float[Chunk], u = stackalloc float[Chunk];
        for (int i = 0; i < dy.Length; i += Chunk)
        {
            int l = Widen(gate, up, i, g, u);
            Backward(dy.Slice(i, l), g[..l], u[..l], dGate.Slice(i, l), dUp.Slice(i, l));
        }
    }

    // The chunk of gate and up from i widened into g and u; returns its length.
    private static int Widen(ReadOnlySpan<ushort> gate, ReadOnlySpan<ushort> up, int i, Span<float> g, Span<float> u)
    {
        int l = Math.Min(Chunk, gate.Length - i);
        fixed (ushort* pg = gate.Slice(i, l)) fixed (ushort* pu = up.Slice(i, l)) fixed (float* wg = g) fixed (float* wu = u)
        {
            Bf16.Widen(pg, wg, l);
            Bf16.Widen(pu, wu, l);
        }
        return l;
    }

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
