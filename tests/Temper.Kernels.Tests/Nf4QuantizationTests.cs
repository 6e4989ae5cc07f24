// NF4 quantisation (Nf4Weight) against the QLoRA definition written out here separately, in f64
// where the definition allows: block absmax over 64 flattened elements, x = w * (1/absmax) in f32
// (bitsandbytes' quantize kernel multiplies by the reciprocal), the code the nearest code-book value
// (ties to the lower code), codes packed high nibble first; double quantisation of the absmax values
// (mean subtracted, 256-blocks, nearest dynamic-map code); dequantised values within 1 ulp of the f64
// product nf4[code] * absmax, where absmax is reconstructed with bitsandbytes' f32 steps. Also: the
// mean squared error on Gaussian weights against the value the code book predicts (closed-form
// integrals of the normal density over the code book's bins), partial last blocks, and the SIMD
// dequantiser against the scalar reference at every start and length.
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cpu.Reference;

namespace Temper.Kernels.Tests;

public sealed class Nf4QuantizationTests
{
    private static float[] Gaussian(int n, int seed, float std = 1f)
    {
        var rng = new Random(seed);
        var r = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            r[i] = std * (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return r;
    }

    private static int Nearest(ReadOnlySpan<float> book, double x)
    {
        int best = 0;
        for (int i = 1; i < book.Length; i++)
            if (Math.Abs(x - book[i]) < Math.Abs(x - book[best])) best = i;
        return best;
    }

    private static int CodeAt(ReadOnlySpan<byte> packed, long i) => i % 2 == 0 ? packed[(int)(i / 2)] >> 4 : packed[(int)(i / 2)] & 15;

    [Theory]
    [InlineData(1)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(64 * 300 + 37)]
    [InlineData(64 * 256 * 2 + 64 * 5 + 3)] // three 256-blocks of absmax, the last partial
    public void RoundTrip_MatchesTheDefinition(int n)
    {
        var w = Gaussian(n, 7 + n, 0.02f);
        using var q = Nf4Weight.Quantize(w, new Shape(1, n), "w");
        var packed = q.Codes.Bytes;
        Assert.Equal((n + 1) / 2, packed.Length);
        int blocks = (n + 63) / 64;
        var absmax = new float[blocks];
        for (int b = 0; b < blocks; b++)
        {
            float m = 0;
            for (int i = b * 64; i < Math.Min(n, b * 64 + 64); i++) m = Math.Max(m, Math.Abs(w[i]));
            absmax[b] = m;
            float inv = 1f / m;
            for (int i = b * 64; i < Math.Min(n, b * 64 + 64); i++)
                Assert.True(Nearest(Nf4CodeBook.Values, w[i] * inv) == CodeAt(packed, i), $"element {i}: code {CodeAt(packed, i)}, nearest {Nearest(Nf4CodeBook.Values, w[i] * inv)}");
        }
        if (n % 2 == 1) Assert.Equal(7, packed[^1] & 15); // the padding nibble is the code of 0

        // Double quantisation of the absmax values.
        double sum = 0;
        foreach (float a in absmax) sum += a;
        float offset = (float)(sum / blocks);
        Assert.Equal(offset, q.AbsmaxOffset);
        var qa = q.AbsmaxCodes.Span<byte>();
        var scales = q.AbsmaxScales.Floats;
        Assert.Equal((blocks + 255) / 256, scales.Length);
        int searchNeighbours = 0;
        for (int s = 0; s < scales.Length; s++)
        {
            int b0 = s * 256, b1 = Math.Min(blocks, b0 + 256);
            float max = 0;
            for (int b = b0; b < b1; b++) max = Math.Max(max, Math.Abs(absmax[b] - offset));
            Assert.Equal(max, scales[s]);
            float inv = 1f / max;
            for (int b = b0; b < b1; b++)
            {
                float x = (absmax[b] - offset) * inv;
                int best = Nearest(DynamicMap.Values, x), got = qa[b];
                if (got == best) continue;
                // bitsandbytes' binary search can stop on the other neighbour of x; never further away.
                searchNeighbours++;
                Assert.True(Math.Abs(got - best) == 1 && Math.Min(DynamicMap.Values[got], DynamicMap.Values[best]) <= x && x <= Math.Max(DynamicMap.Values[got], DynamicMap.Values[best]),
                    $"absmax block {b}: code {got} ({DynamicMap.Values[got]}), nearest {best} ({DynamicMap.Values[best]}) for {x}");
            }
        }
        Assert.True(searchNeighbours <= Math.Max(1, blocks / 50), $"{searchNeighbours} of {blocks} absmax codes are not the nearest");

        // Dequantised values: within 1 ulp of the f64 product.
        using var output = Tensor.Zeros(new Shape(1, n));
        new CpuBackend(2).Nf4Dequantize(q, output);
        var got32 = output.Floats;
        for (int i = 0; i < n; i++)
        {
            int b = i / 64;
            float scaled = DynamicMap.Values[qa[b]] * scales[b / 256];
            float rec = scaled + offset;
            double expected = (double)Nf4CodeBook.Values[CodeAt(packed, i)] * rec;
            float near = Math.Abs((float)expected);
            double ulp = (double)MathF.BitIncrement(near) - near; // one f32 ulp at the expected value
            Assert.True(Math.Abs(got32[i] - expected) <= Math.Max(ulp, float.Epsilon), $"element {i}: {got32[i]:R} vs {expected:R}");
        }
    }

    [Fact]
    public void Bf16_and_F16_weights_quantize_as_their_exact_f32_values()
    {
        var w = Gaussian(64 * 3 + 5, 9, 0.02f);
        var bf16 = OpCheck.ToBf16(w);
        var widened = OpCheck.Widen(bf16);
        using var fromBf16 = Nf4Weight.Quantize(Tensor.FromArray<ushort>(new Shape(1, w.Length), bf16, DType.BF16, "w"));
        using var fromWidened = Nf4Weight.Quantize(widened, new Shape(1, w.Length));
        Assert.Equal(fromWidened.Codes.Bytes.ToArray(), fromBf16.Codes.Bytes.ToArray());
        Assert.Equal(fromWidened.BlockAbsmax(), fromBf16.BlockAbsmax());
        var half = w.Select(v => (Half)v).ToArray();
        using var fromF16 = Nf4Weight.Quantize(Tensor.FromArray<Half>(new Shape(1, w.Length), half, DType.F16, "w"));
        using var fromHalfValues = Nf4Weight.Quantize(half.Select(h => (float)h).ToArray(), new Shape(1, w.Length));
        Assert.Equal(fromHalfValues.Codes.Bytes.ToArray(), fromF16.Codes.Bytes.ToArray());
        Assert.Throws<TemperException>(() => Nf4Weight.Quantize(Tensor.Zeros(new Shape(2, 2), DType.I32, "ids")));
    }

    [Fact]
    public void PartialLastBlock_HasItsOwnScale()
    {
        var w = Gaussian(65, 3);
        w[64] = -0.5f;
        using var q = Nf4Weight.Quantize(w, new Shape(5, 13), "w");
        Assert.Equal(2, q.AbsmaxCodes.Elements);
        Assert.Equal(0, q.Codes.Bytes[32] >> 4); // alone in its block: -absmax, code 0 (-1.0)
        Assert.Equal(7, q.Codes.Bytes[32] & 15);
        var absmax = q.BlockAbsmax();
        Assert.True(Math.Abs(absmax[1] - 0.5f) < 0.01f, $"reconstructed absmax {absmax[1]}");
    }

    [Fact]
    public void MeanSquaredError_OnGaussianWeights_MatchesTheCodeBook()
    {
        const int n = 1 << 18;
        var w = Gaussian(n, 11);
        using var q = Nf4Weight.Quantize(w, new Shape(n / 512, 512), "w");
        using var output = Tensor.Zeros(q.Shape);
        new CpuBackend(2).Nf4Dequantize(q, output);
        var deq = output.Floats;
        double measured = 0;
        for (int i = 0; i < n; i++) measured += Math.Pow((double)w[i] - deq[i], 2);
        measured /= n;

        // Expected: each block's maximum maps to +-1 exactly; the other 63 are N(0,1) given |w| <= M,
        // and their squared error integrates over the code book's bins (midpoints between codes).
        var book = Nf4CodeBook.Values;
        double expected = 0;
        for (int b = 0; b < n / 64; b++)
        {
            double m = 0;
            for (int i = b * 64; i < b * 64 + 64; i++) m = Math.Max(m, Math.Abs(w[i]));
            double err = 0;
            for (int c = 0; c < 16; c++)
            {
                double lo = c == 0 ? -1 : (book[c - 1] + book[c]) / 2.0, hi = c == 15 ? 1 : (book[c] + book[c + 1]) / 2.0;
                err += SquaredErrorMass(m * lo, m * hi, m * book[c]);
            }
            expected += 63 * err / (Phi(m) - Phi(-m));
        }
        expected /= n;
        Assert.True(Math.Abs(measured - expected) <= 0.01 * expected, $"MSE {measured:E4}, the code book predicts {expected:E4}");
    }

    // int_l^u (w - a)^2 phi(w) dw, from int phi = Phi, int w phi = -phi, int w^2 phi = Phi - w phi.
    private static double SquaredErrorMass(double l, double u, double a)
    {
        double p0 = Phi(u) - Phi(l), p1 = Pdf(l) - Pdf(u), p2 = p0 - (u * Pdf(u) - l * Pdf(l));
        return p2 - 2 * a * p1 + a * a * p0;
    }

    private static double Pdf(double x) => Math.Exp(-x * x / 2) / Math.Sqrt(2 * Math.PI);
    private static double Phi(double x) => 0.5 * Erfc(-x / Math.Sqrt(2));

    // Complementary error function, Chebyshev fit (Numerical Recipes' erfcc), relative error < 1.2e-7.
    private static double Erfc(double x)
    {
        double z = Math.Abs(x), t = 1 / (1 + 0.5 * z);
        double r = t * Math.Exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807
            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
        return x >= 0 ? r : 2 - r;
    }

    [Fact]
    public void Dequantize_Simd_MatchesReference_AtEveryStartAndLength()
    {
        var w = Gaussian(64 * 5 + 9, 5);
        using var q = Nf4Weight.Quantize(w, new Shape(1, w.Length), "w");
        var absmax = q.BlockAbsmax();
        var all = Nf4Reference.Dequantize(q.Codes.Bytes, absmax, w.Length);
        for (int start = 0; start < 40; start++)
            for (int len = 0; start + len <= w.Length; len += len < 70 ? 1 : 37)
            {
                var got = new float[len];
                Nf4Dequantize.Run(q.Codes.Bytes, absmax, start, got);
                Bitwise(got, all.AsSpan(start, len), $"start {start} length {len}");
            }
    }

    private static void Bitwise(ReadOnlySpan<float> a, ReadOnlySpan<float> b, string what) => Temper.Tests.OpTolerance.Bitwise(a, b, what);
}
