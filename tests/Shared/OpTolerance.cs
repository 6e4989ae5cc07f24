// Seeded inputs and the f32 tolerance of the op-check suites (CPU kernels vs their scalar references,
// ILGPU ops vs the CPU backend or the f64 references): normalised MSE, sum (a-b)^2 / sum b^2, at most
// 1e-10 in f32 (a relative RMS error of about 1e-5), or bit-for-bit equality.
namespace Temper.Tests;

public static class OpTolerance
{
    /// <summary>f32 tolerance on normalised MSE: a relative RMS error of about 1e-5.</summary>
    public const double F32Nmse = 1e-10;

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

    public static void Bitwise(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(actual[i]) == BitConverter.SingleToInt32Bits(expected[i]), $"{what}[{i}]: {actual[i]:R} != {expected[i]:R}");
    }

    /// <summary>Each element within <paramref name="ulps"/> units in the last place of the expected one (same sign).</summary>
    public static void WithinUlps(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, int ulps, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            long distance = Math.Abs((long)BitConverter.SingleToInt32Bits(actual[i]) - BitConverter.SingleToInt32Bits(expected[i]));
            Assert.True(distance <= ulps, $"{what}[{i}]: {actual[i]:R} is {distance} ulps from {expected[i]:R} (at most {ulps})");
        }
    }
}
