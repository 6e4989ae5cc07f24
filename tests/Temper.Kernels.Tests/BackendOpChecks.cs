// The op-check suite (after ggml's test-backend-ops), forward half (BackendOpChecks.Backward.cs has the
// backward ops and finite-difference checks): every forward op of a backend against the scalar
// reference in Temper.Kernels.Cpu.Reference, on seeded random inputs at awkward sizes (lengths 1..67 so
// every SIMD tail is hit, GEMM shapes that hit every edge tile and the GEMV path), bf16 weights, GQA and
// masks in attention, and the shape checks. Each backend derives a class that says how to make itself.
using Temper.Core;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Tests.OpCheck;

namespace Temper.Kernels.Tests;

public abstract partial class BackendOpChecks : IDisposable
{
    private readonly IBackend _b;

    protected BackendOpChecks() => _b = Create(0);

    protected abstract IBackend Create(int threads);

    public void Dispose() => _b.Dispose();

    private float[] Run(Tensor t) => _b.ToHost(t).ToFloatArray();
    private Tensor Up(float[] values, params int[] shape) => _b.FromHost(T(values, shape));

    // ---- Embedding ----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Embedding_MatchesReference(bool bf16)
    {
        const int v = 11;
        for (int c = 1; c <= 67; c++)
        {
            var table = Floats(v * c, c);
            var ids = Ints(9, 100 + c, v);
            Tensor tt;
            if (bf16)
            {
                var b = ToBf16(table);
                table = Widen(b);
                tt = Bf16(b, v, c);
            }
            else tt = T(table, v, c);
            var expected = new float[9 * c];
            EmbeddingReference.Forward(table, ids, expected, c);
            var output = _b.Zeros(new Shape(9, c));
            _b.Embedding(_b.FromHost(tt), ids, output);
            Bitwise(Run(output), expected, $"embedding C={c}");
        }
    }

    // ---- RmsNorm ----

    [Fact]
    public void RmsNorm_MatchesReference_AtEveryLength()
    {
        foreach (int c in Enumerable.Range(1, 67).Append(576).Append(2048))
        {
            const int rows = 3;
            var x = Floats(rows * c, c, 3f);
            var w = Floats(c, 1000 + c);
            var y = new float[rows * c];
            var rstd = new float[rows];
            RmsNormReference.Forward(x, w, 1e-5f, y, rstd, c);
            var ty = _b.Zeros(new Shape(rows, c));
            var tr = _b.Zeros(new Shape(rows));
            _b.RmsNorm(_b.FromHost(T(x, rows, c)), _b.FromHost(T(w, c)), 1e-5f, ty, tr);
            CloseEach(Run(ty), y, $"rmsnorm y C={c}", 1e-5, 1e-4);
            CloseEach(Run(tr), rstd, $"rmsnorm rstd C={c}", 1e-5);
            var inPlace = _b.FromHost(T(x, rows, c)); // y may alias x (the decoders norm q and k heads in place)
            _b.RmsNorm(inPlace, _b.FromHost(T(w, c)), 1e-5f, inPlace);
            CloseEach(Run(inPlace), y, $"rmsnorm in place C={c}", 1e-5, 1e-4);
        }
    }

    // ---- Linear ----

    public static TheoryData<int, int, int> LinearShapes => new()
    {
        { 1, 1, 1 }, { 7, 13, 5 }, { 33, 65, 17 }, { 64, 64, 64 }, { 130, 70, 200 }, { 2, 3, 4 }, { 13, 1, 33 },
        { 1, 67, 33 }, { 1, 576, 100 }, { 1, 31, 7 }, { 25, 400, 37 }, { 3, 576, 100 }, { 4, 67, 33 }, { 5, 67, 33 },
    };

    [Theory]
    [MemberData(nameof(LinearShapes))]
    public void Linear_MatchesReference(int n, int k, int m)
    {
        foreach (bool bf16 in new[] { false, true })
        foreach (bool bias in new[] { false, true })
        foreach (bool accumulate in new[] { false, true })
        {
            var x = Floats(n * k, n + k + m);
            var w = Floats(m * k, 7 * m + k);
            Tensor tw = T(w, m, k);
            if (bf16)
            {
                var b = ToBf16(w);
                w = Widen(b);
                tw = Bf16(b, m, k);
            }
            var bv = bias ? Floats(m, 3 * m) : [];
            var y0 = Floats(n * m, 5 * n);
            var expected = (float[])y0.Clone();
            LinearReference.Forward(x, w, bv, expected, n, k, m, accumulate);
            var ty = _b.FromHost(T((float[])y0.Clone(), n, m));
            _b.Linear(_b.FromHost(T(x, n, k)), _b.FromHost(tw), bias ? _b.FromHost(T(bv, m)) : null, ty, accumulate);
            Close(Run(ty), expected, $"linear {n}x{k}x{m} bf16={bf16} bias={bias} accumulate={accumulate}");
        }
    }

    [Fact]
    public void Linear_TakesBatchedRows()
    {
        var x = Floats(2 * 3 * 10, 1);
        var w = Floats(6 * 10, 2);
        var expected = new float[2 * 3 * 6];
        LinearReference.Forward(x, w, default, expected, 6, 10, 6, false);
        var y = _b.Zeros(new Shape(2, 3, 6));
        _b.Linear(_b.FromHost(T(x, 2, 3, 10)), _b.FromHost(T(w, 6, 10)), null, y);
        Close(Run(y), expected, "linear [2,3,10]");
    }

    [Fact]
    public void Linear_WithNoRows_IsANoOp()
    {
        var y = _b.Zeros(new Shape(0, 5));
        _b.Linear(_b.Zeros(new Shape(0, 3)), Up(Floats(15, 1), 5, 3), Up(Floats(5, 2), 5), y);
        Assert.Equal(0, y.Elements);
    }

    // ---- LoraLinear ----

    [Theory]
    [InlineData(5, 13, 7, 3, false, 2f)]
    [InlineData(1, 64, 33, 4, false, 0.7f)] // a scale that is not a power of two: the CPU kernel scales xa, the reference the product
    [InlineData(20, 70, 40, 8, true, 2f)]
    [InlineData(20, 70, 40, 8, false, 0.7f)]
    [InlineData(1, 70, 40, 16, true, 2f)]
    public void LoraLinear_MatchesReference(int n, int k, int m, int r, bool bf16, float scale)
    {
        var x = Floats(n * k, 1);
        var w = Floats(m * k, 2);
        Tensor tw = T(w, m, k);
        if (bf16)
        {
            var b16 = ToBf16(w);
            w = Widen(b16);
            tw = Bf16(b16, m, k);
        }
        var bias = Floats(m, 3);
        var a = Floats(r * k, 4);
        var b = Floats(m * r, 5);
        var y = new float[n * m];
        var xa = new float[n * r];
        LoraLinearReference.Forward(x, w, bias, a, b, scale, y, xa, n, k, m, r);
        var ty = _b.Zeros(new Shape(n, m));
        var txa = _b.Zeros(new Shape(n, r));
        _b.LoraLinear(_b.FromHost(T(x, n, k)), _b.FromHost(tw), _b.FromHost(T(bias, m)), _b.FromHost(T(a, r, k)), _b.FromHost(T(b, m, r)), scale, ty, txa);
        Close(Run(ty), y, "lora y");
        Close(Run(txa), xa, "lora xa");
    }

    // ---- Rope ----

    [Fact]
    public void Rope_MatchesReference_AtEveryHalfWidth()
    {
        for (int half = 1; half <= 40; half++)
        foreach (float scaling in new[] { 1f, 0.75f })
        {
            int d = 2 * half, n = 5, heads = 3;
            var freqs = new RopeFrequencies(RopeFrequencies.DefaultInvFreq(d, 10000), scaling);
            var positions = Ints(n, half, 5000);
            var x = Floats(n * heads * d, 10 + half);
            var expected = (float[])x.Clone();
            RopeReference.Forward(expected, positions, freqs.InvFreq, scaling, heads);
            var tx = _b.FromHost(T(x, n, heads, d));
            _b.Rope(tx, positions, freqs);
            CloseEach(Run(tx), expected, $"rope D={d} scaling={scaling}", 1e-5, 1e-5);
        }
    }

    // The same positions with other frequencies or another scaling in turn (a backend may keep the last call's cos/sin).
    [Fact]
    public void Rope_MatchesReference_WhenOnlyTheFrequenciesOrScalingChange()
    {
        int n = 6, heads = 2, d = 16;
        var positions = Ints(n, 7, 300);
        foreach (var (theta, scaling) in new[] { (10000f, 1f), (500f, 1f), (500f, 0.75f), (10000f, 1f) })
        {
            var freqs = new RopeFrequencies(RopeFrequencies.DefaultInvFreq(d, theta), scaling);
            var x = Floats(n * heads * d, 11);
            var expected = (float[])x.Clone();
            RopeReference.Forward(expected, positions, freqs.InvFreq, scaling, heads);
            var tx = _b.FromHost(T(x, n, heads, d));
            _b.Rope(tx, positions, freqs);
            CloseEach(Run(tx), expected, $"rope theta={theta} scaling={scaling}", 1e-5, 1e-5);
        }
    }

    // ---- Attention ----

    public static TheoryData<int, int, int, int, int, int, int, int, bool> AttentionCases => new()
    {
        // B, Tq, H, S, Hkv, D, kvLength, offset, mask
        { 2, 9, 4, 9, 2, 8, 9, 0, false },      // prefill, GQA 2:1
        { 2, 7, 6, 12, 2, 16, 7, 0, true },     // left-padded batch: queries 0..2 of batch 1 see no key
        { 2, 1, 4, 20, 1, 64, 13, 12, true },   // decode step, MQA, cache larger than used
        { 1, 5, 3, 16, 3, 12, 13, 8, false },   // chunked prefill after 8 cached tokens
        { 1, 17, 2, 17, 2, 67, 17, 0, true },   // odd head size
        { 3, 33, 9, 33, 3, 64, 33, 0, false },  // SmolLM-like heads
        { 1, 4, 2, 6, 1, 5, 3, 0, false },      // kv shorter than the queries' positions
        { 1, 70, 2, 80, 1, 16, 75, 5, true },   // more query rows than one 64-row block
        { 2, 1, 6, 9, 3, 8, 9, 8, false },      // decode step, GQA 2:1, no mask
        { 2, 1, 6, 40, 2, 80, 37, 36, true },   // decode step, D 80 (one 64-wide and one 16-wide chunk), GQA 3:1
        { 1, 1, 8, 30, 2, 128, 30, 29, false }, // decode step, D 128, GQA 4:1
        { 3, 1, 8, 300, 4, 64, 300, 299, true }, // decode steps of 3 sequences, long enough to split across 2 threads
        { 1, 1, 72, 8, 72, 16, 8, 7, false },   // decode step with more heads than one 64-row block
    };

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void Attention_MatchesReference(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool mask)
    {
        var q = Floats(batch * tq * heads * d, 1, 2f);
        var k = Floats(batch * s * kvHeads * d, 2, 2f);
        var v = Floats(batch * s * kvHeads * d, 3);
        int[] keyMask = [];
        if (mask)
        {
            keyMask = new int[batch * kvLength];
            for (int b = 0; b < batch; b++)
                for (int j = 0; j < kvLength; j++) keyMask[b * kvLength + j] = j < 3 * b ? 0 : 1; // batch b: first 3b keys padded
            if (kvLength > 5) keyMask[kvLength - 2] = 0; // and a hole
        }
        float scale = 1f / MathF.Sqrt(d);
        var expected = new float[q.Length];
        var lse = new float[batch * heads * tq];
        AttentionReference.Forward(q, k, v, expected, lse, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, keyMask);
        var to = _b.Zeros(new Shape(batch, tq, heads, d));
        var tl = _b.Zeros(new Shape(batch, heads, tq));
        _b.Attention(new AttentionArgs(_b.FromHost(T(q, batch, tq, heads, d)), _b.FromHost(T(k, batch, s, kvHeads, d)), _b.FromHost(T(v, batch, s, kvHeads, d)),
            to, kvLength, offset, scale, keyMask, tl));
        Close(Run(to), expected, "attention out");
        CloseEach(Run(tl), lse, "attention lse", 1e-5, 0.1); // log-domain: about 1e-6 absolute near 0
        if (mask && offset == 0 && batch > 1) Assert.Contains(lse, float.IsNegativeInfinity); // fully padded queries were exercised
    }

    // bf16 q, k, v, read as they are (widened): forward and backward give the results of f32 inputs holding the same values, bit for bit.
    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void Attention_from_bf16_inputs_gives_the_results_of_their_values(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool mask)
    {
        ushort[] q = ToBf16(Floats(batch * tq * heads * d, 1, 2f)), k = ToBf16(Floats(batch * s * kvHeads * d, 2, 2f)), v = ToBf16(Floats(batch * s * kvHeads * d, 3));
        var dOut = Floats(batch * tq * heads * d, 4);
        int[] keyMask = mask ? [.. Enumerable.Range(0, batch * kvLength).Select(i => i % kvLength % 5 == 2 ? 0 : 1)] : [];
        float[][] Pass(bool bf16)
        {
            Tensor Input(ushort[] x, params int[] shape) => _b.FromHost(bf16 ? Bf16(x, shape) : T(Widen(x), shape));
            using var tq4 = Input(q, batch, tq, heads, d);
            using var tk = Input(k, batch, s, kvHeads, d);
            using var tv = Input(v, batch, s, kvHeads, d);
            using var to = _b.Zeros(new Shape(batch, tq, heads, d));
            using var tl = _b.Zeros(new Shape(batch, heads, tq));
            var args = new AttentionArgs(tq4, tk, tv, to, kvLength, offset, -0.7f / MathF.Sqrt(d), keyMask, tl);
            _b.Attention(args);
            using var tdOut = Up(dOut, batch, tq, heads, d);
            using var dq = _b.Zeros(new Shape(batch, tq, heads, d));
            using var dk = _b.Zeros(new Shape(batch, s, kvHeads, d));
            using var dv = _b.Zeros(new Shape(batch, s, kvHeads, d));
            _b.AttentionBackward(args, tdOut, dq, dk, dv);
            return [Run(to), Run(tl), Run(dq), Run(dk), Run(dv)];
        }
        var (f32, bf16) = (Pass(false), Pass(true));
        for (int i = 0; i < f32.Length; i++) Assert.Equal(f32[i].Select(BitConverter.SingleToInt32Bits), bf16[i].Select(BitConverter.SingleToInt32Bits));
    }

    // RoundToBf16: BFloat16.FromSingle's bits (nearest even, ties, NaN kept quiet, infinities, the largest finite values rounding up).
    [Fact]
    public void RoundToBf16_gives_the_bits_of_BFloat16()
    {
        foreach (int n in (int[])[.. Enumerable.Range(1, 67), 1000])
        {
            var x = Floats(n, n, 3f);
            float[] special = [float.NaN, float.PositiveInfinity, float.NegativeInfinity, -0f, float.MaxValue, float.Epsilon,
                BitConverter.Int32BitsToSingle(0x3F808000), BitConverter.Int32BitsToSingle(0x3F818000), BitConverter.Int32BitsToSingle(0x3F808001)];
            for (int i = 0; i < n && i < special.Length; i++) x[(i * 7) % n] = special[i];
            using var tx = Up(x, n);
            using var ty = _b.Zeros(new Shape(n), DType.BF16);
            _b.RoundToBf16(tx, ty);
            using var host = _b.ToHost(ty);
            Assert.Equal(ToBf16(x), host.Span<ushort>().ToArray());
        }
        var e = Assert.Throws<ArgumentException>(() => _b.RoundToBf16(_b.Zeros(new Shape(4)), _b.Zeros(new Shape(5), DType.BF16)));
        Assert.Contains("RoundToBf16", e.Message);
    }

    // ---- elementwise ----

    [Fact]
    public void SwiGlu_MatchesReference_AtEveryLength()
    {
        foreach (int n in Enumerable.Range(1, 67).Append(1000))
        {
            var g = Floats(n, n, 12f);
            var u = Floats(n, 2 * n, 3f);
            var expected = new float[n];
            SwiGluReference.Forward(g, u, expected);
            var y = _b.Zeros(new Shape(n));
            _b.SwiGlu(_b.FromHost(T(g, n)), _b.FromHost(T(u, n)), y);
            CloseEach(Run(y), expected, $"swiglu n={n}", 2e-6, 1e-6);
        }
    }

    [Fact]
    public void AddRmsNorm_IsAddThenRmsNorm_AtEveryLength()
    {
        for (int c = 1; c <= 67; c++)
        {
            const int rows = 3;
            var (a, b, w) = (Floats(rows * c, c, 3f), Floats(rows * c, 2 * c), Floats(c, 100 + c));
            var sum = new float[rows * c];
            for (int i = 0; i < sum.Length; i++) sum[i] = a[i] + b[i];
            var (y, rstd) = (new float[rows * c], new float[rows]);
            RmsNormReference.Forward(sum, w, 1e-5f, y, rstd, c);
            var (ts, ty, tr) = (_b.Zeros(new Shape(rows, c)), _b.Zeros(new Shape(rows, c)), _b.Zeros(new Shape(rows)));
            _b.AddRmsNorm(Up(a, rows, c), Up(b, rows, c), ts, Up(w, c), 1e-5f, ty, tr);
            Assert.Equal(sum, Run(ts));
            CloseEach(Run(ty), y, $"addrmsnorm C={c}", 1e-5, 1e-6);
            CloseEach(Run(tr), rstd, $"addrmsnorm rstd C={c}", 1e-5, 1e-6);
        }
    }

    /// <summary>The bf16 forms (IBackend.SwiGluRounded, and SwiGlu / SwiGluBackward on its kept bf16 gate and up): the kept values are
    /// BFloat16.FromSingle's bits (ties to even, NaN kept), y is the reference's from them and SwiGlu on them rebuilds it bit for bit,
    /// also with y over gate; the backward matches the reference at the widened values, dGate over dy too.</summary>
    [Fact]
    public void SwiGlu_bf16_forms_MatchReference_AtEveryLength()
    {
        foreach (int n in Enumerable.Range(1, 67).Append(1000))
        {
            var g = Floats(n, 5 * n, 12f);
            var u = Floats(n, 6 * n, 3f);
            var dy = Floats(n, 7 * n);
            g[0] = BitConverter.Int32BitsToSingle(0x3F818000); // a tie: rounds up to the even 0x3F82
            if (n > 1) g[1] = BitConverter.Int32BitsToSingle(0x3F808000); // a tie: rounds down to the even 0x3F80
            if (n > 2) u[2] = float.NaN;
            var (y, gk, uk) = (new float[n], new ushort[n], new ushort[n]);
            SwiGluReference.ForwardRounded(g, u, y, gk, uk);
            Assert.Equal((ushort)0x3F82, gk[0]);
            var (tgk, tuk, ty, ty2) = (_b.Zeros(new Shape(n), DType.BF16), _b.Zeros(new Shape(n), DType.BF16), _b.Zeros(new Shape(n)), _b.Zeros(new Shape(n)));
            _b.SwiGluRounded(Up(g, n), Up(u, n), ty, tgk, tuk);
            Assert.Equal(gk, _b.ToHost(tgk).Span<ushort>().ToArray());
            Assert.Equal(uk, _b.ToHost(tuk).Span<ushort>().ToArray());
            var got = Run(ty);
            _b.SwiGlu(tgk, tuk, ty2);
            Assert.Equal(got.Select(BitConverter.SingleToInt32Bits), Run(ty2).Select(BitConverter.SingleToInt32Bits));
            var over = Up(g, n); // y over gate
            _b.SwiGluRounded(over, Up(u, n), over, _b.Zeros(new Shape(n), DType.BF16), _b.Zeros(new Shape(n), DType.BF16));
            Assert.Equal(got.Select(BitConverter.SingleToInt32Bits), Run(over).Select(BitConverter.SingleToInt32Bits));
            CloseEach(WithoutNaN(got, n), WithoutNaN(y, n), $"swiglu rounded n={n}", 2e-6, 1e-6);

            var (gw, uw) = (gk.Select(BFloat16.ToSingle).ToArray(), uk.Select(BFloat16.ToSingle).ToArray());
            var (dg, du) = (new float[n], new float[n]);
            SwiGluReference.Backward(dy, gw, uw, dg, du);
            var (tdu, inPlace) = (_b.Zeros(new Shape(n)), Up(dy, n));
            _b.SwiGluBackward(inPlace, tgk, tuk, inPlace, tdu); // dGate over dy
            CloseEach(WithoutNaN(Run(inPlace), n), WithoutNaN(dg, n), $"swiglu bf16 dGate n={n}", 1e-5, 1e-4);
            CloseEach(Run(tdu), du, $"swiglu bf16 dUp n={n}", 1e-5, 1e-4);
        }
        // element 2's up is NaN: its y and dGate must be NaN, the rest finite and close
        static float[] WithoutNaN(float[] v, int n)
        {
            if (n > 2)
            {
                Assert.True(float.IsNaN(v[2]), "a NaN up gives a NaN y and dGate");
                v = [.. v];
                v[2] = 0;
            }
            return v;
        }
        var f32 = _b.Zeros(new Shape(2, 3));
        var ex = Assert.Throws<ArgumentException>(() => _b.SwiGluRounded(f32, f32, f32, f32, _b.Zeros(new Shape(2, 3), DType.BF16)));
        Assert.Contains("SwiGluRounded", ex.Message);
        Assert.Contains("must be bf16", ex.Message);
    }

    [Fact]
    public void Add_MatchesReference_AtEveryLength_AndInPlace()
    {
        for (int n = 1; n <= 67; n++)
        {
            var a = Floats(n, n);
            var b = Floats(n, 2 * n);
            var expected = new float[n];
            AddReference.Forward(a, b, expected);
            var ta = _b.FromHost(T(a, n));
            _b.Add(ta, _b.FromHost(T(b, n)), ta);
            Bitwise(Run(ta), expected, $"add n={n}");
        }
    }

    [Fact]
    public void Dropout_MatchesReference_AtEveryLength_InPlace_AndKeepsAboutOneMinusP()
    {
        foreach (float p in new[] { 0f, 0.1f, 0.5f, 0.9f })
            for (int n = 1; n <= 67; n++)
            {
                var x = Floats(n, n);
                var expected = new float[n];
                DropoutReference.Forward(x, expected, (ulong)n * 977, p);
                var y = _b.Zeros(new Shape(n));
                _b.Dropout(_b.FromHost(T(x, n)), (ulong)n * 977, p, y);
                Bitwise(Run(y), expected, $"dropout p={p} n={n}");
                var tx = _b.FromHost(T(x, n));
                _b.Dropout(tx, (ulong)n * 977, p, tx);
                Bitwise(Run(tx), expected, $"dropout in place p={p} n={n}");
                if (p == 0) Bitwise(expected, x, $"dropout p=0 n={n}");
            }
        const int big = 40000;
        var ones = Enumerable.Repeat(1f, big).ToArray();
        var kept = _b.Zeros(new Shape(big));
        _b.Dropout(_b.FromHost(T(ones, big)), 7, 0.25f, kept);
        var k = Run(kept);
        Assert.All(k, v => Assert.True(v == 0 || Math.Abs(v - 1 / 0.75f) < 1e-6));
        Assert.InRange(k.Count(v => v != 0) / (double)big, 0.74, 0.76);
        var other = _b.Zeros(new Shape(big));
        _b.Dropout(_b.FromHost(T(ones, big)), 8, 0.25f, other);
        Assert.NotEqual(k, Run(other)); // another seed, another mask
        Assert.Throws<ArgumentException>(() => _b.Dropout(kept, 7, 1f, kept));
    }

    [Fact]
    public void LogSoftmax_MatchesReference_AtEveryLength()
    {
        foreach (int v in Enumerable.Range(1, 67).Append(49152))
        {
            const int rows = 2;
            var x = Floats(rows * v, v, 20f);
            var expected = new float[rows * v];
            LogSoftmaxReference.Forward(x, expected, v);
            var y = _b.Zeros(new Shape(rows, v));
            _b.LogSoftmax(_b.FromHost(T(x, rows, v)), y);
            CloseEach(Run(y), expected, $"log_softmax V={v}", 1e-5, 0.1);
        }
    }

    // ---- determinism: one thread and two give the same bits ----

    [Fact]
    public void Results_DoNotDependOnThreadCount()
    {
        using var one = Create(1);
        using var two = Create(2);
        float[] Linear(IBackend b, int n, int k, int m, bool bf16)
        {
            var w = Floats(m * k, 2);
            var tw = bf16 ? Bf16(ToBf16(w), m, k) : T(w, m, k);
            var y = b.Zeros(new Shape(n, m));
            b.Linear(b.FromHost(T(Floats(n * k, 1), n, k)), b.FromHost(tw), b.FromHost(T(Floats(m, 3), m)), y);
            return b.ToHost(y).ToFloatArray();
        }
        foreach (var (n, k, m) in new[] { (130, 70, 200), (300, 517, 129), (1, 1000, 300), (50, 900, 1000) })
        {
            Bitwise(Linear(one, n, k, m, false), Linear(two, n, k, m, false), $"linear {n}x{k}x{m}");
            Bitwise(Linear(one, n, k, m, true), Linear(two, n, k, m, true), $"linear bf16 {n}x{k}x{m}");
        }

        float[] Attn(IBackend b)
        {
            var o = b.Zeros(new Shape(2, 40, 6, 32));
            b.Attention(new AttentionArgs(b.FromHost(T(Floats(2 * 40 * 6 * 32, 1), 2, 40, 6, 32)), b.FromHost(T(Floats(2 * 40 * 2 * 32, 2), 2, 40, 2, 32)),
                b.FromHost(T(Floats(2 * 40 * 2 * 32, 3), 2, 40, 2, 32)), o, 40, 0, 0.2f));
            return b.ToHost(o).ToFloatArray();
        }
        Bitwise(Attn(one), Attn(two), "attention");

        float[] Norm(IBackend b)
        {
            var y = b.Zeros(new Shape(64, 576));
            b.RmsNorm(b.FromHost(T(Floats(64 * 576, 1), 64, 576)), b.FromHost(T(Floats(576, 2), 576)), 1e-5f, y);
            return b.ToHost(y).ToFloatArray();
        }
        Bitwise(Norm(one), Norm(two), "rmsnorm");

        float[] LogSm(IBackend b)
        {
            var y = b.Zeros(new Shape(8, 5000));
            b.LogSoftmax(b.FromHost(T(Floats(8 * 5000, 1, 10f), 8, 5000)), y);
            return b.ToHost(y).ToFloatArray();
        }
        Bitwise(LogSm(one), LogSm(two), "log_softmax");

        // Element-wise ops split across threads in whole SIMD vectors; a length with a scalar tail.
        const int len = 3 * (1 << 15) + 5;
        float[] Elementwise(IBackend b)
        {
            var (g, u, d) = (b.FromHost(T(Floats(len, 1, 4f), len)), b.FromHost(T(Floats(len, 2), len)), b.FromHost(T(Floats(len, 3), len)));
            var (y, s, dg, du) = (b.Zeros(new Shape(len)), b.Zeros(new Shape(len)), b.Zeros(new Shape(len)), b.Zeros(new Shape(len)));
            b.SwiGlu(g, u, y);
            b.Add(g, u, s);
            b.SwiGluBackward(d, g, u, dg, du);
            return [.. b.ToHost(y).ToFloatArray(), .. b.ToHost(s).ToFloatArray(), .. b.ToHost(dg).ToFloatArray(), .. b.ToHost(du).ToFloatArray()];
        }
        Bitwise(Elementwise(one), Elementwise(two), "swiglu, add, swiglu backward");
    }

    // ---- shape checks ----

    [Fact]
    public void Mismatches_AreArgumentExceptions_NamingOpAndShapes()
    {
        var ex = Assert.Throws<ArgumentException>(() => _b.Linear(_b.Zeros(new Shape(4, 8)), _b.Zeros(new Shape(3, 9)), null, _b.Zeros(new Shape(4, 3))));
        Assert.Contains("Linear", ex.Message);
        Assert.Contains("[4,8]", ex.Message);
        Assert.Contains("[3,9]", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => _b.Add(_b.Zeros(new Shape(4)), _b.Zeros(new Shape(5)), _b.Zeros(new Shape(4))));
        Assert.Contains("Add", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => _b.RmsNorm(_b.Zeros(new Shape(2, 8)), _b.Zeros(new Shape(7)), 1e-5f, _b.Zeros(new Shape(2, 8))));
        Assert.Contains("RmsNorm", ex.Message);
        // a message whose holes are skipped while the check passes (CheckMessage) is whole when it fails
        ex = Assert.Throws<ArgumentException>(() => _b.CopyRows(_b.Zeros(new Shape(2, 4)), 0, _b.Zeros(new Shape(2, 3)), 0, 1));
        Assert.Matches(@"CopyRows: src tensor F32\[2,4\] and dst tensor F32\[2,3\] must share", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => _b.Attention(new AttentionArgs(_b.Zeros(new Shape(1, 2, 3, 4)), _b.Zeros(new Shape(1, 2, 2, 4)),
            _b.Zeros(new Shape(1, 2, 2, 4)), _b.Zeros(new Shape(1, 2, 3, 4)), 2, 0, 1f)));
        Assert.Contains("Attention", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => _b.Attention(new AttentionArgs(_b.Zeros(new Shape(1, 2, 2, 4), DType.BF16), _b.Zeros(new Shape(1, 2, 2, 4)),
            _b.Zeros(new Shape(1, 2, 2, 4), DType.BF16), _b.Zeros(new Shape(1, 2, 2, 4)), 2, 0, 1f)));
        Assert.Contains("q is bf16, so", ex.Message); // all three bf16 or none
        ex = Assert.Throws<ArgumentException>(() => _b.AttentionBackward(new AttentionArgs(_b.Zeros(new Shape(1, 2, 2, 4), DType.BF16), _b.Zeros(new Shape(1, 2, 2, 4), DType.BF16),
            _b.Zeros(new Shape(1, 2, 2, 4)), _b.Zeros(new Shape(1, 2, 2, 4)), 2, 0, 1f), _b.Zeros(new Shape(1, 2, 2, 4)), _b.Zeros(new Shape(1, 2, 2, 4)),
            _b.Zeros(new Shape(1, 2, 2, 4)), _b.Zeros(new Shape(1, 2, 2, 4))));
        Assert.Matches("AttentionBackward: q is bf16, so .* must be too", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => _b.SwiGlu(_b.Zeros(new Shape(2, 3)), _b.Zeros(new Shape(2, 3), DType.BF16), _b.Zeros(new Shape(2, 3))));
        Assert.Contains("SwiGlu", ex.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => _b.Embedding(_b.Zeros(new Shape(4, 2)), [4], _b.Zeros(new Shape(1, 2))));
    }
}

public sealed class CpuOpChecks : BackendOpChecks
{
    protected override IBackend Create(int threads) => new Cpu.CpuBackend(threads);
}
