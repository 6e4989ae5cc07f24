// The op-check suite for the ILGPU backend (after ggml's test-backend-ops): every op of IBackend,
// forward and backward, on seeded random tiny inputs, against the CPU backend (forward ops, and
// backward ops where CpuBackend has them) and the f64 scalar references of Temper.Kernels.Cpu.Reference. Each test uploads
// its inputs, runs the op on the device and reads the result back; results must live in this
// backend's device memory. Instantiated per device below: ILGPU's CPU accelerator (always, so CI runs
// it) and CUDA (skipped, visibly, without a CUDA device). Shapes are tiny: a launch on the CPU
// accelerator is not free.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cpu.Reference;
using static Temper.Kernels.Ilgpu.Tests.Check;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class IlgpuOpChecks(DeviceFixture device) : DeviceOpChecks(device)
{
    /// <summary>Runs a CPU backend op when it exists; false when the CPU backend lacks it (not yet on this branch).</summary>
    private static bool CpuHas(Action op)
    {
        try
        {
            op();
            return true;
        }
        catch (NotSupportedException)
        {
            return false;
        }
    }

    // ---- memory ----

    [Fact]
    public void Tensors_round_trip_and_zeros_are_zero()
    {
        var values = Floats(37, 1);
        var t = Up(values, 37);
        Assert.Equal(B.Name, t.Storage.Device!.Name);
        Bitwise(Down(t), values, "round trip");
        var z = Zeros(5, 3);
        Assert.All(Down(z), v => Assert.Equal(0f, v));
        var bf = Check.ToBf16(values, out _);
        using var hb = B.ToHost(UpBf16(bf, 37));
        Assert.Equal(DType.BF16, hb.DType);
        Assert.Equal(bf, hb.Span<ushort>().ToArray());
    }

    [Fact]
    public void Freed_tensors_are_reused_from_the_pool_and_zeroed()
    {
        // A backend of its own: the shared one's pool counters move with the other classes' tests running beside this one.
        _ = B; // skips where the device is missing
        using var own = IlgpuBackend.Create(Device.Kind);
        var values = Floats(1000, 11);
        var (hits, _) = own.PoolCounts;
        var t = own.FromHost(Host(values, 10, 100));
        t.Dispose();
        t.Dispose(); // a second dispose (a view's) returns nothing twice
        long pooled = own.PooledBytes;
        Assert.True(pooled >= 4000);
        using var z = own.Zeros(new Shape(10, 100));
        Assert.Equal(hits + 1, own.PoolCounts.Hits);
        Assert.Equal(pooled - z.Storage.ByteLength, own.PooledBytes);
        using var zh = own.ToHost(z);
        Assert.All(zh.ToFloatArray(), v => Assert.Equal(0f, v));
        Assert.Throws<ObjectDisposedException>(() => own.Scale(t, 1f));
    }

    // The LM head's arena scratch stays held after the op and the meter counts it: a second call leaves the arena at the
    // largest op's size, which the plan's prediction (IMemoryMeter.LmHeadScratchBytes) gives, the GEMMs' split-K partials aside.
    [Fact]
    public void The_meter_counts_the_lm_heads_arena_scratch_as_the_plan_predicts()
    {
        _ = B;
        using var own = IlgpuBackend.Create(Device.Kind);
        var meter = (IMemoryMeter)own;
        const int n = 64, c = 128, v = 8192; // the chunk's logits alone 2 MiB
        using var hidden = own.FromHost(Host(Floats(n * c, 41), n, c));
        using var head = own.FromHost(Host(Floats(v * c, 42), v, c));
        using var losses = own.Zeros(new Shape(n));
        using var dHidden = own.Zeros(new Shape(n, c));
        var labels = Enumerable.Range(0, n).Select(i => i * 7 % v).ToArray();
        long before = meter.LiveBytes;
        meter.ResetPeak();
        for (int call = 0; call < 2; call++) own.LmHeadCrossEntropy(hidden, head, labels, losses, 1f, dHidden, null);
        long held = meter.LiveBytes - before, predicted = meter.LmHeadScratchBytes(n, c, v, onePass: true);
        Assert.True(predicted > 1 << 20, $"{predicted}: past the arena's first 1 MiB, so its size is the op's");
        Assert.True(held >= predicted && held <= predicted + 4L * n * c * 8, $"arena held {held} bytes, the plan predicts {predicted}");
        // the first call, growing the arena, held little more than that at its peak (no outgrown buffers doubling past it)
        long spike = meter.PeakBytes - before;
        Assert.True(spike <= predicted + 4L * n * c * 8 + (2 << 20), $"the first call's arena peaked at {spike} bytes, the plan predicts {predicted}");
    }

    [Fact]
    public void Uninitialized_takes_a_pooled_buffer_as_is_or_poisoned_and_the_meter_reserves_the_pool()
    {
        _ = B; // skips where the device is missing
        using var own = IlgpuBackend.Create(Device.Kind);
        own.PoisonMemory = false; // (TEMPER_POISON_MEMORY=1 may be set for the run)
        var meter = (IMemoryMeter)own;
        var values = Floats(1000, 12);
        var t = own.FromHost(Host(values, 10, 100));
        long live = meter.LiveBytes;
        t.Dispose();
        Assert.Equal(live - t.Storage.ByteLength, meter.LiveBytes);
        Assert.Equal(meter.LiveBytes + own.PooledBytes, meter.ReservedBytes);
        var (hits, _) = own.PoolCounts;
        using var u = own.Uninitialized(new Shape(10, 100));
        Assert.Equal(hits + 1, own.PoolCounts.Hits);
        using var uh = own.ToHost(u);
        Assert.Equal(values, uh.ToFloatArray()); // not cleared: the freed tensor's values
        own.PoisonMemory = true;
        using var poisoned = own.Uninitialized(new Shape(10, 100));
        using var ph = own.ToHost(poisoned);
        Assert.All(ph.ToFloatArray(), v => Assert.True(float.IsNaN(v)));
    }

    [Fact]
    public void CopyRows_matches_cpu()
    {
        var src = Floats(6 * 5, 2);
        var dst = Floats(4 * 5, 3);
        var expected = Host((float[])dst.Clone(), 4, 5);
        Cpu.CopyRows(Host(src, 6, 5), 2, expected, 1, 3);
        var d = Up(dst, 4, 5);
        B.CopyRows(Up(src, 2, 3, 5), 2, d, 1, 3);
        Bitwise(Down(d), expected.Floats, "copy rows");
        Assert.Throws<ArgumentException>(() => B.CopyRows(Up(src, 6, 5), 4, d, 0, 3));
    }

    // ---- forward ----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Embedding_matches_cpu(bool bf16)
    {
        const int v = 11, c = 13;
        var table = Floats(v * c, 4);
        var ids = Ints(9, 5, v);
        Tensor host = bf16 ? HostBf16(Check.ToBf16(table, out _), v, c) : Host(table, v, c);
        var expected = Tensor.Zeros(new Shape(9, c));
        Cpu.Embedding(host, ids, expected);
        var output = Zeros(9, c);
        B.Embedding(Own(B.FromHost(host)), ids, output);
        Bitwise(Down(output), expected.Floats, $"embedding bf16={bf16}");
    }

    [Fact]
    public void RmsNorm_matches_cpu()
    {
        foreach (int c in new[] { 1, 7, 33 })
        {
            const int rows = 3;
            var x = Floats(rows * c, c, 3f);
            var w = Floats(c, 100 + c);
            var y = Tensor.Zeros(new Shape(rows, c));
            var rstd = Tensor.Zeros(new Shape(rows));
            Cpu.RmsNorm(Host(x, rows, c), Host(w, c), 1e-5f, y, rstd);
            var ty = Zeros(rows, c);
            var tr = Zeros(rows);
            B.RmsNorm(Up(x, rows, c), Up(w, c), 1e-5f, ty, tr);
            Close(Down(ty), y.Floats, $"rmsnorm y C={c}");
            Close(Down(tr), rstd.Floats, $"rmsnorm rstd C={c}");
            var inPlace = Up(x, rows, c); // y may alias x (the decoders norm q and k heads in place)
            B.RmsNorm(inPlace, Up(w, c), 1e-5f, inPlace);
            Close(Down(inPlace), y.Floats, $"rmsnorm in place C={c}");
        }
    }

    /// <summary>AddRmsNorm (the residual add and the norm in one kernel) gives the bits of Add then RmsNorm on this device, sum
    /// apart and over a, and the CPU's within f32 bounds.</summary>
    [Fact]
    public void AddRmsNorm_gives_the_bits_of_add_then_rmsnorm()
    {
        foreach (int c in new[] { 1, 7, 33, 300 })
        {
            const int rows = 3;
            var (a, b, w) = (Floats(rows * c, c, 3f), Floats(rows * c, 2 * c), Floats(c, 100 + c));
            var (sum, y, rstd) = (Zeros(rows, c), Zeros(rows, c), Zeros(rows));
            B.Add(Up(a, rows, c), Up(b, rows, c), sum);
            B.RmsNorm(sum, Up(w, c), 1e-5f, y, rstd);
            var (fs, fy, fr) = (Zeros(rows, c), Zeros(rows, c), Zeros(rows));
            B.AddRmsNorm(Up(a, rows, c), Up(b, rows, c), fs, Up(w, c), 1e-5f, fy, fr);
            Bitwise(Down(fs), Down(sum), $"addrmsnorm sum C={c}");
            Bitwise(Down(fy), Down(y), $"addrmsnorm y C={c}");
            Bitwise(Down(fr), Down(rstd), $"addrmsnorm rstd C={c}");
            var overA = Up(a, rows, c);
            B.AddRmsNorm(overA, Up(b, rows, c), overA, Up(w, c), 1e-5f, fy);
            Bitwise(Down(overA), Down(sum), $"addrmsnorm sum over a C={c}");
            Bitwise(Down(fy), Down(y), $"addrmsnorm y, sum over a C={c}");
            var (cs, cy) = (Tensor.Zeros(new Shape(rows, c)), Tensor.Zeros(new Shape(rows, c)));
            ((IBackend)Cpu).AddRmsNorm(Host(a, rows, c), Host(b, rows, c), cs, Host(w, c), 1e-5f, cy);
            Close(Down(fy), cy.Floats, $"addrmsnorm against the cpu C={c}");
        }
    }

    public static TheoryData<int, int, int> LinearShapes => new() { { 1, 1, 1 }, { 7, 13, 5 }, { 3, 33, 17 } };

    [Theory]
    [MemberData(nameof(LinearShapes))]
    public void Linear_matches_cpu(int n, int k, int m)
    {
        foreach (bool bf16 in new[] { false, true })
        foreach (bool bias in new[] { false, true })
        foreach (bool accumulate in new[] { false, true })
        {
            var x = Floats(n * k, n + k + m);
            var w = Floats(m * k, 7 * m + k);
            var hw = bf16 ? HostBf16(Check.ToBf16(w, out _), m, k) : Host(w, m, k);
            var bv = Floats(m, 3 * m);
            var y0 = Floats(n * m, 5 * n);
            var expected = Host((float[])y0.Clone(), n, m);
            Cpu.Linear(Host(x, n, k), hw, bias ? Host(bv, m) : null, expected, accumulate);
            var ty = Up(y0, n, m);
            B.Linear(Up(x, n, k), Own(B.FromHost(hw)), bias ? Up(bv, m) : null, ty, accumulate);
            Close(Down(ty), expected.Floats, $"linear {n}x{k}x{m} bf16={bf16} bias={bias} accumulate={accumulate}");
        }
    }

    [Theory]
    [InlineData(5, 13, 7, 3, false)]
    [InlineData(4, 20, 9, 2, true)]
    public void LoraLinear_matches_cpu(int n, int k, int m, int r, bool bf16)
    {
        var x = Floats(n * k, 1);
        var w = Floats(m * k, 2);
        var hw = bf16 ? HostBf16(Check.ToBf16(w, out _), m, k) : Host(w, m, k);
        var bias = Floats(m, 3);
        var a = Floats(r * k, 4);
        var b = Floats(m * r, 5);
        var y = Tensor.Zeros(new Shape(n, m));
        var xa = Tensor.Zeros(new Shape(n, r));
        Cpu.LoraLinear(Host(x, n, k), hw, Host(bias, m), Host(a, r, k), Host(b, m, r), 2f, y, xa);
        var ty = Zeros(n, m);
        var txa = Zeros(n, r);
        B.LoraLinear(Up(x, n, k), Own(B.FromHost(hw)), Up(bias, m), Up(a, r, k), Up(b, m, r), 2f, ty, txa);
        Close(Down(ty), y.Floats, "lora y");
        Close(Down(txa), xa.Floats, "lora xa");
        // Without xa kept (the arena holds it).
        var ty2 = Zeros(n, m);
        B.LoraLinear(Up(x, n, k), Own(B.FromHost(hw)), null, Up(a, r, k), Up(b, m, r), 0.5f, ty2);
        var y2 = Tensor.Zeros(new Shape(n, m));
        Cpu.LoraLinear(Host(x, n, k), hw, null, Host(a, r, k), Host(b, m, r), 0.5f, y2);
        Close(Down(ty2), y2.Floats, "lora y without bias or xa");
    }

    [Fact]
    public void Rope_forward_and_backward_match_reference()
    {
        foreach (int half in new[] { 1, 3, 8 })
        foreach (float scaling in new[] { 1f, 0.75f })
        {
            int d = 2 * half, n = 5, heads = 3;
            var freqs = new RopeFrequencies(RopeFrequencies.DefaultInvFreq(d, 10000), scaling);
            var positions = Ints(n, half, 5000);
            var x = Floats(n * heads * d, 10 + half);
            var fwd = (float[])x.Clone();
            RopeReference.Forward(fwd, positions, freqs.InvFreq, scaling, heads);
            var bwd = (float[])x.Clone();
            RopeReference.Forward(bwd, positions, freqs.InvFreq, scaling, heads, sign: -1f);
            var tx = Up(x, n, heads, d);
            B.Rope(tx, positions, freqs);
            Close(Down(tx), fwd, $"rope D={d} scaling={scaling}", 1e-12);
            var tdx = Up(x, n, heads, d);
            B.RopeBackward(tdx, positions, freqs);
            Close(Down(tdx), bwd, $"rope backward D={d} scaling={scaling}", 1e-12);
        }
    }

    public static TheoryData<int, int, int, int, int, int, int, int, bool> AttentionCases => new()
    {
        // B, Tq, H, S, Hkv, D, kvLength, offset, mask
        { 2, 5, 4, 5, 2, 8, 5, 0, false },      // prefill, GQA 2:1
        { 2, 6, 2, 9, 1, 4, 6, 0, true },       // left-padded batch (queries of batch 1 that see no key), MQA, cache larger than used
        { 2, 1, 4, 12, 2, 8, 9, 8, true },      // decode step
        { 1, 3, 3, 10, 3, 5, 7, 4, false },     // chunked prefill after 4 cached tokens
        { 1, 4, 2, 6, 1, 5, 3, 0, false },      // kv shorter than the queries' positions
        { 1, 37, 2, 41, 1, 4, 40, 0, true },    // crosses the 32-row tiles (Tq, S, kvLength not multiples of 32), MQA
        { 2, 19, 4, 23, 2, 72, 21, 2, false },  // D > 64: 16-row tiles, crossed; chunk after 2 cached tokens
        { 2, 1, 4, 70, 2, 8, 67, 66, true },    // decode step over three key tiles
        { 1, 35, 2, 37, 1, 64, 36, 0, true },   // the kernels compiled for D = 64, across tiles
        { 1, 18, 2, 20, 2, 128, 19, 1, false }, // the kernels compiled for D = 128, across tiles
    };

    private static int[] Mask(int batch, int kvLength, bool mask)
    {
        if (!mask) return [];
        var m = new int[batch * kvLength];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < kvLength; j++) m[b * kvLength + j] = j < 3 * b ? 0 : 1;
        if (kvLength > 5) m[kvLength - 2] = 0;
        return m;
    }

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void Attention_matches_cpu(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool mask)
    {
        var q = Floats(batch * tq * heads * d, 1, 2f);
        var k = Floats(batch * s * kvHeads * d, 2, 2f);
        var v = Floats(batch * s * kvHeads * d, 3);
        var keyMask = Mask(batch, kvLength, mask);
        float scale = 1f / MathF.Sqrt(d);
        var o = Tensor.Zeros(new Shape(batch, tq, heads, d));
        var lse = Tensor.Zeros(new Shape(batch, heads, tq));
        Cpu.Attention(new AttentionArgs(Host(q, batch, tq, heads, d), Host(k, batch, s, kvHeads, d), Host(v, batch, s, kvHeads, d), o, kvLength, offset, scale, keyMask, lse));
        var to = Zeros(batch, tq, heads, d);
        var tl = Zeros(batch, heads, tq);
        B.Attention(new AttentionArgs(Up(q, batch, tq, heads, d), Up(k, batch, s, kvHeads, d), Up(v, batch, s, kvHeads, d), to, kvLength, offset, scale, keyMask, tl));
        Close(Down(to), o.Floats, "attention out");
        Close(Down(tl), lse.Floats, "attention lse");
    }

    [Fact]
    public void Dropout_matches_cpu_and_reference()
    {
        var x = Floats(1000, 1);
        foreach (float p in new[] { 0f, 0.3f })
        {
            var expected = new float[x.Length];
            DropoutReference.Forward(x, expected, 12345, p);
            var y = Tensor.Zeros(new Shape(x.Length));
            Cpu.Dropout(Host(x, x.Length), 12345, p, y);
            Bitwise(y.Floats, expected, $"cpu dropout p={p}");
            var t = Up(x, x.Length);
            B.Dropout(t, 12345, p, t);
            Bitwise(Down(t), expected, $"ilgpu dropout in place p={p}");
        }
    }

    [Fact]
    public void SwiGlu_Add_LogSoftmax_Scale_ScaleRows_match_cpu()
    {
        var g = Floats(6 * 7, 1, 4f);
        var u = Floats(6 * 7, 2);
        var y = Tensor.Zeros(new Shape(6, 7));
        Cpu.SwiGlu(Host(g, 6, 7), Host(u, 6, 7), y);
        var ty = Zeros(6, 7);
        B.SwiGlu(Up(g, 6, 7), Up(u, 6, 7), ty);
        Close(Down(ty), y.Floats, "swiglu");

        var sum = Tensor.Zeros(new Shape(6, 7));
        Cpu.Add(Host(g, 6, 7), Host(u, 6, 7), sum);
        var ta = Up(g, 6, 7);
        B.Add(ta, Up(u, 6, 7), ta); // y aliases a
        Bitwise(Down(ta), sum.Floats, "add in place");

        var ls = Tensor.Zeros(new Shape(6, 7));
        Cpu.LogSoftmax(Host(g, 6, 7), ls);
        var tls = Zeros(6, 7);
        B.LogSoftmax(Up(g, 6, 7), tls);
        Close(Down(tls), ls.Floats, "log-softmax");

        var ts = Up(g, 6, 7);
        B.Scale(ts, -0.25f);
        Bitwise(Down(ts), g.Select(x => x * -0.25f).ToArray(), "scale");

        var rowScales = new[] { 0.5f, -2f, 0f, 1.25f, 3f, -0.75f };
        var sr = (float[])g.Clone();
        ScaleRowsReference.Apply(sr, rowScales, 7);
        var tsr = Up(g, 6, 7);
        B.ScaleRows(tsr, rowScales);
        Bitwise(Down(tsr), sr, "scale rows");
    }

    // ---- backward ----

    [Fact]
    public void EmbeddingBackward_matches_reference_with_repeated_ids()
    {
        const int v = 7, c = 5;
        int[] ids = [3, 1, 3, 3, 0, 6, 1, 3];
        var dOut = Floats(ids.Length * c, 1);
        var dTable0 = Floats(v * c, 2);
        var expected = (float[])dTable0.Clone();
        EmbeddingReference.Backward(dOut, ids, expected, c);
        var td = Up(dTable0, v, c);
        B.EmbeddingBackward(Up(dOut, ids.Length, c), ids, td);
        Close(Down(td), expected, "embedding backward");
        var cpu = Host((float[])dTable0.Clone(), v, c);
        if (CpuHas(() => Cpu.EmbeddingBackward(Host(dOut, ids.Length, c), ids, cpu))) Close(Down(td), cpu.Floats, "embedding backward vs cpu");
    }

    [Fact]
    public void RmsNormBackward_matches_reference()
    {
        const int rows = 4, c = 9;
        var x = Floats(rows * c, 1, 2f);
        var w = Floats(c, 2);
        var dy = Floats(rows * c, 3);
        var rstd = Tensor.Zeros(new Shape(rows));
        Cpu.RmsNorm(Host(x, rows, c), Host(w, c), 1e-5f, Tensor.Zeros(new Shape(rows, c)), rstd);
        var dx = new float[rows * c];
        var dw0 = Floats(c, 4);
        var dw = (float[])dw0.Clone();
        RmsNormReference.Backward(dy, x, w, rstd.Floats, dx, dw, c);
        var tdx = Zeros(rows, c);
        var tdw = Up(dw0, c);
        B.RmsNormBackward(Up(dy, rows, c), Up(x, rows, c), Up(w, c), Up(rstd.Floats.ToArray(), rows), tdx, tdw);
        Close(Down(tdx), dx, "rmsnorm dx");
        Close(Down(tdw), dw, "rmsnorm dWeight");
        var tdx2 = Up(Floats(rows * c, 9), rows, c); // overwritten, not accumulated
        B.RmsNormBackward(Up(dy, rows, c), Up(x, rows, c), Up(w, c), Up(rstd.Floats.ToArray(), rows), tdx2, null);
        Close(Down(tdx2), dx, "rmsnorm dx without dWeight");
        var dx0 = Floats(rows * c, 10); // accumulated: a residual stream's gradient
        var tdx3 = Up(dx0, rows, c);
        B.RmsNormBackward(Up(dy, rows, c), Up(x, rows, c), Up(w, c), Up(rstd.Floats.ToArray(), rows), tdx3, null, accumulateDx: true);
        Close(Down(tdx3), dx.Select((v, i) => v + dx0[i]).ToArray(), "rmsnorm dx accumulated");
    }

    [Theory]
    [InlineData(5, 7, 3, false)]
    [InlineData(2, 9, 6, true)]
    [InlineData(300, 7, 3, false)] // dWeight's depth is n: few output tiles and a long depth take split-K
    public void LinearBackward_matches_reference(int n, int k, int m, bool bf16)
    {
        foreach (bool accumulateDx in new[] { false, true })
        {
            var x = Floats(n * k, 1);
            var w = Floats(m * k, 2);
            var hw = bf16 ? HostBf16(Check.ToBf16(w, out w), m, k) : Host(w, m, k);
            var dy = Floats(n * m, 3);
            var dx0 = Floats(n * k, 4);
            var dw0 = Floats(m * k, 5);
            var db0 = Floats(m, 6);
            var (dx, dw, db) = ((float[])dx0.Clone(), (float[])dw0.Clone(), (float[])db0.Clone());
            LinearReference.Backward(dy, x, w, dx, dw, db, n, k, m, accumulateDx);
            var (tdx, tdw, tdb) = (Up(dx0, n, k), Up(dw0, m, k), Up(db0, m));
            B.LinearBackward(Up(dy, n, m), Up(x, n, k), Own(B.FromHost(hw)), tdx, tdw, tdb, accumulateDx);
            Close(Down(tdx), dx, $"linear dx accumulate={accumulateDx}");
            Close(Down(tdw), dw, "linear dWeight");
            Close(Down(tdb), db, "linear dBias");
            // Only dWeight asked for.
            var tdw2 = Up(dw0, m, k);
            B.LinearBackward(Up(dy, n, m), Up(x, n, k), Own(B.FromHost(hw)), null, tdw2, null, accumulateDx);
            Close(Down(tdw2), dw, "linear dWeight alone");
            var cpu = (Host((float[])dx0.Clone(), n, k), Host((float[])dw0.Clone(), m, k), Host((float[])db0.Clone(), m));
            if (CpuHas(() => Cpu.LinearBackward(Host(dy, n, m), Host(x, n, k), hw, cpu.Item1, cpu.Item2, cpu.Item3, accumulateDx)))
            {
                Close(Down(tdx), cpu.Item1.Floats, "linear dx vs cpu");
                Close(Down(tdw), cpu.Item2.Floats, "linear dWeight vs cpu");
            }
        }
    }

    [Fact]
    public void LoraLinearBackward_matches_reference()
    {
        const int n = 5, k = 11, m = 6, r = 3;
        const float scale = 2f;
        var x = Floats(n * k, 1);
        var a = Floats(r * k, 2);
        var b = Floats(m * r, 3);
        var dy = Floats(n * m, 4);
        var xa = new float[n * r];
        LinearReference.Forward(x, a, default, xa, n, k, r, false);
        var dx0 = Floats(n * k, 5);
        var dA0 = Floats(r * k, 6);
        var dB0 = Floats(m * r, 7);
        var (dx, dA, dB) = ((float[])dx0.Clone(), (float[])dA0.Clone(), (float[])dB0.Clone());
        LoraLinearReference.Backward(dy, x, xa, a, b, scale, dx, dA, dB, n, k, m, r);
        var (tdx, tdA, tdB) = (Up(dx0, n, k), Up(dA0, r, k), Up(dB0, m, r));
        B.LoraLinearBackward(Up(dy, n, m), Up(x, n, k), Up(xa, n, r), Up(a, r, k), Up(b, m, r), scale, tdx, tdA, tdB);
        Close(Down(tdx), dx, "lora dx");
        Close(Down(tdA), dA, "lora dA");
        Close(Down(tdB), dB, "lora dB");
        // dx alone (frozen adapter: gradients flow through it to earlier layers).
        var dxOnly = (float[])dx0.Clone();
        LoraLinearReference.Backward(dy, x, xa, a, b, scale, dxOnly, default, default, n, k, m, r);
        var tdx2 = Up(dx0, n, k);
        B.LoraLinearBackward(Up(dy, n, m), Up(x, n, k), Up(xa, n, r), Up(a, r, k), Up(b, m, r), scale, tdx2, null, null);
        Close(Down(tdx2), dxOnly, "lora dx alone");
    }

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void AttentionBackward_matches_reference(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool mask)
    {
        var q = Floats(batch * tq * heads * d, 1, 2f);
        var k = Floats(batch * s * kvHeads * d, 2, 2f);
        var v = Floats(batch * s * kvHeads * d, 3);
        var dOut = Floats(q.Length, 4);
        var keyMask = Mask(batch, kvLength, mask);
        float scale = 1f / MathF.Sqrt(d);
        var (dq, dk, dv) = (new float[q.Length], new float[k.Length], new float[v.Length]);
        AttentionReference.Backward(q, k, v, dOut, dq, dk, dv, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, keyMask);
        var (tq4, tk, tv) = (Up(q, batch, tq, heads, d), Up(k, batch, s, kvHeads, d), Up(v, batch, s, kvHeads, d));
        var to = Zeros(batch, tq, heads, d);
        var tl = Zeros(batch, heads, tq);
        var args = new AttentionArgs(tq4, tk, tv, to, kvLength, offset, scale, keyMask, tl);
        B.Attention(args);
        // Garbage in the outputs: backward overwrites them.
        var (tdq, tdk, tdv) = (Up(Floats(q.Length, 7), batch, tq, heads, d), Up(Floats(k.Length, 8), batch, s, kvHeads, d), Up(Floats(v.Length, 9), batch, s, kvHeads, d));
        B.AttentionBackward(args, Up(dOut, batch, tq, heads, d), tdq, tdk, tdv);
        Close(Down(tdq), dq, "attention dq");
        Close(Down(tdk), dk, "attention dk");
        Close(Down(tdv), dv, "attention dv");
        // Without the forward's lse, backward recomputes it (and the output) itself.
        B.AttentionBackward(args with { Lse = null }, Up(dOut, batch, tq, heads, d), tdq, tdk, tdv);
        Close(Down(tdq), dq, "attention dq (no lse)");
        Close(Down(tdk), dk, "attention dk (no lse)");
        Close(Down(tdv), dv, "attention dv (no lse)");
    }

    // bf16 q, k, v (widened into the arena for the ILGPU kernels): the results of f32 inputs holding the same values, bit for bit.
    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void Attention_from_bf16_inputs_gives_the_results_of_their_values(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool mask)
    {
        ushort[] q = ToBf16(Floats(batch * tq * heads * d, 1, 2f), out var qf), k = ToBf16(Floats(batch * s * kvHeads * d, 2, 2f), out var kf),
            v = ToBf16(Floats(batch * s * kvHeads * d, 3), out var vf);
        var keyMask = Mask(batch, kvLength, mask);
        var dOut = Floats(batch * tq * heads * d, 4);
        var f32 = AttentionPass(Up(qf, batch, tq, heads, d), Up(kf, batch, s, kvHeads, d), Up(vf, batch, s, kvHeads, d), dOut, kvLength, offset, keyMask, []);
        var bf16 = AttentionPass(UpBf16(q, batch, tq, heads, d), UpBf16(k, batch, s, kvHeads, d), UpBf16(v, batch, s, kvHeads, d), dOut, kvLength, offset, keyMask, []);
        for (int i = 0; i < f32.Length; i++) Assert.Equal(f32[i].Select(BitConverter.SingleToInt32Bits), bf16[i].Select(BitConverter.SingleToInt32Bits));
    }

    [Fact]
    public void RoundToBf16_gives_the_bits_of_BFloat16()
    {
        foreach (int n in (int[])[1, 3, 4, 5, 67, 1000])
        {
            var x = Floats(n, n, 3f);
            float[] special = [float.NaN, float.PositiveInfinity, float.NegativeInfinity, -0f, float.MaxValue,
                BitConverter.Int32BitsToSingle(0x3F808000), BitConverter.Int32BitsToSingle(0x3F818000), BitConverter.Int32BitsToSingle(0x3F808001)];
            for (int i = 0; i < n && i < special.Length; i++) x[(i * 7) % n] = special[i];
            var y = Own(B.Zeros(new Shape(n), DType.BF16));
            B.RoundToBf16(Up(x, n), y);
            using var host = B.ToHost(y);
            Assert.Equal(ToBf16(x, out _), host.Span<ushort>().ToArray());
        }
    }

    [Fact]
    public void Attention_refuses_a_head_dim_over_128()
    {
        var args = new AttentionArgs(Zeros(1, 2, 1, 136), Zeros(1, 2, 1, 136), Zeros(1, 2, 1, 136), Zeros(1, 2, 1, 136), 2, 0, 0.1f);
        var e = Assert.Throws<ArgumentException>(() => B.Attention(args));
        Assert.Contains("head dim 136", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(2, 6, 4, 6, 2, 4, 6, 0, true)]   // packed prefill with padding, GQA 2:1
    [InlineData(1, 3, 2, 9, 1, 4, 8, 5, false)]  // chunk after 5 cached tokens
    [InlineData(1, 45, 2, 47, 1, 4, 47, 1, true)] // segments across the 32-row tiles
    public void Attention_with_segments_matches_reference(int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int offset, bool mask)
    {
        var q = Floats(batch * tq * heads * d, 1, 2f);
        var k = Floats(batch * s * kvHeads * d, 2, 2f);
        var v = Floats(batch * s * kvHeads * d, 3);
        var dOut = Floats(q.Length, 4);
        var keyMask = Mask(batch, kvLength, mask);
        var segments = new int[batch * kvLength];
        for (int i = 0; i < segments.Length; i++) segments[i] = (i % kvLength + i / kvLength) / 3; // boundaries differ per row
        float scale = 1f / MathF.Sqrt(d);
        var (o, lse) = (new float[q.Length], new float[batch * heads * tq]);
        AttentionReference.Forward(q, k, v, o, lse, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, keyMask, segments);
        var (dq, dk, dv) = (new float[q.Length], new float[k.Length], new float[v.Length]);
        AttentionReference.Backward(q, k, v, dOut, dq, dk, dv, batch, tq, heads, s, kvHeads, d, kvLength, offset, scale, keyMask, segments);
        var args = new AttentionArgs(Up(q, batch, tq, heads, d), Up(k, batch, s, kvHeads, d), Up(v, batch, s, kvHeads, d), Zeros(batch, tq, heads, d),
            kvLength, offset, scale, keyMask, Zeros(batch, heads, tq), segments);
        B.Attention(args);
        Close(Down(args.Output), o, "attention out (segments)");
        Close(Down(args.Lse!), lse, "attention lse (segments)");
        var (tdq, tdk, tdv) = (Up(Floats(q.Length, 7), batch, tq, heads, d), Up(Floats(k.Length, 8), batch, s, kvHeads, d), Up(Floats(v.Length, 9), batch, s, kvHeads, d));
        B.AttentionBackward(args, Up(dOut, batch, tq, heads, d), tdq, tdk, tdv);
        Close(Down(tdq), dq, "attention dq (segments)");
        Close(Down(tdk), dk, "attention dk (segments)");
        Close(Down(tdv), dv, "attention dv (segments)");
    }

    /// <summary>SwiGluRounded keeps BFloat16.FromSingle's bits and y from them (the CPU backend's), SwiGlu on the kept bf16 rebuilds
    /// y bit for bit, SwiGluBackward on them matches the reference at the widened values (dGate over dy).</summary>
    [Fact]
    public void SwiGlu_bf16_forms_match_cpu()
    {
        var g = Floats(5 * 9, 1, 6f);
        var u = Floats(5 * 9, 2);
        var dy = Floats(5 * 9, 3);
        g[0] = BitConverter.Int32BitsToSingle(0x3F818000); // a tie to even
        u[1] = float.NaN;
        var (y, gk, uk) = (Tensor.Zeros(new Shape(5, 9)), Tensor.Zeros(new Shape(5, 9), DType.BF16), Tensor.Zeros(new Shape(5, 9), DType.BF16));
        Cpu.SwiGluRounded(Host(g, 5, 9), Host(u, 5, 9), y, gk, uk);
        var (tgk, tuk) = (Own(B.Zeros(new Shape(5, 9), DType.BF16)), Own(B.Zeros(new Shape(5, 9), DType.BF16)));
        var (ty, ty2) = (Zeros(5, 9), Zeros(5, 9));
        B.SwiGluRounded(Up(g, 5, 9), Up(u, 5, 9), ty, tgk, tuk);
        using (var h = B.ToHost(tgk)) Assert.Equal(gk.Span<ushort>().ToArray(), h.Span<ushort>().ToArray());
        using (var h = B.ToHost(tuk)) Assert.Equal(uk.Span<ushort>().ToArray(), h.Span<ushort>().ToArray());
        var got = Down(ty);
        Close(got, y.Floats, "swiglu rounded");
        B.SwiGlu(tgk, tuk, ty2);
        Bitwise(Down(ty2), got, "swiglu rebuilt from the kept bf16");
        var (dg, du) = (new float[g.Length], new float[g.Length]);
        SwiGluReference.Backward(dy, gk.ToFloatArray(), uk.ToFloatArray(), dg, du);
        var (inPlace, tdu) = (Up(dy, 5, 9), Zeros(5, 9));
        B.SwiGluBackward(inPlace, tgk, tuk, inPlace, tdu);
        Close(Down(inPlace), dg, "swiglu bf16 dGate over dy");
        Close(Down(tdu), du, "swiglu bf16 dUp");
    }

    [Fact]
    public void SwiGluBackward_matches_reference()
    {
        var g = Floats(4 * 9, 1, 4f);
        var u = Floats(4 * 9, 2);
        var dy = Floats(4 * 9, 3);
        var (dg, du) = (new float[g.Length], new float[g.Length]);
        SwiGluReference.Backward(dy, g, u, dg, du);
        var (tdg, tdu) = (Zeros(4, 9), Zeros(4, 9));
        B.SwiGluBackward(Up(dy, 4, 9), Up(g, 4, 9), Up(u, 4, 9), tdg, tdu);
        Close(Down(tdg), dg, "swiglu dGate");
        Close(Down(tdu), du, "swiglu dUp");
        var (inPlace, tdu2) = (Up(dy, 4, 9), Zeros(4, 9)); // dGate written over dy (IBackend's contract)
        B.SwiGluBackward(inPlace, Up(g, 4, 9), Up(u, 4, 9), inPlace, tdu2);
        Close(Down(inPlace), dg, "swiglu dGate over dy");
        Close(Down(tdu2), du, "swiglu dUp beside dGate over dy");
    }

    [Theory]
    [InlineData(false, false, 0)]
    [InlineData(true, false, 3)]
    [InlineData(true, true, 4)]
    public void LmHeadDistillation_matches_reference(bool reverse, bool bf16, int chunk)
    {
        const int n = 5, cs = 8, ct = 6, v = 10;
        const float lossScale = 0.5f, temperature = 1.7f;
        var (sHidden, tHidden) = (Floats(n * cs, 1, 2f), Floats(n * ct, 2, 2f));
        var (sHead, tHead) = (Floats(v * cs, 3), Floats(v * ct, 4, 1.5f));
        var hs = bf16 ? HostBf16(Check.ToBf16(sHead, out sHead), v, cs) : Host(sHead, v, cs);
        var ht = bf16 ? HostBf16(Check.ToBf16(tHead, out tHead), v, ct) : Host(tHead, v, ct);
        int[] mask = [1, 0, 1, 1, 1];
        var (dh0, dw0) = (Floats(n * cs, 5), Floats(v * cs, 6));
        var (losses, dh, dw) = (new float[n], (float[])dh0.Clone(), (float[])dw0.Clone());
        LmHeadDistillationReference.Forward(sHidden, sHead, tHidden, tHead, mask, temperature, reverse, losses, lossScale, dh, dw, n, cs, ct, v);
        int saved = B.VocabChunk;
        try
        {
            B.VocabChunk = chunk;
            var tl = Up(Floats(n, 7), n);
            var (tdh, tdw) = (Up(dh0, n, cs), Up(dw0, v, cs));
            var (ts, tt) = (Own(B.FromHost(hs)), Own(B.FromHost(ht)));
            B.LmHeadDistillation(Up(sHidden, n, cs), ts, Up(tHidden, n, ct), tt, mask, temperature, reverse, tl, lossScale, tdh, tdw);
            Close(Down(tl), losses, "distill losses");
            Close(Down(tdh), dh, "distill dHidden");
            Close(Down(tdw), dw, "distill dLmHead");
            var tl2 = Zeros(n);
            B.LmHeadDistillation(Up(sHidden, n, cs), ts, Up(tHidden, n, ct), tt, mask, temperature, reverse, tl2, lossScale, null, null);
            Close(Down(tl2), losses, "distill losses without gradients");
            // The student distilled from itself: zero loss, zero gradient.
            var (tl3, tdh3) = (Zeros(n), Zeros(n, cs));
            B.LmHeadDistillation(Up(sHidden, n, cs), ts, Up(sHidden, n, cs), ts, mask, temperature, reverse, tl3, 1f, tdh3, null);
            Assert.All(Down(tl3), x => Assert.Equal(0f, x));
            Assert.All(Down(tdh3), x => Assert.Equal(0f, x));
        }
        finally
        {
            B.VocabChunk = saved;
        }
    }

    [Theory]
    [InlineData(false, 0, false)]
    [InlineData(false, 3, true)]
    [InlineData(true, 4, false)]
    public void LmHeadCrossEntropy_matches_reference(bool bf16, int chunk, bool rowScaled)
    {
        const int n = 5, c = 8, v = 10;
        const float lossScale = 0.5f;
        var hidden = Floats(n * c, 1, 2f);
        var head = Floats(v * c, 2);
        var hHead = bf16 ? HostBf16(Check.ToBf16(head, out head), v, c) : Host(head, v, c);
        int[] labels = [3, -100, 9, 0, 4];
        var dh0 = Floats(n * c, 3);
        var dw0 = Floats(v * c, 4);
        var (losses, dh, dw) = (new float[n], (float[])dh0.Clone(), (float[])dw0.Clone());
        float[] rowScales = rowScaled ? [1f, 2f, -0.5f, 0f, 3f] : [];
        LmHeadCrossEntropyReference.Forward(hidden, head, labels, losses, lossScale, dh, dw, n, c, v, rowScales);
        int saved = B.VocabChunk;
        try
        {
            B.VocabChunk = chunk;
            var tl = Up(Floats(n, 5), n);
            var (tdh, tdw) = (Up(dh0, n, c), Up(dw0, v, c));
            var tHead = Own(B.FromHost(hHead));
            B.LmHeadCrossEntropy(Up(hidden, n, c), tHead, labels, tl, lossScale, tdh, tdw, rowScales);
            Close(Down(tl), losses, "ce losses");
            Close(Down(tdh), dh, "ce dHidden");
            Close(Down(tdw), dw, "ce dLmHead");
            var tl2 = Zeros(n);
            B.LmHeadCrossEntropy(Up(hidden, n, c), tHead, labels, tl2, lossScale, null, null);
            Close(Down(tl2), losses, "ce losses without gradients");
            var (tl3, tdh3) = (Zeros(n), Up(dh0, n, c)); // dHidden alone: the one-pass gradient
            B.LmHeadCrossEntropy(Up(hidden, n, c), tHead, labels, tl3, lossScale, tdh3, null, rowScales);
            Close(Down(tl3), losses, "ce losses, one pass");
            Close(Down(tdh3), dh, "ce dHidden, one pass");
        }
        finally
        {
            B.VocabChunk = saved;
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LmHeadCrossEntropy_one_pass_gradient_follows_logits_that_grow_chunk_by_chunk(bool bf16)
    {
        // Logit v of a row is about 4.5 v (head row v = 4.5 v along hidden's first coordinate, plus noise): with chunks of 3 the
        // chunk maxima climb 13.5 a chunk, so a row's reference (the first chunk's max) is passed by more than RefSlack
        // (16) at the third chunk and again later, and its accumulator is rescaled. Row 1 points the other way (its max
        // in the first chunk); row 3 is unlabelled.
        const int n = 4, c = 8, v = 20;
        var hidden = Floats(n * c, 41, 0.1f);
        for (int i = 0; i < n; i++) hidden[i * c] = i == 1 ? -1f : 1f;
        var head = Floats(v * c, 42, 0.1f);
        for (int j = 0; j < v; j++) head[j * c] = 4.5f * j;
        var hHead = bf16 ? HostBf16(Check.ToBf16(head, out head), v, c) : Host(head, v, c);
        int[] labels = [7, 2, 19, -100];
        var dh0 = Floats(n * c, 43);
        var (losses, dh, dw) = (new float[n], (float[])dh0.Clone(), new float[v * c]);
        LmHeadCrossEntropyReference.Forward(hidden, head, labels, losses, 1f, dh, dw, n, c, v);
        int saved = B.VocabChunk;
        try
        {
            B.VocabChunk = 3;
            var (tl, tdh) = (Zeros(n), Up(dh0, n, c));
            B.LmHeadCrossEntropy(Up(hidden, n, c), Own(B.FromHost(hHead)), labels, tl, 1f, tdh, null);
            Close(Down(tl), losses, "ce losses");
            Close(Down(tdh), dh, "ce dHidden, one pass across rescaled references");
        }
        finally
        {
            B.VocabChunk = saved;
        }
    }

    [Fact]
    public void AdamW_two_steps_match_reference()
    {
        const int n = 29;
        var p = Floats(n, 1);
        var m = new float[n];
        var v = new float[n];
        var (tp, tm, tv) = (Up(p, n), Zeros(n), Zeros(n));
        for (int step = 1; step <= 2; step++)
        {
            var g = Floats(n, 10 + step);
            var hp = new AdamWParams(1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, step);
            AdamWReference.Step(p, g, m, v, hp);
            B.AdamWStep(tp, Up(g, n), tm, tv, hp);
        }
        Close(Down(tp), p, "adamw param", 1e-12);
        Close(Down(tm), m, "adamw m", 1e-12);
        Close(Down(tv), v, "adamw v", 1e-12);
    }

    [Fact]
    public void Clear_zeroes_every_element_nan_and_infinity_included()
    {
        var values = Floats(37, 70);
        values[3] = float.NaN;
        values[11] = float.PositiveInfinity;
        var t = Up(values, 37);
        B.Scale(t, 0f);
        Assert.True(float.IsNaN(Down(t)[3])); // what ZeroGrads used to do: the NaN stays
        B.Clear(t);
        Assert.All(Down(t), v => Assert.Equal(0f, v));
        var bf16 = Own(B.FromHost(HostBf16(Check.ToBf16(Floats(10, 71), out _), 10)));
        B.Clear(bf16);
        using var hb = B.ToHost(bf16);
        Assert.All(hb.Span<ushort>().ToArray(), v => Assert.Equal(0, v));
    }

    [Fact]
    public void SumOfSquares_matches_f64()
    {
        foreach (int n in new[] { 1, 5, 3000 })
        {
            var x = Floats(n, n, 3f);
            double expected = 0;
            foreach (var f in x) expected += (double)f * f;
            Assert.Equal(expected, B.SumOfSquares(Up(x, n)), 1e-12 * expected);
        }
    }

    [Fact]
    public void SumOfSquares_of_many_tensors_is_the_sum_of_each_in_order_with_one_read_back()
    {
        int[] sizes = [3000, 1, 1025, 5];
        var xs = sizes.Select((n, i) => Up(Floats(n, 60 + i, 2f), n)).ToArray();
        double expected = 0;
        foreach (var x in xs) expected += B.SumOfSquares(x);
        long red0 = B.ReductionBytes;
        Assert.Equal(expected, B.SumOfSquares(xs)); // the same bits
        Assert.Equal(8L * sizes.Sum(n => Math.Min(1024, n)), B.ReductionBytes - red0); // every tensor's partials, once
        Assert.Equal(0d, B.SumOfSquares(Array.Empty<Tensor>()));
    }

    // ---- device residency ----

    /// <summary>
    /// Every op on device tensors: no FromHost/ToHost traffic while the ops run (only small per-call
    /// arguments and the one SumOfSquares readback), and each result in this backend's device memory.
    /// </summary>
    [Fact]
    public void Every_op_runs_on_the_device()
    {
        const int n = 4, c = 8, v = 6, f = 5, h = 2, d = 4, r = 2;
        var x = Up(Floats(n * c, 1), n, c);
        var table = Up(Floats(v * c, 2), v, c);
        var w = Up(Floats(f * c, 3), f, c);
        var wc = Up(Floats(c * c, 4), c, c);
        var norm = Up(Floats(c, 5), c);
        var a = Up(Floats(r * c, 6), r, c);
        var b = Up(Floats(f * r, 7), f, r);
        int[] ids = [1, 5, 0, 1];
        int[] pos = [0, 1, 2, 3];
        var freqs = RopeFrequencies.Default(d, 10000);
        // Warm the RoPE table (a one-off constant upload, like a weight).
        B.Rope(Zeros(n, h, d), pos, freqs);
        long up0 = B.UploadedBytes, down0 = B.DownloadedBytes, args0 = B.ArgumentBytes, red0 = B.ReductionBytes;

        var outs = new List<Tensor>();
        Tensor Out(params int[] shape)
        {
            var t = Zeros(shape);
            outs.Add(t);
            return t;
        }
        var emb = Out(n, c);
        B.Embedding(table, ids, emb);
        var hn = Out(n, c);
        var rstd = Out(n);
        B.RmsNorm(emb, norm, 1e-5f, hn, rstd);
        var y = Out(n, f);
        B.Linear(hn, w, null, y);
        var ly = Out(n, f);
        var xa = Out(n, r);
        B.LoraLinear(hn, w, null, a, b, 2f, ly, xa);
        var qkv = Out(n, c);
        B.Linear(hn, wc, null, qkv);
        var q = new Tensor(new Shape(n, h, d), DType.F32, qkv.Storage);
        B.Rope(q, pos, freqs);
        var att = Out(1, n, h, d);
        var lse = Out(1, h, n);
        var q4 = new Tensor(new Shape(1, n, h, d), DType.F32, qkv.Storage);
        var args = new AttentionArgs(q4, q4, q4, att, n, 0, 0.5f, default, lse);
        B.Attention(args);
        var sw = Out(n, f);
        B.SwiGlu(y, ly, sw);
        var sum = Out(n, c);
        B.Add(emb, hn, sum);
        var logp = Out(n, c);
        B.LogSoftmax(sum, logp);
        var dTable = Out(v, c);
        B.EmbeddingBackward(sum, ids, dTable);
        var dx = Out(n, c);
        var dNorm = Out(c);
        B.RmsNormBackward(sum, emb, norm, rstd, dx, dNorm);
        var dW = Out(f, c);
        var dHn = Out(n, c);
        B.LinearBackward(y, hn, w, dHn, dW, null);
        var (dA, dB) = (Out(r, c), Out(f, r));
        B.LoraLinearBackward(ly, hn, xa, a, b, 2f, dHn, dA, dB);
        B.RopeBackward(new Tensor(new Shape(n, h, d), DType.F32, dHn.Storage), pos, freqs);
        var (dq, dk, dv) = (Out(1, n, h, d), Out(1, n, h, d), Out(1, n, h, d));
        B.AttentionBackward(args, att, dq, dk, dv);
        var (dg, du) = (Out(n, f), Out(n, f));
        B.SwiGluBackward(sw, y, ly, dg, du);
        var losses = Out(n);
        var dHidden = Out(n, c);
        var dHead = Out(v, c);
        B.LmHeadCrossEntropy(hn, table, [1, 2, -100, 0], losses, 1f, dHidden, dHead);
        var (m, vv) = (Out(f, c), Out(f, c));
        B.AdamWStep(w, dW, m, vv, new AdamWParams(1e-3f, 0.9f, 0.999f, 1e-8f, 0f, 1));
        B.Scale(dW, 0.5f);
        var copy = Out(2, c);
        B.CopyRows(hn, 1, copy, 0, 2);
        Assert.True(B.SumOfSquares(dW) > 0);
        B.Synchronize();

        Assert.Equal(up0, B.UploadedBytes);
        Assert.Equal(down0, B.DownloadedBytes);
        Assert.InRange(B.ReductionBytes - red0, 1, 8 * 1024);
        Assert.InRange(B.ArgumentBytes - args0, 1, 4 * 1024);
        foreach (var t in outs.Append(w).Append(q))
        {
            Assert.Same(B, t.Storage.Device);
            Assert.IsType<DeviceStorage>(t.Storage);
        }
    }

    [Fact]
    public void Host_tensors_are_refused_not_computed_on_the_host()
    {
        var hx = Host(Floats(12, 1), 3, 4);
        var dx = Up(Floats(12, 1), 3, 4);
        var hw = Host(Floats(4, 2), 4);
        Assert.Contains("not in this backend's device memory", Assert.Throws<ArgumentException>(() => B.Add(hx, dx, dx)).Message);
        Assert.Throws<ArgumentException>(() => B.Add(dx, dx, hx));
        Assert.Throws<ArgumentException>(() => B.RmsNorm(dx, hw, 1e-5f, dx));
        Assert.Throws<ArgumentException>(() => B.Linear(dx, Host(Floats(8, 3), 2, 4), null, Zeros(3, 2)));
        Assert.Throws<ArgumentException>(() => B.Scale(hx, 2f));
        Assert.Throws<ArgumentException>(() => B.SumOfSquares(hx));
        Assert.Throws<ArgumentException>(() => B.ToHost(hx));
        Assert.Throws<ArgumentException>(() => B.FromHost(dx));
        using var cpuTensor = Cpu.Zeros(new Shape(3, 4));
        Assert.Throws<ArgumentException>(() => B.Embedding(cpuTensor, [0], Zeros(1, 4)));
    }
}

public sealed class CpuAcceleratorOpChecks(CpuAcceleratorFixture device) : IlgpuOpChecks(device), IClassFixture<CpuAcceleratorFixture>;

public sealed class CudaOpChecks(CudaFixture device) : IlgpuOpChecks(device), IClassFixture<CudaFixture>;
