// RoPE (HF rotate_half layout), in place on x[N,H,D]: for row n at position p and i < D/2,
// angle = p * invFreq[i] (an f32 product, as torch computes it), c = cos(angle) * scaling,
// s = sign * sin(angle) * scaling:
//   x'[i] = x[i] c - x[i + D/2] s,   x'[i + D/2] = x[i + D/2] c + x[i] s.
// cos/sin are computed once per row and shared by its H heads; the rotation is SIMD over i with
// separate multiplies and adds (no FMA), so it matches the reference bit for bit. sign = -1 is the
// backward (transposed) rotation.
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
        fixed (float* px0 = x) fixed (int* pp0 = positions) fixed (float* pf0 = invFreq)
        {
            nint px = (nint)px0, pp = (nint)pp0, pf = (nint)pf0;
            StaticPartition.For(rows, StaticPartition.Parts(threads, rows, (long)rows * heads * d, 1 << 15), (r0, r1) =>
            {
                var cs = new float[2 * half];
                fixed (float* pcs = cs)
                {
                    float* cosv = pcs, sinv = pcs + half;
                    for (int n = r0; n < r1; n++)
                    {
                        int pos = ((int*)pp)[n];
                        for (int i = 0; i < half; i++)
                        {
                            float angle = pos * ((float*)pf)[i];
                            cosv[i] = MathF.Cos(angle) * scaling;
                            sinv[i] = sign * (MathF.Sin(angle) * scaling);
                        }
                        for (int h = 0; h < heads; h++) Rotate((float*)px + ((long)n * heads + h) * d, cosv, sinv, half);
                    }
                }
            });
        }
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
