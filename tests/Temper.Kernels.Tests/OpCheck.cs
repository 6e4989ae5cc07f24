// Tolerance checks for the op-check suite beside the shared ones (tests/Shared/OpTolerance.cs: seeded
// inputs, normalised MSE sum (a-b)^2 / sum b^2, bitwise): max relative error, bf16 rounding, CI sizing.
global using static Temper.Tests.OpTolerance;
using Temper.Core;

namespace Temper.Kernels.Tests;

public static class OpCheck
{
    /// <summary>Heavy tests shrink when CI=true.</summary>
    public static bool Ci => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

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


    public static Tensor T(float[] values, params int[] shape) => Tensor.FromFloats(new Shape(shape), values);
    public static Tensor Bf16(ushort[] values, params int[] shape) => Tensor.FromArray<ushort>(new Shape(shape), values, DType.BF16);
}
