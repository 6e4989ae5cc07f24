// The op-check suite, NF4 part: the fused NF4 linear (forward y = x dequant(W)^T + bias, with and
// without accumulation, and the input gradient dx = dy dequant(W)) and whole-matrix dequantisation
// against Reference/Nf4Reference.cs, at shapes whose weights end in partial blocks and odd nibbles,
// on the GEMV-sized and GEMM-sized row counts, plus a finite-difference check of the input gradient.
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Tests.OpCheck;

namespace Temper.Kernels.Tests;

public abstract partial class BackendOpChecks
{
    public static TheoryData<int, int, int> Nf4Shapes => new() { { 1, 1, 1 }, { 3, 13, 7 }, { 7, 65, 33 }, { 37, 130, 70 } };

    private Nf4Weight Quantized(int m, int k, int seed, out float[] absmax, out byte[] packed)
    {
        var host = Nf4Weight.Quantize(Floats(m * k, seed, 0.05f), new Shape(m, k), "w");
        absmax = host.BlockAbsmax();
        packed = host.Codes.Bytes.ToArray();
        return host.To(_b);
    }

    [Theory]
    [MemberData(nameof(Nf4Shapes))]
    public void Nf4Linear_MatchesReference(int n, int k, int m)
    {
        var w = Quantized(m, k, 100 + k, out var absmax, out var packed);
        var x = Floats(n * k, 3);
        var bias = Floats(m, 4);
        var start = Floats(n * m, 5);
        foreach (bool withBias in new[] { false, true })
            foreach (bool accumulate in new[] { false, true })
            {
                var expected = (float[])start.Clone();
                Nf4Reference.Forward(x, packed, absmax, withBias ? bias : default, expected, n, k, m, accumulate);
                var y = Up(start, n, m);
                _b.Nf4Linear(Up(x, n, k), w, withBias ? Up(bias, m) : null, y, accumulate);
                Close(Run(y), expected, $"nf4 linear n{n} k{k} m{m} bias {withBias} accumulate {accumulate}");
            }
    }

    [Theory]
    [MemberData(nameof(Nf4Shapes))]
    public void Nf4LinearBackward_MatchesReference(int n, int k, int m)
    {
        var w = Quantized(m, k, 200 + k, out var absmax, out var packed);
        var dy = Floats(n * m, 6);
        var start = Floats(n * k, 7);
        foreach (bool accumulate in new[] { false, true })
        {
            var expected = (float[])start.Clone();
            Nf4Reference.Backward(dy, packed, absmax, expected, n, k, m, accumulate);
            var dx = Up(start, n, k);
            _b.Nf4LinearBackward(Up(dy, n, m), w, dx, accumulate);
            Close(Run(dx), expected, $"nf4 linear backward n{n} k{k} m{m} accumulate {accumulate}");
        }
    }

    [Fact]
    public void Nf4Dequantize_MatchesReference()
    {
        var w = Quantized(9, 23, 300, out var absmax, out var packed);
        var output = _b.Zeros(new Shape(9, 23));
        _b.Nf4Dequantize(w, output);
        Bitwise(Run(output), Nf4Reference.Dequantize(packed, absmax, 9 * 23), "nf4 dequantize");
    }

    [Fact]
    public void Nf4LinearBackward_MatchesFiniteDifferences()
    {
        const int n = 3, k = 11, m = 5;
        var w = Quantized(m, k, 400, out _, out _);
        var x = Floats(n * k, 8);
        var dy = Floats(n * m, 9);
        double Loss(float[] xv)
        {
            var y = _b.Zeros(new Shape(n, m));
            _b.Nf4Linear(Up(xv, n, k), w, null, y);
            var yv = Run(y);
            double s = 0;
            for (int i = 0; i < yv.Length; i++) s += (double)yv[i] * dy[i];
            return s;
        }
        var dx = _b.Zeros(new Shape(n, k));
        _b.Nf4LinearBackward(Up(dy, n, m), w, dx);
        var analytic = Run(dx);
        const float h = 1e-2f;
        for (int i = 0; i < x.Length; i++)
        {
            var xp = (float[])x.Clone();
            var xm = (float[])x.Clone();
            xp[i] += h;
            xm[i] -= h;
            double numeric = (Loss(xp) - Loss(xm)) / (2 * h);
            Assert.True(Math.Abs(numeric - analytic[i]) <= 1e-3 * Math.Max(1, Math.Abs(numeric)), $"dx[{i}]: analytic {analytic[i]}, numeric {numeric}");
        }
    }
}
