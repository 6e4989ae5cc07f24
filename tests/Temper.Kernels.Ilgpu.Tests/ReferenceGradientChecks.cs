// The backward references of Temper.Kernels.Cpu.Reference checked against central finite differences of the forward
// references in Temper.Kernels.Cpu.Reference (host only, no device): L = sum(out * w) for a random w,
// dL/dx_i estimated as (L(x + h e_i) - L(x - h e_i)) / 2h at a few random i of every input. A formula
// mistake is an O(1) relative error; f32 rounding of the forward outputs stays well under 1e-2.
using Temper.Core;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Ilgpu.Tests.Check;

namespace Temper.Kernels.Ilgpu.Tests;

public class ReferenceGradientChecks
{
    private const double H = 1e-2;

    private static double Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    /// <summary>Compares analytic[i] with the central difference of loss() in x[i] at a few random i.</summary>
    private static void Fd(string what, float[] x, float[] analytic, Func<double> loss, int samples = 6)
    {
        var rng = new Random(what.Length * 31 + x.Length);
        for (int s = 0; s < samples; s++)
        {
            int i = rng.Next(x.Length);
            float keep = x[i];
            x[i] = (float)(keep + H);
            double up = loss();
            x[i] = (float)(keep - H);
            double down = loss();
            x[i] = keep;
            double fd = (up - down) / (2 * H);
            Assert.True(Math.Abs(fd - analytic[i]) <= 1e-2 * Math.Max(Math.Abs(fd), 0.1), $"{what}[{i}]: analytic {analytic[i]:G6}, finite difference {fd:G6}");
        }
    }

    [Fact]
    public void RmsNorm()
    {
        const int rows = 3, c = 7;
        var x = Floats(rows * c, 1, 2f);
        var w = Floats(c, 2);
        var up = Floats(rows * c, 3);
        double Loss()
        {
            var y = new float[rows * c];
            RmsNormReference.Forward(x, w, 1e-5f, y, default, c);
            return Dot(y, up);
        }
        var rstd = new float[rows];
        RmsNormReference.Forward(x, w, 1e-5f, new float[rows * c], rstd, c);
        var (dx, dw) = (new float[x.Length], new float[c]);
        RmsNormReference.Backward(up, x, w, rstd, dx, dw, c);
        Fd("rmsnorm dx", x, dx, Loss);
        Fd("rmsnorm dWeight", w, dw, Loss);
    }

    [Fact]
    public void Linear()
    {
        const int n = 3, k = 5, m = 4;
        var (x, w, bias, up) = (Floats(n * k, 1), Floats(m * k, 2), Floats(m, 3), Floats(n * m, 4));
        double Loss()
        {
            var y = new float[n * m];
            LinearReference.Forward(x, w, bias, y, n, k, m, false);
            return Dot(y, up);
        }
        var (dx, dw, db) = (new float[x.Length], new float[w.Length], new float[m]);
        LinearReference.Backward(up, x, w, dx, dw, db, n, k, m, false);
        Fd("linear dx", x, dx, Loss);
        Fd("linear dWeight", w, dw, Loss);
        Fd("linear dBias", bias, db, Loss);
    }

    [Fact]
    public void LoraLinear()
    {
        const int n = 3, k = 5, m = 4, r = 2;
        const float scale = 1.5f;
        var (x, a, b, up) = (Floats(n * k, 1), Floats(r * k, 2), Floats(m * r, 3), Floats(n * m, 4));
        var zeroW = new float[m * k]; // the base part is Linear's: isolate the LoRA branch
        double Loss()
        {
            var y = new float[n * m];
            LoraLinearReference.Forward(x, zeroW, default, a, b, scale, y, default, n, k, m, r);
            return Dot(y, up);
        }
        var xa = new float[n * r];
        LinearReference.Forward(x, a, default, xa, n, k, r, false);
        var (dx, dA, dB) = (new float[x.Length], new float[a.Length], new float[b.Length]);
        LoraLinearReference.Backward(up, x, xa, a, b, scale, dx, dA, dB, n, k, m, r);
        Fd("lora dx", x, dx, Loss);
        Fd("lora dA", a, dA, Loss);
        Fd("lora dB", b, dB, Loss);
    }

    [Fact]
    public void Attention()
    {
        const int batch = 2, tq = 3, heads = 4, s = 6, kvHeads = 2, d = 3, kvLength = 5, offset = 2;
        int[] mask = [1, 1, 0, 1, 1, 0, 1, 1, 1, 1];
        var (q, k, v) = (Floats(batch * tq * heads * d, 1), Floats(batch * s * kvHeads * d, 2), Floats(batch * s * kvHeads * d, 3));
        var up = Floats(q.Length, 4);
        const float scale = 0.7f;
        double Loss()
        {
            var o = new float[q.Length];
            AttentionReference.Forward(q, k, v, o, default, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, mask);
            return Dot(o, up);
        }
        var (dq, dk, dv) = (new float[q.Length], new float[k.Length], new float[v.Length]);
        AttentionReference.Backward(q, k, v, up, dq, dk, dv, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, mask);
        Fd("attention dq", q, dq, Loss, 10);
        Fd("attention dk", k, dk, Loss, 10);
        Fd("attention dv", v, dv, Loss, 10);
    }

    [Fact]
    public void SwiGlu()
    {
        var (g, u, up) = (Floats(12, 1, 3f), Floats(12, 2), Floats(12, 3));
        double Loss()
        {
            var y = new float[12];
            SwiGluReference.Forward(g, u, y);
            return Dot(y, up);
        }
        var (dg, du) = (new float[12], new float[12]);
        SwiGluReference.Backward(up, g, u, dg, du);
        Fd("swiglu dGate", g, dg, Loss);
        Fd("swiglu dUp", u, du, Loss);
    }

    [Fact]
    public void LmHeadCrossEntropy()
    {
        const int n = 4, c = 5, v = 7;
        const float lossScale = 0.5f;
        var (hidden, head) = (Floats(n * c, 1, 2f), Floats(v * c, 2));
        int[] labels = [2, -100, 6, 0];
        double Loss()
        {
            var logits = new float[n * v];
            LinearReference.Forward(hidden, head, default, logits, n, c, v, false);
            var logp = new float[n * v];
            LogSoftmaxReference.Forward(logits, logp, v);
            double l = 0;
            for (int i = 0; i < n; i++)
                if (labels[i] >= 0) l -= logp[i * v + labels[i]];
            return lossScale * l;
        }
        var (losses, dh, dw) = (new float[n], new float[hidden.Length], new float[head.Length]);
        LmHeadCrossEntropyReference.Forward(hidden, head, labels, losses, lossScale, dh, dw, n, c, v);
        Assert.Equal(Loss(), lossScale * losses.Sum(), 1e-5);
        Fd("ce dHidden", hidden, dh, Loss);
        Fd("ce dLmHead", head, dw, Loss);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LmHeadDistillation(bool reverse)
    {
        const int n = 4, cs = 5, ct = 3, v = 7;
        const float lossScale = 0.5f, temperature = 2f;
        var (sHidden, sHead, tHidden, tHead) = (Floats(n * cs, 1, 2f), Floats(v * cs, 2), Floats(n * ct, 3, 2f), Floats(v * ct, 4));
        int[] mask = [1, 0, 1, 1];
        // The loss straight from its definition: full logits, LogSoftmaxReference at temperature T.
        double Loss()
        {
            var (s, t) = (new float[n * v], new float[n * v]);
            LinearReference.Forward(sHidden, sHead, default, s, n, cs, v, false);
            LinearReference.Forward(tHidden, tHead, default, t, n, ct, v, false);
            for (int i = 0; i < s.Length; i++) { s[i] /= temperature; t[i] /= temperature; }
            var (ls, lt) = (new float[n * v], new float[n * v]);
            LogSoftmaxReference.Forward(s, ls, v);
            LogSoftmaxReference.Forward(t, lt, v);
            double l = 0;
            for (int i = 0; i < n; i++)
                for (int j = 0; mask[i] != 0 && j < v; j++)
                {
                    int k = i * v + j;
                    l += reverse ? Math.Exp(ls[k]) * (ls[k] - lt[k]) : Math.Exp(lt[k]) * (lt[k] - ls[k]);
                }
            return lossScale * temperature * temperature * l;
        }
        var (losses, dh, dw) = (new float[n], new float[sHidden.Length], new float[sHead.Length]);
        LmHeadDistillationReference.Forward(sHidden, sHead, tHidden, tHead, mask, temperature, reverse, losses, lossScale, dh, dw, n, cs, ct, v);
        Assert.Equal(Loss(), lossScale * losses.Sum(), 1e-5);
        Assert.True(losses.Where((_, i) => mask[i] != 0).All(l => l > 0), "a KL between different distributions is positive");
        Fd("distill dHidden", sHidden, dh, Loss);
        Fd("distill dLmHead", sHead, dw, Loss);
    }

    [Fact]
    public void Rope_backward_is_the_transpose()
    {
        const int n = 3, heads = 2, d = 6;
        var freqs = RopeFrequencies.Default(d, 10000);
        int[] pos = [0, 7, 300];
        var (x, y) = (Floats(n * heads * d, 1), Floats(n * heads * d, 2));
        var rx = (float[])x.Clone();
        RopeReference.Forward(rx, pos, freqs.InvFreq, 1f, heads);
        var rty = (float[])y.Clone();
        RopeReference.Forward(rty, pos, freqs.InvFreq, 1f, heads, sign: -1f);
        Assert.Equal(Dot(rx, y), Dot(x, rty), 1e-5);
    }
}
