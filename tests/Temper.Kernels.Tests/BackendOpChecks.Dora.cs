// The op-check suite's DoRA ops: DoraNorm (||W + s B A||_row, f32 and bf16 W) against its f64 reference at
// row lengths 1..67 (every SIMD tail), DoraScale (y = m / norm * z + bias, in place too) and
// DoraMagnitudeBackward against theirs, the magnitude gradient against central differences of the
// scaled output, and the shape checks.
using Temper.Core;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Tests.OpCheck;

namespace Temper.Kernels.Tests;

public abstract partial class BackendOpChecks
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DoraNorm_MatchesReference_AtEveryRowLength(bool bf16)
    {
        foreach (int k in Enumerable.Range(1, 67).Append(300))
        {
            int m = 5 + k % 4, r = 1 + k % 5;
            var w = Floats(m * k, k);
            Tensor tw;
            if (bf16)
            {
                var h = ToBf16(w);
                w = Widen(h);
                tw = Bf16(h, m, k);
            }
            else tw = T(w, m, k);
            var a = Floats(r * k, k + 1);
            var b = Floats(m * r, k + 2);
            var expected = new float[m];
            DoraNormReference.Compute(w, a, b, 1.75f, expected, m, k, r);
            var norm = _b.Zeros(new Shape(m));
            _b.DoraNorm(_b.FromHost(tw), Up(a, r, k), Up(b, m, r), 1.75f, norm);
            CloseEach(Run(norm), expected, $"dora norm K={k} bf16={bf16}", rel: 1e-5);
        }
    }

    [Theory]
    [InlineData(1, 1, true)]
    [InlineData(7, 19, false)]
    [InlineData(33, 67, true)]
    public void DoraScale_and_MagnitudeBackward_MatchReference_AndFiniteDifferences(int n, int m, bool bias)
    {
        var z = Floats(n * m, 1);
        var mag = Floats(m, 2).Select(v => 1 + 0.5f * v).ToArray();
        var norm = Floats(m, 3).Select(v => 0.5f + Math.Abs(v)).ToArray();
        var b = bias ? Floats(m, 4) : null;
        var expected = new float[n * m];
        DoraScaleReference.Forward(z, mag, norm, b, expected, n, m);
        var y = _b.Zeros(new Shape(n, m));
        _b.DoraScale(Up(z, n, m), Up(mag, m), Up(norm, m), b == null ? null : Up(b, m), y);
        Close(Run(y), expected, "dora scale");
        var inPlace = Up((float[])z.Clone(), n, m);
        _b.DoraScale(inPlace, Up(mag, m), Up(norm, m), b == null ? null : Up(b, m), inPlace);
        Close(Run(inPlace), expected, "dora scale in place");

        var dy = Floats(n * m, 5);
        var dm = Floats(m, 6);
        var tdm = Up((float[])dm.Clone(), m);
        DoraScaleReference.MagnitudeBackward(dy, z, norm, dm, n, m);
        _b.DoraMagnitudeBackward(Up(dy, n, m), Up(z, n, m), Up(norm, m), tdm);
        Close(Run(tdm), dm, "dora dm");

        var g = _b.Zeros(new Shape(m));
        _b.DoraMagnitudeBackward(Up(dy, n, m), Up(z, n, m), Up(norm, m), g);
        GradCheck.Directional("dora dm", mag, Run(g), ms =>
        {
            var yy = _b.Zeros(new Shape(n, m));
            _b.DoraScale(Up(z, n, m), Up(ms, m), Up(norm, m), b == null ? null : Up(b, m), yy);
            return GradCheck.Project(Run(yy), dy);
        });
    }

    [Fact]
    public void Dora_ops_refuse_wrong_shapes()
    {
        var ex = Assert.Throws<ArgumentException>(() => _b.DoraNorm(_b.Zeros(new Shape(4, 3)), _b.Zeros(new Shape(2, 3)), _b.Zeros(new Shape(4, 2)), 1f, _b.Zeros(new Shape(3))));
        Assert.Contains("DoraNorm", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => _b.DoraScale(_b.Zeros(new Shape(2, 4)), _b.Zeros(new Shape(4)), _b.Zeros(new Shape(3)), null, _b.Zeros(new Shape(2, 4))));
        Assert.Contains("DoraScale", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => _b.DoraMagnitudeBackward(_b.Zeros(new Shape(3, 4)), _b.Zeros(new Shape(2, 4)), _b.Zeros(new Shape(4)), _b.Zeros(new Shape(4))));
        Assert.Contains("DoraMagnitudeBackward", ex.Message);
    }
}
