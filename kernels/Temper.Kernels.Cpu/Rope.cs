// RoPE (HF rotate_half layout), in place on x[N,H,D]: for row n at position p and i < D/2,
// angle = p * invFreq[i] (an f32 product, as torch computes it), c = cos(angle) * scaling,
// s = sign * sin(angle) * scaling:
//   x'[i] = x[i] c - x[i + D/2] s,   x'[i + D/2] = x[i + D/2] c + x[i] s.
// cos/sin are computed once per row and shared by its H heads, and kept for the next call at the same
// positions (the other layers, k after q, the backward); the rotation is SIMD over i with separate multiplies
// and adds (no FMA), so it matches the reference bit for bit. sign = -1 is the backward (transposed) rotation.
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class Rope
{
    public static void Forward(Span<float> x, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scaling, int heads, int threads = 1, float sign = 1f)
    {
        int half = invFreq.Length, d = 2 * half;
        if (half == 0 || heads <= 0 || x.Length != positions.Length * heads * d)
            throw new ArgumentException($"Rope: x has {x.Length} values, expected {positions.Length} positions x {heads} heads x {d}");
        int rows = positions.Length;
        var table = TableFor(positions, invFreq, scaling, threads);
        fixed (float* px0 = x) fixed (float* pc0 = table.Cos) fixed (float* ps0 = table.Sin)
        {
            nint px = (nint)px0, pc = (nint)pc0, ps = (nint)ps0;
            StaticPartition.For(rows, StaticPartition.Parts(threads, rows, (long)rows * heads * d, 1 << 15), (r0, r1) =>
            {
                var negated = sign < 0 ? new float[half] : null;
                fixed (float* pn = negated)
                    for (int n = r0; n < r1; n++)
                    {
                        float* cosv = (float*)pc + (long)n * half, sinv = (float*)ps + (long)n * half;
                        if (pn != null)
                        {
                            for (int i = 0; i < half; i++) pn[i] = -sinv[i]; // sign * (sin scaling), exact
                            sinv = pn;
                        }
                        for (int h = 0; h < heads; h++) Rotate((float*)px + ((long)n * heads + h) * d, cosv, sinv, half);
                    }
            });
        }
    }

    // cos(angle) * scaling and sin(angle) * scaling for every row and frequency, [rows, D/2] each. A model's layers
    // rotate q and k at the same positions, forward and backward, so the last table is kept and reused while the
    // positions, frequencies and scaling are the same (the values are those computed per call before, bit for bit).
    private sealed class Table(int[] positions, float[] invFreq, float scaling, float[] cos, float[] sin)
    {
        public readonly int[] Positions = positions;
        public readonly float[] InvFreq = invFreq, Cos = cos, Sin = sin;
        public readonly float Scaling = scaling;

        public bool Matches(ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scaling) =>
            scaling.Equals(Scaling) && positions.SequenceEqual(Positions) && invFreq.SequenceEqual(InvFreq);
    }

    private static volatile Table? _last;

    private static Table TableFor(ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scaling, int threads)
    {
        var last = _last;
        if (last != null && last.Matches(positions, invFreq, scaling)) return last;
        int rows = positions.Length, half = invFreq.Length;
        var table = new Table(positions.ToArray(), invFreq.ToArray(), scaling, new float[rows * half], new float[rows * half]);
        StaticPartition.For(rows, StaticPartition.Parts(threads, rows, (long)rows * half * 32, 1 << 15), (r0, r1) =>
        {
            for (int n = r0; n < r1; n++)
                for (int i = 0; i < half; i++)
                {
                    float angle = table.Positions[n] * table.InvFreq[i];
                    table.Cos[n * half + i] = MathF.Cos(angle) * scaling;
                    table.Sin[n * half + i] = MathF.Sin(angle) * scaling;
                }
        });
        _last = table;
        return table;
    }

    private static void Rotate(float* x, float* cosv, float* sinv, int half)
    {
        float* x2 = x + half;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= half - 16; i += 16)
            {
                Vector512<float> a = Vector512.Load(x + i), b = Vector512.Load(x2 + i), c = Vector512.Load(cosv + i), s = Vector512.Load(sinv + i);
                (a * c - b * s).Store(x + i);
                (b * c + a * s).Store(x2 + i);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= half - 8; i += 8)
            {
                Vector256<float> a = Vector256.Load(x + i), b = Vector256.Load(x2 + i), c = Vector256.Load(cosv + i), s = Vector256.Load(sinv + i);
                (a * c - b * s).Store(x + i);
                (b * c + a * s).Store(x2 + i);
            }
        }
        if (Vector128.IsHardwareAccelerated)
        {
            for (; i <= half - 4; i += 4)
            {
                Vector128<float> a = Vector128.Load(x + i), b = Vector128.Load(x2 + i), c = Vector128.Load(cosv + i), s = Vector128.Load(sinv + i);
                (a * c - b * s).Store(x + i);
                (b * c + a * s).Store(x2 + i);
            }
        }
        for (; i < half; i++)
        {
            float a = x[i], b = x2[i];
            x[i] = a * cosv[i] - b * sinv[i];
            x2[i] = b * cosv[i] + a * sinv[i];
        }
    }

    /// <summary>The transpose of the rotation: dx[N,H,D] rotated in place by minus the angles.</summary>
    public static void Backward(Span<float> dx, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, float scaling, int heads, int threads = 1) =>
        Forward(dx, positions, invFreq, scaling, heads, threads, sign: -1f);
}
