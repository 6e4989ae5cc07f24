// The op-check suite, backward half: each backward op against its scalar reference, then against
// finite differences of the backend's own forward (GradCheck), plus the optimizer and reductions.
using Temper.Core;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Tests.OpCheck;

namespace Temper.Kernels.Tests;

public abstract partial class BackendOpChecks
{
    // ---- Embedding ----

    [Fact]
    public void EmbeddingBackward_MatchesReference_AndFiniteDifferences()
    {
        const int v = 7;
        foreach (int c in new[] { 1, 5, 16, 33, 67 })
        {
            var ids = new[] { 3, 1, 3, 0, 6, 3 };
            var dOut = Floats(ids.Length * c, c);
            var dTable = Floats(v * c, 2 * c);
            var expected = (float[])dTable.Clone();
            EmbeddingReference.Backward(dOut, ids, expected, c);
            var t = Up((float[])dTable.Clone(), v, c);
            _b.EmbeddingBackward(Up(dOut, ids.Length, c), ids, t);
            Bitwise(Run(t), expected, $"embedding backward C={c}");
        }
        {
            const int c = 9;
            var ids = new[] { 2, 4, 2, 6 };
            var table = Floats(v * c, 1);
            var r = Floats(ids.Length * c, 2);
            var grad = new float[v * c];
            var tg = Up(grad, v, c);
            _b.EmbeddingBackward(Up(r, ids.Length, c), ids, tg);
            GradCheck.Directional("embedding dTable", table, Run(tg), tab =>
            {
                var y = _b.Zeros(new Shape(ids.Length, c));
                _b.Embedding(Up(tab, v, c), ids, y);
                return GradCheck.Project(Run(y), r);
            });
        }
    }

    // ---- RmsNorm ----

    [Fact]
    public void RmsNormBackward_MatchesReference_AtEveryLength()
    {
        foreach (int c in Enumerable.Range(1, 67).Append(576))
        {
            const int rows = 3;
            var x = Floats(rows * c, c, 2f);
            var w = Floats(c, 2 * c);
            var dy = Floats(rows * c, 3 * c);
            var rstd = new float[rows];
            RmsNormReference.Forward(x, w, 1e-5f, new float[rows * c], rstd, c);
            var dx = new float[rows * c];
            var dw = Floats(c, 4 * c);
            var tdw = Up((float[])dw.Clone(), c);
            RmsNormReference.Backward(dy, x, w, rstd, dx, dw, c);
            var tdx = _b.Zeros(new Shape(rows, c));
            _b.RmsNormBackward(Up(dy, rows, c), Up(x, rows, c), Up(w, c), Up(rstd, rows), tdx, tdw);
            // At C <= 2, dx is a difference of nearly equal terms (x / rms(x) barely moves): compare absolutely.
            if (c <= 2) CloseEach(Run(tdx), dx, $"rmsnorm dx C={c}", 1e-4, 1.0);
            else Close(Run(tdx), dx, $"rmsnorm dx C={c}");
            Close(Run(tdw), dw, $"rmsnorm dWeight C={c}");
            var dx0 = Floats(rows * c, 5 * c); // accumulated into a residual stream's gradient
            var tdx2 = Up(dx0, rows, c);
            _b.RmsNormBackward(Up(dy, rows, c), Up(x, rows, c), Up(w, c), Up(rstd, rows), tdx2, null, accumulateDx: true);
            var sum = dx.Select((v, i) => v + dx0[i]).ToArray();
            if (c <= 2) CloseEach(Run(tdx2), sum, $"rmsnorm dx accumulated C={c}", 1e-4, 1.0);
            else Close(Run(tdx2), sum, $"rmsnorm dx accumulated C={c}");
        }
    }

    [Fact]
    public void RmsNormBackward_MatchesFiniteDifferences()
    {
        const int rows = 4, c = 24;
        var x = Floats(rows * c, 1, 2f);
        var w = Floats(c, 2);
        var r = Floats(rows * c, 3);
        var rstd = _b.Zeros(new Shape(rows));
        _b.RmsNorm(Up(x, rows, c), Up(w, c), 1e-5f, _b.Zeros(new Shape(rows, c)), rstd);
        var dx = _b.Zeros(new Shape(rows, c));
        var dw = _b.Zeros(new Shape(c));
        _b.RmsNormBackward(Up(r, rows, c), Up(x, rows, c), Up(w, c), rstd, dx, dw);
        double Loss(float[] xs, float[] ws)
        {
            var y = _b.Zeros(new Shape(rows, c));
            _b.RmsNorm(Up(xs, rows, c), Up(ws, c), 1e-5f, y);
            return GradCheck.Project(Run(y), r);
        }
        GradCheck.Directional("rmsnorm dx", x, Run(dx), xs => Loss(xs, w));
        GradCheck.Directional("rmsnorm dWeight", w, Run(dw), ws => Loss(x, ws));
    }

    // ---- Linear ----

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 13, 5)]
    [InlineData(33, 65, 17)]
    [InlineData(130, 70, 200)]
    [InlineData(1, 67, 33)]
    public void LinearBackward_MatchesReference(int n, int k, int m)
    {
        foreach (bool bf16 in new[] { false, true })
        foreach (bool accumulateDx in new[] { false, true })
        {
            var x = Floats(n * k, 1);
            var w = Floats(m * k, 2);
            Tensor tw = T(w, m, k);
            if (bf16)
            {
                var b = ToBf16(w);
                w = Widen(b);
                tw = Bf16(b, m, k);
            }
            var dy = Floats(n * m, 3);
            var dx = Floats(n * k, 4);
            var dw = Floats(m * k, 5);
            var db = Floats(m, 6);
            var (tdx, tdw, tdb) = (Up((float[])dx.Clone(), n, k), Up((float[])dw.Clone(), m, k), Up((float[])db.Clone(), m));
            LinearReference.Backward(dy, x, w, dx, dw, db, n, k, m, accumulateDx);
            _b.LinearBackward(Up(dy, n, m), Up(x, n, k), _b.FromHost(tw), tdx, tdw, tdb, accumulateDx);
            string what = $"linear backward {n}x{k}x{m} bf16={bf16} accumulateDx={accumulateDx}";
            Close(Run(tdx), dx, what + " dx");
            Close(Run(tdw), dw, what + " dWeight");
            Close(Run(tdb), db, what + " dBias");
        }
    }

    [Fact]
    public void LinearBackward_SkipsMissingGradients_AndMatchesFiniteDifferences()
    {
        const int n = 6, k = 10, m = 7;
        var x = Floats(n * k, 1);
        var w = Floats(m * k, 2);
        var bias = Floats(m, 3);
        var r = Floats(n * m, 4);
        var dx = _b.Zeros(new Shape(n, k));
        var dw = _b.Zeros(new Shape(m, k));
        var db = _b.Zeros(new Shape(m));
        _b.LinearBackward(Up(r, n, m), Up(x, n, k), Up(w, m, k), null, null, db);
        _b.LinearBackward(Up(r, n, m), Up(x, n, k), Up(w, m, k), dx, dw, null);
        double Loss(float[] xs, float[] ws, float[] bs)
        {
            var y = _b.Zeros(new Shape(n, m));
            _b.Linear(Up(xs, n, k), Up(ws, m, k), Up(bs, m), y);
            return GradCheck.Project(Run(y), r);
        }
        GradCheck.Directional("linear dx", x, Run(dx), xs => Loss(xs, w, bias));
        GradCheck.Directional("linear dWeight", w, Run(dw), ws => Loss(x, ws, bias));
        GradCheck.Directional("linear dBias", bias, Run(db), bs => Loss(x, w, bs));
    }

    // ---- LoraLinear ----

    [Theory]
    [InlineData(5, 13, 7, 3)]
    [InlineData(40, 70, 33, 8)]
    [InlineData(1, 64, 20, 16)]
    public void LoraLinearBackward_MatchesReference_AndFiniteDifferences(int n, int k, int m, int r)
    {
        var x = Floats(n * k, 1);
        var w = Floats(m * k, 2);
        var a = Floats(r * k, 3);
        var b = Floats(m * r, 4);
        var dy = Floats(n * m, 5);
        const float scale = 1.5f;
        var xa = new float[n * r];
        LoraLinearReference.Forward(x, w, default, a, b, scale, new float[n * m], xa, n, k, m, r);
        var dx = Floats(n * k, 6);
        var dA = Floats(r * k, 7);
        var dB = Floats(m * r, 8);
        var (tdx, tdA, tdB) = (Up((float[])dx.Clone(), n, k), Up((float[])dA.Clone(), r, k), Up((float[])dB.Clone(), m, r));
        LoraLinearReference.Backward(dy, x, xa, a, b, scale, dx, dA, dB, n, k, m, r);
        _b.LoraLinearBackward(Up(dy, n, m), Up(x, n, k), Up(xa, n, r), Up(a, r, k), Up(b, m, r), scale, tdx, tdA, tdB);
        Close(Run(tdx), dx, "lora dx");
        Close(Run(tdA), dA, "lora dA");
        Close(Run(tdB), dB, "lora dB");

        // Finite differences of the whole layer: base dx from LinearBackward, LoRA part added.
        var gx = _b.Zeros(new Shape(n, k));
        var gA = _b.Zeros(new Shape(r, k));
        var gB = _b.Zeros(new Shape(m, r));
        _b.LinearBackward(Up(dy, n, m), Up(x, n, k), Up(w, m, k), gx, null, null);
        _b.LoraLinearBackward(Up(dy, n, m), Up(x, n, k), Up(xa, n, r), Up(a, r, k), Up(b, m, r), scale, gx, gA, gB);
        double Loss(float[] xs, float[] aa, float[] bb)
        {
            var y = _b.Zeros(new Shape(n, m));
            _b.LoraLinear(Up(xs, n, k), Up(w, m, k), null, Up(aa, r, k), Up(bb, m, r), scale, y);
            return GradCheck.Project(Run(y), dy);
        }
        GradCheck.Directional("lora layer dx", x, Run(gx), xs => Loss(xs, a, b));
        GradCheck.Directional("lora dA", a, Run(gA), aa => Loss(x, aa, b));
        GradCheck.Directional("lora dB", b, Run(gB), bb => Loss(x, a, bb));
    }

    // ---- Rope ----

    [Fact]
    public void RopeBackward_MatchesReference_AndUndoesForward()
    {
        foreach (int d in new[] { 2, 8, 34, 64, 66 })
        {
            int n = 4, heads = 3;
            var freqs = RopeFrequencies.Default(d, 10000);
            var positions = Ints(n, d, 3000);
            var dx = Floats(n * heads * d, d);
            var expected = (float[])dx.Clone();
            RopeReference.Backward(expected, positions, freqs.InvFreq, 1f, heads);
            var t = Up((float[])dx.Clone(), n, heads, d);
            _b.RopeBackward(t, positions, freqs);
            CloseEach(Run(t), expected, $"rope backward D={d}", 1e-5, 1e-5);
            _b.Rope(t, positions, freqs);
            Close(Run(t), dx, $"rope forward after backward D={d}");
        }
        {
            int n = 3, heads = 2, d = 16;
            var freqs = new RopeFrequencies(RopeFrequencies.DefaultInvFreq(d, 500), 1.3f);
            var positions = new[] { 0, 7, 19 };
            var x = Floats(n * heads * d, 1);
            var r = Floats(n * heads * d, 2);
            var g = Up((float[])r.Clone(), n, heads, d);
            _b.RopeBackward(g, positions, freqs);
            GradCheck.Directional("rope dx", x, Run(g), xs =>
            {
                var t = Up((float[])xs.Clone(), n, heads, d);
                _b.Rope(t, positions, freqs);
                return GradCheck.Project(Run(t), r);
            });
        }
    }

    // ---- Attention ----

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void AttentionBackward_MatchesReference(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool mask)
    {
        var q = Floats(batch * tq * heads * d, 1, 2f);
        var k = Floats(batch * s * kvHeads * d, 2, 2f);
        var v = Floats(batch * s * kvHeads * d, 3);
        var dOut = Floats(q.Length, 4);
        int[] keyMask = [];
        if (mask)
        {
            keyMask = new int[batch * kvLength];
            for (int b = 0; b < batch; b++)
                for (int j = 0; j < kvLength; j++) keyMask[b * kvLength + j] = j < 3 * b ? 0 : 1;
            if (kvLength > 5) keyMask[kvLength - 2] = 0;
        }
        float scale = 1f / MathF.Sqrt(d);
        var dq = new float[q.Length];
        var dk = new float[k.Length];
        var dv = new float[v.Length];
        AttentionReference.Backward(q, k, v, dOut, dq, dk, dv, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, keyMask);
        foreach (bool withLse in new[] { false, true })
        {
            var (tq4, tk, tv) = (Up(q, batch, tq, heads, d), Up(k, batch, s, kvHeads, d), Up(v, batch, s, kvHeads, d));
            var lse = withLse ? _b.Zeros(new Shape(batch, heads, tq)) : null;
            var args = new AttentionArgs(tq4, tk, tv, _b.Zeros(new Shape(batch, tq, heads, d)), kvLength, offset, scale, keyMask, lse);
            if (withLse) _b.Attention(args);
            var (tdq, tdk, tdv) = (_b.Zeros(new Shape(batch, tq, heads, d)), Up(Floats(k.Length, 9), batch, s, kvHeads, d), Up(Floats(v.Length, 10), batch, s, kvHeads, d));
            _b.AttentionBackward(args, Up(dOut, batch, tq, heads, d), tdq, tdk, tdv);
            Close(Run(tdq), dq, $"attention dq lse={withLse}");
            Close(Run(tdk), dk, $"attention dk lse={withLse}");
            Close(Run(tdv), dv, $"attention dv lse={withLse}");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AttentionBackward_MatchesFiniteDifferences(bool packed)
    {
        const int batch = 2, tq = 5, heads = 4, s = 7, kvHeads = 2, d = 8, kvLength = 7, offset = 2;
        var q = Floats(batch * tq * heads * d, 1);
        var k = Floats(batch * s * kvHeads * d, 2);
        var v = Floats(batch * s * kvHeads * d, 3);
        var r = Floats(q.Length, 4);
        int[] keyMask = [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1, 1];
        int[] segments = packed ? [0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 2, 2] : [];
        const float scale = 0.4f;
        AttentionArgs Args(float[] qq, float[] kk, float[] vv) => new(Up(qq, batch, tq, heads, d), Up(kk, batch, s, kvHeads, d), Up(vv, batch, s, kvHeads, d),
            _b.Zeros(new Shape(batch, tq, heads, d)), kvLength, offset, scale, keyMask, SegmentIds: segments);
        var (dq, dk, dv) = (_b.Zeros(new Shape(batch, tq, heads, d)), _b.Zeros(new Shape(batch, s, kvHeads, d)), _b.Zeros(new Shape(batch, s, kvHeads, d)));
        _b.AttentionBackward(Args(q, k, v), Up(r, batch, tq, heads, d), dq, dk, dv);
        double Loss(float[] qq, float[] kk, float[] vv)
        {
            var a = Args(qq, kk, vv);
            _b.Attention(a);
            return GradCheck.Project(Run(a.Output), r);
        }
        GradCheck.Directional("attention dq", q, Run(dq), qq => Loss(qq, k, v));
        GradCheck.Directional("attention dk", k, Run(dk), kk => Loss(q, kk, v));
        GradCheck.Directional("attention dv", v, Run(dv), vv => Loss(q, k, vv));
    }

    // Packed rows: segment ids per batch row, and the same queries with one segment per row alone.
    public static TheoryData<int, int, int, int, int, int, int, int, bool> SegmentCases => new()
    {
        // B, Tq, H, S, Hkv, D, kvLength, offset, mask
        { 2, 9, 4, 9, 2, 8, 9, 0, true },       // packed prefill, GQA 2:1, padding too
        { 1, 70, 2, 70, 1, 16, 70, 0, false },  // segments crossing a 64-row block
        { 1, 3, 3, 12, 3, 5, 10, 6, false },    // chunk after 6 cached tokens
    };

    internal static int[] Segments(int batch, int kvLength)
    {
        var seg = new int[batch * kvLength];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < kvLength; j++) seg[b * kvLength + j] = (j + 2 * b) * 3 / (kvLength + 2 * b); // 3 segments, boundaries per row
        return seg;
    }

    [Theory]
    [MemberData(nameof(SegmentCases))]
    public void Attention_WithSegments_MatchesReference_ForwardAndBackward(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool mask)
    {
        var q = Floats(batch * tq * heads * d, 1, 2f);
        var k = Floats(batch * s * kvHeads * d, 2, 2f);
        var v = Floats(batch * s * kvHeads * d, 3);
        var dOut = Floats(q.Length, 4);
        var keyMask = mask ? Enumerable.Range(0, batch * kvLength).Select(i => i % kvLength == 5 ? 0 : 1).ToArray() : [];
        var segments = Segments(batch, kvLength);
        float scale = 1f / MathF.Sqrt(d);
        var (o, lse) = (new float[q.Length], new float[batch * heads * tq]);
        AttentionReference.Forward(q, k, v, o, lse, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, keyMask, segments);
        var (dq, dk, dv) = (new float[q.Length], new float[k.Length], new float[v.Length]);
        AttentionReference.Backward(q, k, v, dOut, dq, dk, dv, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, keyMask, segments);
        var args = new AttentionArgs(Up(q, batch, tq, heads, d), Up(k, batch, s, kvHeads, d), Up(v, batch, s, kvHeads, d), _b.Zeros(new Shape(batch, tq, heads, d)),
            kvLength, offset, scale, keyMask, _b.Zeros(new Shape(batch, heads, tq)), segments);
        _b.Attention(args);
        Close(Run(args.Output), o, "attention out (segments)");
        CloseEach(Run(args.Lse!), lse, "attention lse (segments)", 1e-5, 0.1);
        var (tdq, tdk, tdv) = (_b.Zeros(new Shape(batch, tq, heads, d)), _b.Zeros(new Shape(batch, s, kvHeads, d)), _b.Zeros(new Shape(batch, s, kvHeads, d)));
        _b.AttentionBackward(args, Up(dOut, batch, tq, heads, d), tdq, tdk, tdv);
        Close(Run(tdq), dq, "attention dq (segments)");
        Close(Run(tdk), dk, "attention dk (segments)");
        Close(Run(tdv), dv, "attention dv (segments)");
    }

    [Fact]
    public void Attention_OverPackedRow_EqualsEachSegmentAlone()
    {
        const int heads = 4, kvHeads = 2, d = 8;
        int[] lengths = [3, 70, 1, 60]; // 64-row blocks that start inside an example and skip the keys before it
        int t = lengths.Sum();
        var q = Floats(t * heads * d, 1, 2f);
        var k = Floats(t * kvHeads * d, 2, 2f);
        var v = Floats(t * kvHeads * d, 3);
        var segments = lengths.SelectMany((n, i) => Enumerable.Repeat(i, n)).ToArray();
        var packed = new AttentionArgs(Up(q, 1, t, heads, d), Up(k, 1, t, kvHeads, d), Up(v, 1, t, kvHeads, d), _b.Zeros(new Shape(1, t, heads, d)), t, 0, 0.3f, SegmentIds: segments);
        _b.Attention(packed);
        var all = Run(packed.Output);
        int start = 0;
        foreach (int n in lengths)
        {
            var alone = new AttentionArgs(Up(q[(start * heads * d)..((start + n) * heads * d)], 1, n, heads, d), Up(k[(start * kvHeads * d)..((start + n) * kvHeads * d)], 1, n, kvHeads, d),
                Up(v[(start * kvHeads * d)..((start + n) * kvHeads * d)], 1, n, kvHeads, d), _b.Zeros(new Shape(1, n, heads, d)), n, 0, 0.3f);
            _b.Attention(alone);
            Close(all.AsSpan(start * heads * d, n * heads * d), Run(alone.Output), $"segment at {start}");
            start += n;
        }
    }

    // ---- SwiGlu ----

    [Fact]
    public void SwiGluBackward_MatchesReference_AtEveryLength_AndFiniteDifferences()
    {
        foreach (int n in Enumerable.Range(1, 67).Append(1000))
        {
            var g = Floats(n, n, 8f);
            var u = Floats(n, 2 * n, 3f);
            var dy = Floats(n, 3 * n);
            var (dg, du) = (new float[n], new float[n]);
            SwiGluReference.Backward(dy, g, u, dg, du);
            var (tdg, tdu) = (_b.Zeros(new Shape(n)), _b.Zeros(new Shape(n)));
            _b.SwiGluBackward(Up(dy, n), Up(g, n), Up(u, n), tdg, tdu);
            CloseEach(Run(tdg), dg, $"swiglu dGate n={n}", 1e-5, 1e-4);
            CloseEach(Run(tdu), du, $"swiglu dUp n={n}", 1e-5, 1e-4);
            var (inPlace, tdu2) = (Up(dy, n), _b.Zeros(new Shape(n))); // dGate written over dy (IBackend's contract)
            _b.SwiGluBackward(inPlace, Up(g, n), Up(u, n), inPlace, tdu2);
            CloseEach(Run(inPlace), dg, $"swiglu dGate over dy n={n}", 1e-5, 1e-4);
            CloseEach(Run(tdu2), du, $"swiglu dUp beside dGate over dy n={n}", 1e-5, 1e-4);
        }
        {
            const int n = 40;
            var g = Floats(n, 1, 4f);
            var u = Floats(n, 2);
            var r = Floats(n, 3);
            var (tdg, tdu) = (_b.Zeros(new Shape(n)), _b.Zeros(new Shape(n)));
            _b.SwiGluBackward(Up(r, n), Up(g, n), Up(u, n), tdg, tdu);
            double Loss(float[] gg, float[] uu)
            {
                var y = _b.Zeros(new Shape(n));
                _b.SwiGlu(Up(gg, n), Up(uu, n), y);
                return GradCheck.Project(Run(y), r);
            }
            GradCheck.Directional("swiglu dGate", g, Run(tdg), gg => Loss(gg, u));
            GradCheck.Directional("swiglu dUp", u, Run(tdu), uu => Loss(g, uu));
        }
    }

    // ---- LM head + cross-entropy ----

    [Theory]
    [InlineData(7, 13, 100, false)]
    [InlineData(20, 33, 257, true)]
    [InlineData(1, 8, 5, false)]
    public void LmHeadCrossEntropy_MatchesReference(int n, int c, int v, bool bf16)
    {
        var hidden = Floats(n * c, 1, 2f);
        var head = Floats(v * c, 2);
        Tensor th = T(head, v, c);
        if (bf16)
        {
            var b = ToBf16(head);
            head = Widen(b);
            th = Bf16(b, v, c);
        }
        var labels = Ints(n, 3, v);
        if (n > 2) labels[1] = -100; // ignored row
        const float lossScale = 0.25f;
        var losses = new float[n];
        var dHidden = Floats(n * c, 4);
        var dHead = Floats(v * c, 5);
        var (tdh, tdw) = (Up((float[])dHidden.Clone(), n, c), Up((float[])dHead.Clone(), v, c));
        LmHeadCrossEntropyReference.Forward(hidden, head, labels, losses, lossScale, dHidden, bf16 ? default : dHead, n, c, v);
        var tl = _b.Zeros(new Shape(n));
        _b.LmHeadCrossEntropy(Up(hidden, n, c), _b.FromHost(th), labels, tl, lossScale, tdh, bf16 ? null : tdw);
        CloseEach(Run(tl), losses, "ce losses", 1e-5, 0.1);
        Close(Run(tdh), dHidden, "ce dHidden");
        if (!bf16) Close(Run(tdw), dHead, "ce dLmHead");
        var forwardOnly = _b.Zeros(new Shape(n));
        _b.LmHeadCrossEntropy(Up(hidden, n, c), _b.FromHost(th), labels, forwardOnly, lossScale, null, null);
        Bitwise(Run(forwardOnly), Run(tl), "ce forward-only losses");
    }

    [Fact]
    public void LmHeadCrossEntropy_RowScalesWeightEachRowsGradient()
    {
        const int n = 5, c = 9, v = 40;
        var hidden = Floats(n * c, 11);
        var head = Floats(v * c, 12);
        int[] labels = [3, 39, -100, 0, 17];
        float[] rowScales = [0.5f, -2f, 7f, 1f, 0f];
        var (dh, dw) = (new float[n * c], new float[v * c]);
        LmHeadCrossEntropyReference.Forward(hidden, head, labels, new float[n], 0.25f, dh, dw, n, c, v, rowScales);
        var (tdh, tdw) = (_b.Zeros(new Shape(n, c)), _b.Zeros(new Shape(v, c)));
        _b.LmHeadCrossEntropy(Up(hidden, n, c), Up(head, v, c), labels, _b.Zeros(new Shape(n)), 0.25f, tdh, tdw, rowScales);
        Close(Run(tdh), dh, "ce dHidden with row scales");
        Close(Run(tdw), dw, "ce dLmHead with row scales");
        // The zero-scaled row contributes no gradient.
        Assert.All(Run(tdh).AsSpan(4 * c, c).ToArray(), g => Assert.Equal(0f, g));
        var hOnly = _b.Zeros(new Shape(n, c)); // no dLmHead asked for
        _b.LmHeadCrossEntropy(Up(hidden, n, c), Up(head, v, c), labels, _b.Zeros(new Shape(n)), 0.25f, hOnly, null, rowScales);
        Close(Run(hOnly), dh, "ce dHidden alone with row scales");
    }

    [Fact]
    public void LmHeadCrossEntropy_MatchesFiniteDifferences()
    {
        const int n = 6, c = 10, v = 50;
        var hidden = Floats(n * c, 1);
        var head = Floats(v * c, 2);
        int[] labels = [3, 49, -1, 0, 17, 17];
        const float lossScale = 0.5f;
        var (dh, dw) = (_b.Zeros(new Shape(n, c)), _b.Zeros(new Shape(v, c)));
        _b.LmHeadCrossEntropy(Up(hidden, n, c), Up(head, v, c), labels, _b.Zeros(new Shape(n)), lossScale, dh, dw);
        double Loss(float[] hs, float[] ws)
        {
            var l = _b.Zeros(new Shape(n));
            _b.LmHeadCrossEntropy(Up(hs, n, c), Up(ws, v, c), labels, l, lossScale, null, null);
            return lossScale * Run(l).Sum(x => (double)x);
        }
        GradCheck.Directional("ce dHidden", hidden, Run(dh), hs => Loss(hs, head));
        GradCheck.Directional("ce dLmHead", head, Run(dw), ws => Loss(hidden, ws));
    }

    // ---- optimizer and reductions ----

    [Fact]
    public void AdamWStep_MatchesReference_AtEveryLength()
    {
        for (int n = 1; n <= 67; n++)
        {
            var param = Floats(n, n);
            var m = Floats(n, 2 * n, 0.1f);
            var v = Floats(n, 3 * n, 0.01f).Select(Math.Abs).ToArray();
            var (tp, tm, tv) = (Up((float[])param.Clone(), n), Up((float[])m.Clone(), n), Up((float[])v.Clone(), n));
            for (int step = 1; step <= 3; step++)
            {
                var grad = Floats(n, 100 * step + n);
                var p = new AdamWParams(1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
                AdamWReference.Step(param, grad, m, v, p);
                _b.AdamWStep(tp, Up(grad, n), tm, tv, p);
            }
            CloseEach(Run(tp), param, $"adamw param n={n}", 1e-6, 1e-6);
            CloseEach(Run(tm), m, $"adamw m n={n}", 1e-6, 1e-9);
            CloseEach(Run(tv), v, $"adamw v n={n}", 1e-6, 1e-12);
        }
    }

    [Fact]
    public void SumOfSquares_AndScale_MatchReference()
    {
        foreach (int n in Enumerable.Range(1, 67).Append(200_003))
        {
            var x = Floats(n, n, 3f);
            double expected = SumOfSquaresReference.Compute(x);
            double actual = _b.SumOfSquares(Up(x, n));
            Assert.True(Math.Abs(actual - expected) <= 1e-12 * expected, $"sum of squares n={n}: {actual:R} vs {expected:R}");
            var scaled = (float[])x.Clone();
            ScaleReference.Apply(scaled, -0.3f);
            var t = Up((float[])x.Clone(), n);
            _b.Scale(t, -0.3f);
            Bitwise(Run(t), scaled, $"scale n={n}");
        }
    }

    [Fact]
    public void Clear_zeroes_nan_and_infinity_that_scale_by_zero_keeps()
    {
        var x = Floats(29, 5);
        x[2] = float.NaN;
        x[7] = float.NegativeInfinity;
        var t = Up(x, 29);
        _b.Clear(t);
        Assert.All(Run(t), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void ScaleRows_MatchesReference_AtEveryRowLength_AndRefusesAMismatch()
    {
        foreach (int c in Enumerable.Range(1, 67))
        {
            const int rows = 5;
            var x = Floats(rows * c, 40 + c, 2f);
            var scales = Floats(rows, 90 + c, 3f);
            scales[rows - 1] = 0f;
            var expected = (float[])x.Clone();
            ScaleRowsReference.Apply(expected, scales, c);
            var t = Up((float[])x.Clone(), rows, c);
            _b.ScaleRows(t, scales);
            Bitwise(Run(t), expected, $"scale rows C={c}");
        }
        var ex = Assert.Throws<ArgumentException>(() => _b.ScaleRows(_b.Zeros(new Shape(3, 4)), new float[2]));
        Assert.Contains("ScaleRows", ex.Message);
    }

    [Fact]
    public void Backward_DoesNotDependOnThreadCount()
    {
        using var one = Create(1);
        using var two = Create(2);
        const int n = 150, k = 300, m = 200;
        var x = Floats(n * k, 1);
        var w = Floats(m * k, 2);
        var dy = Floats(n * m, 3);
        float[][] Linear(IBackend b)
        {
            var (dx, dw, db) = (b.Zeros(new Shape(n, k)), b.Zeros(new Shape(m, k)), b.Zeros(new Shape(m)));
            b.LinearBackward(b.FromHost(T(dy, n, m)), b.FromHost(T(x, n, k)), b.FromHost(T(w, m, k)), dx, dw, db);
            return [b.ToHost(dx).ToFloatArray(), b.ToHost(dw).ToFloatArray(), b.ToHost(db).ToFloatArray()];
        }
        var (l1, l2) = (Linear(one), Linear(two));
        for (int i = 0; i < 3; i++) Bitwise(l2[i], l1[i], $"linear backward grad {i}");

        float[][] Attn(IBackend b)
        {
            var args = new AttentionArgs(b.FromHost(T(Floats(2 * 30 * 6 * 16, 1), 2, 30, 6, 16)), b.FromHost(T(Floats(2 * 30 * 2 * 16, 2), 2, 30, 2, 16)),
                b.FromHost(T(Floats(2 * 30 * 2 * 16, 3), 2, 30, 2, 16)), b.Zeros(new Shape(2, 30, 6, 16)), 30, 0, 0.25f);
            var (dq, dk, dv) = (b.Zeros(new Shape(2, 30, 6, 16)), b.Zeros(new Shape(2, 30, 2, 16)), b.Zeros(new Shape(2, 30, 2, 16)));
            b.AttentionBackward(args, b.FromHost(T(Floats(2 * 30 * 6 * 16, 4), 2, 30, 6, 16)), dq, dk, dv);
            return [b.ToHost(dq).ToFloatArray(), b.ToHost(dk).ToFloatArray(), b.ToHost(dv).ToFloatArray()];
        }
        var (a1, a2) = (Attn(one), Attn(two));
        for (int i = 0; i < 3; i++) Bitwise(a2[i], a1[i], $"attention backward grad {i}");

        // SmolLM heads (D 64, 9 query heads on 3 kv heads) over three 64-row blocks, with lse: the
        // tiled kernel's per-head dk/dv sums, on 1, 2 and 3 threads.
        float[][] AttnWide(IBackend b)
        {
            const int t = 150, h = 9, hkv = 3, d = 64;
            var args = new AttentionArgs(b.FromHost(T(Floats(t * h * d, 1, 2f), 1, t, h, d)), b.FromHost(T(Floats(t * hkv * d, 2, 2f), 1, t, hkv, d)),
                b.FromHost(T(Floats(t * hkv * d, 3), 1, t, hkv, d)), b.Zeros(new Shape(1, t, h, d)), t, 0, 0.125f, Lse: b.Zeros(new Shape(1, h, t)));
            b.Attention(args);
            var (dq, dk, dv) = (b.Zeros(new Shape(1, t, h, d)), b.Zeros(new Shape(1, t, hkv, d)), b.Zeros(new Shape(1, t, hkv, d)));
            b.AttentionBackward(args, b.FromHost(T(Floats(t * h * d, 4), 1, t, h, d)), dq, dk, dv);
            return [b.ToHost(args.Output).ToFloatArray(), b.ToHost(dq).ToFloatArray(), b.ToHost(dk).ToFloatArray(), b.ToHost(dv).ToFloatArray()];
        }
        using var three = Create(3);
        var (w1, w2, w3) = (AttnWide(one), AttnWide(two), AttnWide(three));
        for (int i = 0; i < 4; i++)
        {
            Bitwise(w2[i], w1[i], $"attention D64 output/grad {i}, 2 threads");
            Bitwise(w3[i], w1[i], $"attention D64 output/grad {i}, 3 threads");
        }

        float[][] Ce(IBackend b)
        {
            var (dh, dw) = (b.Zeros(new Shape(64, 32)), b.Zeros(new Shape(1000, 32)));
            var l = b.Zeros(new Shape(64));
            b.LmHeadCrossEntropy(b.FromHost(T(Floats(64 * 32, 1), 64, 32)), b.FromHost(T(Floats(1000 * 32, 2), 1000, 32)), Ints(64, 3, 1000), l, 1f, dh, dw);
            var dhAlone = b.Zeros(new Shape(64, 32)); // the one-pass path (no dLmHead)
            b.LmHeadCrossEntropy(b.FromHost(T(Floats(64 * 32, 1), 64, 32)), b.FromHost(T(Floats(1000 * 32, 2), 1000, 32)), Ints(64, 3, 1000), b.Zeros(new Shape(64)), 1f, dhAlone, null);
            return [b.ToHost(l).ToFloatArray(), b.ToHost(dh).ToFloatArray(), b.ToHost(dw).ToFloatArray(), b.ToHost(dhAlone).ToFloatArray()];
        }
        var (c1, c2) = (Ce(one), Ce(two));
        for (int i = 0; i < 4; i++) Bitwise(c2[i], c1[i], $"cross-entropy output {i}");

        var big = Floats(300_000, 5);
        Assert.Equal(one.SumOfSquares(one.FromHost(T(big, big.Length))), two.SumOfSquares(two.FromHost(T(big, big.Length))));

        float[][] Norm(IBackend b)
        {
            var (dx, dw) = (b.Zeros(new Shape(64, 576)), b.Zeros(new Shape(576)));
            var rstd = b.Zeros(new Shape(64));
            var xs = b.FromHost(T(Floats(64 * 576, 1), 64, 576));
            var ws = b.FromHost(T(Floats(576, 2), 576));
            b.RmsNorm(xs, ws, 1e-5f, b.Zeros(new Shape(64, 576)), rstd);
            b.RmsNormBackward(b.FromHost(T(Floats(64 * 576, 3), 64, 576)), xs, ws, rstd, dx, dw);
            return [b.ToHost(dx).ToFloatArray(), b.ToHost(dw).ToFloatArray()];
        }
        var (n1, n2) = (Norm(one), Norm(two));
        for (int i = 0; i < 2; i++) Bitwise(n2[i], n1[i], $"rmsnorm backward grad {i}");
    }
}
