// Op checks of LmHeadDistillation (forward and reverse KL through both LM heads): against the f64
// reference at several shapes (teacher and student widths differ, bf16 heads, masked rows), against
// central finite differences of the backend's own losses, zero loss and zero gradient when the student
// is the teacher, and the CPU kernel's small vocabulary chunks crossing chunk edges.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Tests.OpCheck;

namespace Temper.Kernels.Tests;

public abstract partial class BackendOpChecks
{
    [Theory]
    [InlineData(7, 13, 9, 100, false, false, 2f)]
    [InlineData(7, 13, 9, 100, true, false, 0.7f)]
    [InlineData(20, 33, 33, 257, false, true, 1f)]
    [InlineData(3, 8, 16, 5, true, true, 3f)]
    public void LmHeadDistillation_MatchesReference(int n, int cs, int ct, int v, bool reverse, bool bf16, float temperature)
    {
        var sHidden = Floats(n * cs, 1, 2f);
        var tHidden = Floats(n * ct, 2, 2f);
        var sHead = Floats(v * cs, 3);
        var tHead = Floats(v * ct, 4, 1.5f);
        Tensor ts = T(sHead, v, cs), tt = T(tHead, v, ct);
        if (bf16)
        {
            var (bs, bt) = (ToBf16(sHead), ToBf16(tHead));
            (sHead, tHead) = (Widen(bs), Widen(bt));
            (ts, tt) = (Bf16(bs, v, cs), Bf16(bt, v, ct));
        }
        var mask = Enumerable.Range(0, n).Select(i => i == 1 ? 0 : 1).ToArray();
        const float lossScale = 0.25f;
        var losses = new float[n];
        var dHidden = Floats(n * cs, 5);
        var dHead = Floats(v * cs, 6);
        var (tdh, tdw) = (Up((float[])dHidden.Clone(), n, cs), Up((float[])dHead.Clone(), v, cs));
        LmHeadDistillationReference.Forward(sHidden, sHead, tHidden, tHead, mask, temperature, reverse, losses, lossScale, dHidden, bf16 ? default : dHead, n, cs, ct, v);
        var tl = _b.Zeros(new Shape(n));
        _b.LmHeadDistillation(Up(sHidden, n, cs), _b.FromHost(ts), Up(tHidden, n, ct), _b.FromHost(tt), mask, temperature, reverse, tl, lossScale, tdh, bf16 ? null : tdw);
        CloseEach(Run(tl), losses, "distill losses", 1e-4, 0.1);
        Assert.Equal(0f, Run(tl)[1]);
        Close(Run(tdh), dHidden, "distill dHidden");
        if (!bf16) Close(Run(tdw), dHead, "distill dLmHead");
        var forwardOnly = _b.Zeros(new Shape(n));
        _b.LmHeadDistillation(Up(sHidden, n, cs), _b.FromHost(ts), Up(tHidden, n, ct), _b.FromHost(tt), mask, temperature, reverse, forwardOnly, lossScale, null, null);
        Bitwise(Run(forwardOnly), Run(tl), "distill forward-only losses");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LmHeadDistillation_MatchesFiniteDifferences(bool reverse)
    {
        const int n = 5, cs = 10, ct = 7, v = 40;
        const float lossScale = 0.5f, temperature = 1.5f;
        var sHidden = Floats(n * cs, 1);
        var sHead = Floats(v * cs, 2);
        var (tHidden, tHead) = (Up(Floats(n * ct, 3), n, ct), Up(Floats(v * ct, 4), v, ct));
        int[] mask = [1, 1, 0, 1, 1];
        var (dh, dw) = (_b.Zeros(new Shape(n, cs)), _b.Zeros(new Shape(v, cs)));
        _b.LmHeadDistillation(Up(sHidden, n, cs), Up(sHead, v, cs), tHidden, tHead, mask, temperature, reverse, _b.Zeros(new Shape(n)), lossScale, dh, dw);
        double Loss(float[] hs, float[] ws)
        {
            var l = _b.Zeros(new Shape(n));
            _b.LmHeadDistillation(Up(hs, n, cs), Up(ws, v, cs), tHidden, tHead, mask, temperature, reverse, l, lossScale, null, null);
            return lossScale * Run(l).Sum(x => (double)x);
        }
        GradCheck.Directional("distill dHidden", sHidden, Run(dh), hs => Loss(hs, sHead));
        GradCheck.Directional("distill dLmHead", sHead, Run(dw), ws => Loss(sHidden, ws));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LmHeadDistillation_OfAModelWithItselfIsZero(bool reverse)
    {
        const int n = 6, c = 12, v = 70;
        var hidden = Up(Floats(n * c, 1, 3f), n, c);
        var head = Up(Floats(v * c, 2, 2f), v, c);
        var (l, dh, dw) = (_b.Zeros(new Shape(n)), _b.Zeros(new Shape(n, c)), _b.Zeros(new Shape(v, c)));
        _b.LmHeadDistillation(hidden, head, hidden, head, Enumerable.Repeat(1, n).ToArray(), 2f, reverse, l, 1f, dh, dw);
        Assert.All(Run(l), x => Assert.Equal(0f, x));
        Assert.All(Run(dh), x => Assert.Equal(0f, x));
        Assert.All(Run(dw), x => Assert.Equal(0f, x));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LmHeadDistillation_IsTheSameAcrossVocabularyChunks(bool reverse)
    {
        const int n = 9, cs = 11, ct = 6, v = 67;
        var (sHidden, sHead, tHidden, tHead) = (Floats(n * cs, 1, 2f), Floats(v * cs, 2), Floats(n * ct, 3, 2f), Floats(v * ct, 4));
        var mask = Enumerable.Range(0, n).Select(i => i % 4 == 3 ? 0 : 1).ToArray();
        var (losses, dh, dw) = (new float[n], new float[n * cs], new float[v * cs]);
        LmHeadDistillationReference.Forward(sHidden, sHead, tHidden, tHead, mask, 1.3f, reverse, losses, 0.5f, dh, dw, n, cs, ct, v);
        foreach (int chunk in new[] { 1, 7, 32, 66, 67 })
        {
            var (l, h, w) = (new float[n], new float[n * cs], new float[v * cs]);
            LmHeadDistillation.Run(sHidden, sHead, default, tHidden, tHead, default, mask, 1.3f, reverse, l, 0.5f, h, w, n, cs, ct, v, threads: 2, chunkWidth: chunk);
            CloseEach(l, losses, $"distill losses chunk {chunk}", 1e-4, 0.1);
            Close(h, dh, $"distill dHidden chunk {chunk}");
            Close(w, dw, $"distill dLmHead chunk {chunk}");
        }
    }
}
