// Seeded inputs and tolerance checks for the op-check suite: every fast kernel is compared with its
// scalar reference by normalised MSE (sum (a-b)^2 / sum b^2) or by max relative error.
using Temper.Core;

namespace Temper.Kernels.Tests;

public static class OpCheck
{
    /// <summary>f32 tolerance on normalised MSE: a relative RMS error of about 1e-5.</summary>
    public const double F32Nmse = 1e-10;

    /// <summary>Heavy tests shrink when CI=true.</summary>
    public static bool Ci => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    public static float[] Floats(int n, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var r = new float[n];
        for (int i = 0; i < n; i++) r[i] = (float)(rng.NextDouble() * 2 - 1) * scale;
        return r;
    }

    public static int[] Ints(int n, int seed, int maxExclusive)
    {
        var rng = new Random(seed);
        var r = new int[n];
        for (int i = 0; i < n; i++) r[i] = rng.Next(maxExclusive);
        return r;
    }

    /// <summary>Rounds to bf16 and back, so a bf16 tensor and its f32 widening hold the same values.</summary>
    public static ushort[] ToBf16(float[] f)
    {
        var r = new ushort[f.Length];
        BFloat16.FromSingle(f, r);
        return r;
    }

    public static float[] Widen(ushort[] b)
    {
        var r = new float[b.Length];
        BFloat16.ToSingle(b, r);
        return r;
    }

    public static double Nmse(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        Assert.Equal(expected.Length, actual.Length);
        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (float.IsNaN(actual[i]) != float.IsNaN(expected[i]) || (float.IsInfinity(expected[i]) && actual[i] != expected[i])) return double.PositiveInfinity;
            if (float.IsNaN(expected[i]) || float.IsInfinity(expected[i])) continue;
            double d = (double)actual[i] - expected[i];
            num += d * d;
            den += (double)expected[i] * expected[i];
        }
        return den == 0 ? num : num / den;
    }

    public static void Close(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, string what, double nmse = F32Nmse)
    {
        double e = Nmse(actual, expected);
        Assert.True(e <= nmse, $"{what}: normalised MSE {e:E2} > {nmse:E0}");
    }

    /// <summary>Every element within rel * max(|expected|, floor) of the expected value.</summary>
    public static void CloseEach(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, string what, double rel = 1e-5, double floor = 1e-6)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            if (float.IsNegativeInfinity(expected[i]) || float.IsPositiveInfinity(expected[i]))
            {
                Assert.True(actual[i] == expected[i], $"{what}[{i}]: {actual[i]} != {expected[i]}");
                continue;
            }
            double err = Math.Abs((double)actual[i] - expected[i]);
            double tol = rel * Math.Max(Math.Abs(expected[i]), floor);
            Assert.True(err <= tol, $"{what}[{i}]: {actual[i]:R} vs {expected[i]:R} (error {err:E2} > {tol:E2})");
        }
    }

    public static void Bitwise(ReadOnlySpan<float> a, ReadOnlySpan<float> b, string what)
    {
        Assert.Equal(a.Length, b.Length);
        for (int i = 0; i < a.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(a[i]) == BitConverter.SingleToInt32Bits(b[i]), $"{what}[{i}]: {a[i]:R} != {b[i]:R}");
    }

    public static Tensor T(float[] values, params int[] shape) => Tensor.FromFloats(new Shape(shape), values);
    public static Tensor Bf16(ushort[] values, params int[] shape) => Tensor.FromArray<ushort>(new Shape(shape), values, DType.BF16);
}
