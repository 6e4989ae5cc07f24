// Span reductions shared by the kernels (dot product, sum of squares, max, sum), each with
// Vector512/256/128 paths and a scalar tail. The order of a sum depends only on the length, never on
// the thread running it.
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

internal static unsafe class Reductions
{
    /// <summary>sum_i a[i] b[i] in f32.</summary>
    public static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            Vector512<float> s0 = Vector512<float>.Zero, s1 = Vector512<float>.Zero;
            for (; i <= n - 32; i += 32)
            {
                s0 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
                s1 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i + 16), Vector512.Load(b + i + 16), s1);
            }
            if (i <= n - 16)
            {
                s0 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
                i += 16;
            }
            sum = Vector512.Sum(s0 + s1);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            Vector256<float> s0 = Vector256<float>.Zero, s1 = Vector256<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                s0 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
                s1 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), s1);
            }
            if (i <= n - 8)
            {
                s0 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
                i += 8;
            }
            sum = Vector256.Sum(s0 + s1);
        }
        else if (Vector128.IsHardwareAccelerated && n >= 4)
        {
            Vector128<float> s0 = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4) s0 = Vector128.FusedMultiplyAdd(Vector128.Load(a + i), Vector128.Load(b + i), s0);
            sum = Vector128.Sum(s0);
        }
        for (; i < n; i++) sum = MathF.FusedMultiplyAdd(a[i], b[i], sum);
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float SumOfSquares(float* a, int n) => Dot(a, a, n);

    /// <summary>max_i a[i] (-inf for n = 0).</summary>
    public static float Max(float* a, int n)
    {
        int i = 0;
        float max = float.NegativeInfinity;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var m = Vector512.Create(float.NegativeInfinity);
            for (; i <= n - 16; i += 16) m = Vector512.Max(m, Vector512.Load(a + i));
            for (int l = 0; l < 16; l++) max = MathF.Max(max, m[l]);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var m = Vector256.Create(float.NegativeInfinity);
            for (; i <= n - 8; i += 8) m = Vector256.Max(m, Vector256.Load(a + i));
            for (int l = 0; l < 8; l++) max = MathF.Max(max, m[l]);
        }
        else if (Vector128.IsHardwareAccelerated && n >= 4)
        {
            var m = Vector128.Create(float.NegativeInfinity);
            for (; i <= n - 4; i += 4) m = Vector128.Max(m, Vector128.Load(a + i));
            for (int l = 0; l < 4; l++) max = MathF.Max(max, m[l]);
        }
        for (; i < n; i++) max = MathF.Max(max, a[i]);
        return max;
    }

    /// <summary>a[i] = exp(a[i] - shift) in place; returns the sum of the new values.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // compiled on its own, with room to inline Vector512.Exp's helpers
    public static float ExpShiftedInPlace(float* a, int n, float shift)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var sh = Vector512.Create(shift);
            var s = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var e = Vector512.Exp(Vector512.Load(a + i) - sh);
                e.Store(a + i);
                s += e;
            }
            sum = Vector512.Sum(s);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var sh = Vector256.Create(shift);
            var s = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8)
            {
                var e = Vector256.Exp(Vector256.Load(a + i) - sh);
                e.Store(a + i);
                s += e;
            }
            sum = Vector256.Sum(s);
        }
        else if (Vector128.IsHardwareAccelerated && n >= 4)
        {
            var sh = Vector128.Create(shift);
            var s = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4)
            {
                var e = Vector128.Exp(Vector128.Load(a + i) - sh);
                e.Store(a + i);
                s += e;
            }
            sum = Vector128.Sum(s);
        }
        for (; i < n; i++)
        {
            a[i] = MathF.Exp(a[i] - shift);
            sum += a[i];
        }
        return sum;
    }

    /// <summary>sum_i exp(a[i] - shift), a unchanged.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)] // compiled on its own, with room to inline Vector512.Exp's helpers
    public static float SumExpShifted(float* a, int n, float shift)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var sh = Vector512.Create(shift);
            Vector512<float> s0 = Vector512<float>.Zero, s1 = Vector512<float>.Zero;
            for (; i <= n - 32; i += 32)
            {
                s0 += Vector512.Exp(Vector512.Load(a + i) - sh);
                s1 += Vector512.Exp(Vector512.Load(a + i + 16) - sh);
            }
            if (i <= n - 16)
            {
                s0 += Vector512.Exp(Vector512.Load(a + i) - sh);
                i += 16;
            }
            sum = Vector512.Sum(s0 + s1);
        }
        else if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var sh = Vector256.Create(shift);
            var s = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8) s += Vector256.Exp(Vector256.Load(a + i) - sh);
            sum = Vector256.Sum(s);
        }
        else if (Vector128.IsHardwareAccelerated && n >= 4)
        {
            var sh = Vector128.Create(shift);
            var s = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4) s += Vector128.Exp(Vector128.Load(a + i) - sh);
            sum = Vector128.Sum(s);
        }
        for (; i < n; i++) sum += MathF.Exp(a[i] - shift);
        return sum;
    }
}
