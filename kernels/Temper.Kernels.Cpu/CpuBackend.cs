// The CPU backend: host tensors only (f32 compute; bf16 weights and tables widened as they are read).
// Each op checks shapes and dtypes (a mismatch is an ArgumentException naming the op and the shapes),
// then hands spans to its kernel in this folder (scalar oracles in Reference/), forward and backward.
// Multi-threaded kernels split work statically over `threads`, so results are bitwise independent of
// the thread count.
using Temper.Core;

namespace Temper.Kernels.Cpu;

public sealed partial class CpuBackend : IBackend
{
    private readonly int _threads;

    /// <param name="threads">Worker threads for the parallel kernels; 0 means Environment.ProcessorCount.</param>
    public CpuBackend(int threads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        _threads = threads == 0 ? Environment.ProcessorCount : threads;
    }

    public string Name => "cpu";

    /// <summary>The CPU computes and keeps f32 (false, the default); true keeps a bf16 model's MLP gate and up in bf16 during
    /// training, as the device backends do (half their bytes; the numbers of a GPU run, checked on the CPU).</summary>
    public bool KeepsBf16Activations { get; init; }
    public int Threads => _threads;

    public Tensor Zeros(Shape shape, DType dtype = DType.F32) => Allocate(shape, dtype, zero: true);
    public Tensor Uninitialized(Shape shape, DType dtype = DType.F32) => Allocate(shape, dtype, zero: false);

    public Tensor FromHost(Tensor host)
    {
        Require(host.IsHost, "FromHost", $"tensor {host} is not a host tensor");
        return host;
    }

    public Tensor ToHost(Tensor t)
    {
        Require(t.IsHost, "ToHost", $"tensor {t} is not a host tensor");
        return Tensor.FromArray<byte>(t.Shape, t.Bytes, t.DType, t.Name);
    }

    public void CopyRows(Tensor src, int srcRow, Tensor dst, int dstRow, int rows)
    {
        Host("CopyRows", src, dst);
        Require(src.DType == dst.DType && src.Shape.Rank >= 1 && dst.Shape.Rank >= 1 && src.Shape[-1] == dst.Shape[-1] && src.DType.Bits() >= 8,
            "CopyRows", $"src {Describe(src)} and dst {Describe(dst)} must share a byte-sized dtype and the last dimension");
        Require(srcRow >= 0 && dstRow >= 0 && rows >= 0 && srcRow + (long)rows <= src.Shape.Rows && dstRow + (long)rows <= dst.Shape.Rows,
            "CopyRows", $"rows {srcRow}+{rows} of src {src.Shape} -> {dstRow}+{rows} of dst {dst.Shape} out of range");
        int rowBytes = checked((int)src.DType.ByteCount(src.Shape[-1]));
        src.Bytes.Slice(srcRow * rowBytes, rows * rowBytes).CopyTo(dst.Bytes.Slice(dstRow * rowBytes, rows * rowBytes));
    }

    // ---- forward ----

    public void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output)
    {
        Host("Embedding", table, output);
        Require(table.Shape.Rank == 2 && (table.DType == DType.F32 || table.DType == DType.BF16), "Embedding", $"table {Describe(table)} must be [V,C] f32 or bf16");
        int c = table.Shape[1];
        Require(output.DType == DType.F32 && output.Shape.Rank >= 1 && output.Shape[-1] == c && output.Elements == (long)ids.Length * c,
            "Embedding", $"output {Describe(output)} must be f32 [{ids.Length},{c}] for table {Describe(table)} and {ids.Length} ids");
        if (table.DType == DType.F32) Cpu.Embedding.Forward(table.Floats, ids, output.Floats, c);
        else Cpu.Embedding.Forward(table.Span<ushort>(), ids, output.Floats, c);
    }

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor? rstd = null)
    {
        Host("RmsNorm", x, weight, y, rstd);
        F32("RmsNorm", x, weight, y, rstd);
        Require(x.Shape.Rank >= 1 && weight.Shape.Rank == 1 && weight.Shape[0] == x.Shape[-1] && y.Shape == x.Shape,
            "RmsNorm", $"x {x.Shape}, weight {weight.Shape}, y {y.Shape}: weight must be [C] and y the shape of x");
        Require(rstd == null || rstd.Elements == x.Shape.Rows, "RmsNorm", $"rstd {rstd?.Shape} must hold one value per row of x {x.Shape}");
        Cpu.RmsNorm.Forward(x.Floats, weight.Floats, eps, y.Floats, rstd == null ? default : rstd.Floats, x.Shape[-1], _threads);
    }

    public void Linear(Tensor x, Tensor weight, Tensor? bias, Tensor y, bool accumulate = false)
    {
        var (n, k, m) = CheckLinear("Linear", x, weight, bias, y);
        if (weight.DType == DType.F32) Cpu.Linear.Forward(x.Floats, weight.Floats, Floats(bias), y.Floats, n, k, m, accumulate, _threads);
        else Cpu.Linear.Forward(x.Floats, weight.Span<ushort>(), Floats(bias), y.Floats, n, k, m, accumulate, _threads);
    }

    public void LoraLinear(Tensor x, Tensor weight, Tensor? bias, Tensor loraA, Tensor loraB, float scale, Tensor y, Tensor? xa = null)
    {
        var (n, k, m) = CheckLinear("LoraLinear", x, weight, bias, y);
        Host("LoraLinear", loraA, loraB, xa);
        F32("LoraLinear", loraA, loraB, xa);
        Require(loraA.Shape.Rank == 2 && loraA.Shape[1] == k && loraB.Shape.Rank == 2 && loraB.Shape[0] == m && loraB.Shape[1] == loraA.Shape[0],
            "LoraLinear", $"A {loraA.Shape} must be [r,{k}] and B {loraB.Shape} [{m},r] for weight {weight.Shape}");
        int r = loraA.Shape[0];
        Require(xa == null || xa.Shape == x.Shape.WithLast(r), "LoraLinear", $"xa {xa?.Shape} must be {x.Shape.WithLast(r)}");
        bool bf16 = weight.DType == DType.BF16;
        Cpu.LoraLinear.Forward(x.Floats, bf16 ? default : weight.Floats, bf16 ? weight.Span<ushort>() : default, Floats(bias),
            loraA.Floats, loraB.Floats, scale, y.Floats, xa == null ? default : xa.Floats, n, k, m, r, _threads);
    }

    public void DoraNorm(Tensor weight, Tensor loraA, Tensor loraB, float scale, Tensor norm)
    {
        const string op = "DoraNorm";
        Host(op, weight, loraA, loraB, norm);
        F32(op, loraA, loraB, norm);
        Require(weight.DType == DType.F32 || weight.DType == DType.BF16, op, $"weight {Describe(weight)} must be f32 or bf16");
        Require(weight.Shape.Rank == 2 && loraA.Shape.Rank == 2 && loraB.Shape.Rank == 2 && loraA.Shape[1] == weight.Shape[1] && loraB.Shape[0] == weight.Shape[0] && loraB.Shape[1] == loraA.Shape[0]
            && norm.Shape == new Shape(weight.Shape[0]), op, $"weight {weight.Shape}, A {loraA.Shape}, B {loraB.Shape}, norm {norm.Shape}: need W [M,K], A [r,K], B [M,r], norm [M]");
        bool bf16 = weight.DType == DType.BF16;
        Cpu.DoraNorm.Compute(bf16 ? default : weight.Floats, bf16 ? weight.Span<ushort>() : default, loraA.Floats, loraB.Floats, scale, norm.Floats,
            weight.Shape[0], weight.Shape[1], loraA.Shape[0], _threads);
    }

    public void DoraScale(Tensor z, Tensor magnitude, Tensor norm, Tensor? bias, Tensor y)
    {
        const string op = "DoraScale";
        Host(op, z, magnitude, norm, bias, y);
        F32(op, z, magnitude, norm, bias, y);
        int m = CheckDoraVectors(op, z, norm, magnitude);
        Require(y.Shape == z.Shape && (bias == null || bias.Shape == new Shape(m)), op, $"y {y.Shape} must be the shape of z {z.Shape}, bias {bias?.Shape} [{m}]");
        Cpu.DoraScale.Forward(z.Floats, magnitude.Floats, norm.Floats, Floats(bias), y.Floats, z.Shape.Rows, m, _threads);
    }

    private static int CheckDoraVectors(string op, Tensor z, Tensor norm, Tensor vector)
    {
        Require(z.Shape.Rank >= 1 && norm.Shape == new Shape(z.Shape[-1]) && vector.Shape == norm.Shape, op,
            $"z {z.Shape}, norm {norm.Shape}, {vector.Shape}: norm and the magnitude (or its gradient) must be [M], z [N,M]");
        return z.Shape[-1];
    }

    public void Rope(Tensor x, ReadOnlySpan<int> positions, RopeFrequencies freqs)
    {
        int heads = CheckRope("Rope", x, positions, freqs);
        Cpu.Rope.Forward(x.Floats, positions, freqs.InvFreq, freqs.AttentionScaling, heads, _threads);
    }

    public void Attention(in AttentionArgs a)
    {
        var (batch, tq, heads, s, kvHeads, d) = CheckAttention("Attention", a);
        bool bf16 = a.Q.DType == DType.BF16; // widened, as the device kernels stage bf16
        float[]? q = bf16 ? a.Q.ToFloatArray() : null, k = bf16 ? a.K.ToFloatArray() : null, v = bf16 ? a.V.ToFloatArray() : null;
        Cpu.Attention.Forward(q ?? a.Q.Floats, k ?? a.K.Floats, v ?? a.V.Floats, a.Output.Floats, a.Lse == null ? default : a.Lse.Floats,
            batch, tq, heads, s, kvHeads, d, a.KvLength, a.QueryOffset, a.Scale, a.KeyMask.Span, a.SegmentIds.Span, _threads);
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor y)
    {
        const string op = "SwiGlu";
        Host(op, gate, up, y);
        F32(op, y);
        bool bf16 = GateUpDType(op, gate, up);
        Require(up.Shape == gate.Shape && y.Shape == gate.Shape, op, $"gate {gate.Shape}, up {up.Shape}, y {y.Shape} must have one shape");
        if (bf16) Elementwise(y.Elements, (s, l) => Cpu.SwiGlu.Forward(gate.Span<ushort>().Slice(s, l), up.Span<ushort>().Slice(s, l), y.Floats.Slice(s, l)));
        else Elementwise(y.Elements, (s, l) => Cpu.SwiGlu.Forward(gate.Floats.Slice(s, l), up.Floats.Slice(s, l), y.Floats.Slice(s, l)));
    }

    public void SwiGluRounded(Tensor gate, Tensor up, Tensor y, Tensor gateBf16, Tensor upBf16)
    {
        const string op = "SwiGluRounded";
        Host(op, gate, up, y, gateBf16, upBf16);
        F32(op, gate, up, y);
        Require(gateBf16.DType == DType.BF16 && upBf16.DType == DType.BF16, op, $"{Describe(gateBf16)} and {Describe(upBf16)} must be bf16");
        Require(up.Shape == gate.Shape && y.Shape == gate.Shape && gateBf16.Shape == gate.Shape && upBf16.Shape == gate.Shape,
            op, $"gate {gate.Shape}, up {up.Shape}, y {y.Shape}, gateBf16 {gateBf16.Shape}, upBf16 {upBf16.Shape} must have one shape");
        Elementwise(y.Elements, (s, l) => Cpu.SwiGlu.ForwardRounded(gate.Floats.Slice(s, l), up.Floats.Slice(s, l), y.Floats.Slice(s, l),
            gateBf16.Span<ushort>().Slice(s, l), upBf16.Span<ushort>().Slice(s, l)));
    }

    public void RoundToBf16(Tensor x, Tensor y)
    {
        const string op = "RoundToBf16";
        Host(op, x, y);
        F32(op, x);
        Require(y.DType == DType.BF16 && y.Shape == x.Shape, op, $"{Describe(y)} must be bf16 of x's shape {x.Shape}");
        Elementwise(x.Elements, (s, l) => BFloat16.FromSingle(x.Floats.Slice(s, l), y.Span<ushort>().Slice(s, l)));
    }

    // SwiGlu's and SwiGluBackward's gate and up: both f32 (false) or both bf16 (true).
    private static bool GateUpDType(string op, Tensor gate, Tensor up)
    {
        Require(gate.DType == up.DType && gate.DType is DType.F32 or DType.BF16, op, $"gate {Describe(gate)} and up {Describe(up)} must both be f32 or both bf16");
        return gate.DType == DType.BF16;
    }

    public void Add(Tensor a, Tensor b, Tensor y)
    {
        Host("Add", a, b, y);
        F32("Add", a, b, y);
        Require(b.Shape == a.Shape && y.Shape == a.Shape, "Add", $"a {a.Shape}, b {b.Shape}, y {y.Shape} must have one shape");
        Elementwise(y.Elements, (s, l) => Cpu.Add.Forward(a.Floats.Slice(s, l), b.Floats.Slice(s, l), y.Floats.Slice(s, l)));
    }

    // Element-wise ops over [0, n) on the backend's threads: ranges of whole 16-element groups (one
    // AVX-512 vector), so every element takes the same SIMD path as in a one-thread run and the bits do
    // not depend on the thread count; small tensors stay on one thread.
    private const int ElementwiseMinPerThread = 1 << 15;

    private void Elementwise(long n, Action<int, int> body)
    {
        int groups = (int)((n + 15) / 16);
        int parts = StaticPartition.Parts(_threads, groups, n, ElementwiseMinPerThread);
        StaticPartition.For(groups, parts, (g0, g1) =>
        {
            int start = g0 * 16;
            body(start, (int)Math.Min(n, (long)g1 * 16) - start);
        });
    }

    public void Dropout(Tensor x, ulong seed, float p, Tensor y)
    {
        Host("Dropout", x, y);
        F32("Dropout", x, y);
        Require(y.Shape == x.Shape, "Dropout", $"x {x.Shape}, y {y.Shape} must have one shape");
        Require(p >= 0 && p < 1, "Dropout", $"probability {p} must be in [0, 1)");
        Cpu.Dropout.Forward(x.Floats, y.Floats, seed, p);
    }

    public void LogSoftmax(Tensor x, Tensor y)
    {
        Host("LogSoftmax", x, y);
        F32("LogSoftmax", x, y);
        Require(x.Shape.Rank >= 1 && x.Shape[-1] > 0 && y.Shape == x.Shape, "LogSoftmax", $"x {x.Shape}, y {y.Shape} must have one non-empty shape");
        Cpu.LogSoftmax.Forward(x.Floats, y.Floats, x.Shape[-1], _threads);
    }

    // ---- backward ----

    public void EmbeddingBackward(Tensor dOut, ReadOnlySpan<int> ids, Tensor dTable)
    {
        Host("EmbeddingBackward", dOut, dTable);
        F32("EmbeddingBackward", dOut, dTable);
        Require(dTable.Shape.Rank == 2 && dOut.Shape.Rank >= 1 && dOut.Shape[-1] == dTable.Shape[1] && dOut.Elements == (long)ids.Length * dTable.Shape[1],
            "EmbeddingBackward", $"dOut {dOut.Shape} must be [{ids.Length},C] for dTable {dTable.Shape} [V,C]");
        Cpu.Embedding.Backward(dOut.Floats, ids, dTable.Floats, dTable.Shape[1]);
    }

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dWeight, bool accumulateDx = false)
    {
        Host("RmsNormBackward", dy, x, weight, rstd, dx, dWeight);
        F32("RmsNormBackward", dy, x, weight, rstd, dx, dWeight);
        Require(x.Shape.Rank >= 1 && dy.Shape == x.Shape && dx.Shape == x.Shape && weight.Shape.Rank == 1 && weight.Shape[0] == x.Shape[-1]
            && rstd.Elements == x.Shape.Rows && (dWeight == null || dWeight.Shape == weight.Shape),
            "RmsNormBackward", $"dy {dy.Shape}, x {x.Shape}, dx {dx.Shape}, weight {weight.Shape}, rstd {rstd.Shape}, dWeight {dWeight?.Shape}");
        Cpu.RmsNorm.Backward(dy.Floats, x.Floats, weight.Floats, rstd.Floats, dx.Floats, dWeight == null ? default : dWeight.Floats, x.Shape[-1], _threads, accumulateDx);
    }

    public void LinearBackward(Tensor dy, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias, bool accumulateDx = false)
    {
        var (n, k, m) = CheckLinear("LinearBackward", x, weight, null, dy);
        Host("LinearBackward", dx, dWeight, dBias);
        F32("LinearBackward", dx, dWeight, dBias);
        Require(dx == null || dx.Shape == x.Shape, "LinearBackward", $"dx {dx?.Shape} must be the shape of x {x.Shape}");
        Require(dWeight == null || dWeight.Shape == weight.Shape, "LinearBackward", $"dWeight {dWeight?.Shape} must be the shape of weight {weight.Shape}");
        Require(dBias == null || dBias.Shape == new Shape(m), "LinearBackward", $"dBias {dBias?.Shape} must be [{m}]");
        if (weight.DType == DType.F32)
            Cpu.Linear.Backward(dy.Floats, x.Floats, weight.Floats, Out(dx), Out(dWeight), Out(dBias), n, k, m, accumulateDx, _threads);
        else
            Cpu.Linear.Backward(dy.Floats, x.Floats, weight.Span<ushort>(), Out(dx), Out(dWeight), Out(dBias), n, k, m, accumulateDx, _threads);
    }

    public void LoraLinearBackward(Tensor dy, Tensor x, Tensor xa, Tensor loraA, Tensor loraB, float scale, Tensor? dx, Tensor? dA, Tensor? dB)
    {
        const string op = "LoraLinearBackward";
        Host(op, dy, x, xa, loraA, loraB, dx, dA, dB);
        F32(op, dy, x, xa, loraA, loraB, dx, dA, dB);
        Require(loraA.Shape.Rank == 2 && loraB.Shape.Rank == 2 && loraB.Shape[1] == loraA.Shape[0] && x.Shape.Rank >= 1 && x.Shape[-1] == loraA.Shape[1],
            op, $"x {x.Shape}, A {loraA.Shape}, B {loraB.Shape}: need A [r,K], B [M,r]");
        int r = loraA.Shape[0], k = loraA.Shape[1], m = loraB.Shape[0];
        Require(dy.Shape == x.Shape.WithLast(m) && xa.Shape == x.Shape.WithLast(r) && (dx == null || dx.Shape == x.Shape) && (dA == null || dA.Shape == loraA.Shape) && (dB == null || dB.Shape == loraB.Shape),
            op, $"dy {dy.Shape}, x {x.Shape}, xa {xa.Shape}, dx {dx?.Shape}, dA {dA?.Shape}, dB {dB?.Shape} for A {loraA.Shape}, B {loraB.Shape}");
        Cpu.LoraLinear.Backward(dy.Floats, x.Floats, xa.Floats, loraA.Floats, loraB.Floats, scale, Out(dx), Out(dA), Out(dB), x.Shape.Rows, k, m, r, _threads);
    }

    public void DoraMagnitudeBackward(Tensor dy, Tensor z, Tensor norm, Tensor dMagnitude)
    {
        const string op = "DoraMagnitudeBackward";
        Host(op, dy, z, norm, dMagnitude);
        F32(op, dy, z, norm, dMagnitude);
        int m = CheckDoraVectors(op, z, norm, dMagnitude);
        Require(dy.Shape == z.Shape, op, $"dy {dy.Shape} must be the shape of z {z.Shape}");
        Cpu.DoraScale.MagnitudeBackward(dy.Floats, z.Floats, norm.Floats, dMagnitude.Floats, z.Shape.Rows, m, _threads);
    }

    public void RopeBackward(Tensor dx, ReadOnlySpan<int> positions, RopeFrequencies freqs)
    {
        int heads = CheckRope("RopeBackward", dx, positions, freqs);
        Cpu.Rope.Backward(dx.Floats, positions, freqs.InvFreq, freqs.AttentionScaling, heads, _threads);
    }

    public void AttentionBackward(in AttentionArgs a, Tensor dOut, Tensor dq, Tensor dk, Tensor dv)
    {
        var (batch, tq, heads, s, kvHeads, d) = CheckAttention("AttentionBackward", a);
        Host("AttentionBackward", dOut, dq, dk, dv);
        F32("AttentionBackward", dOut, dq, dk, dv);
        Require(dOut.Shape == a.Q.Shape && dq.Shape == a.Q.Shape && dk.Shape == a.K.Shape && dv.Shape == a.K.Shape,
            "AttentionBackward", $"dOut {dOut.Shape}, dq {dq.Shape} must be q's {a.Q.Shape}; dk {dk.Shape}, dv {dv.Shape} k's {a.K.Shape}");
        bool bf16 = a.Q.DType == DType.BF16; // widened, as in the forward
        float[]? q = bf16 ? a.Q.ToFloatArray() : null, k = bf16 ? a.K.ToFloatArray() : null, v = bf16 ? a.V.ToFloatArray() : null;
        Cpu.Attention.Backward(q ?? a.Q.Floats, k ?? a.K.Floats, v ?? a.V.Floats, a.Lse == null ? default : a.Lse.Floats, dOut.Floats, dq.Floats, dk.Floats, dv.Floats,
            batch, tq, heads, s, kvHeads, d, a.KvLength, a.QueryOffset, a.Scale, a.KeyMask.Span, a.SegmentIds.Span, _threads);
    }

    public void SwiGluBackward(Tensor dy, Tensor gate, Tensor up, Tensor dGate, Tensor dUp)
    {
        const string op = "SwiGluBackward";
        Host(op, dy, gate, up, dGate, dUp);
        F32(op, dy, dGate, dUp);
        bool bf16 = GateUpDType(op, gate, up);
        Require(gate.Shape == dy.Shape && up.Shape == dy.Shape && dGate.Shape == dy.Shape && dUp.Shape == dy.Shape,
            op, $"dy {dy.Shape}, gate {gate.Shape}, up {up.Shape}, dGate {dGate.Shape}, dUp {dUp.Shape} must have one shape");
        if (bf16) Elementwise(dy.Elements, (s, l) => Cpu.SwiGlu.Backward(dy.Floats.Slice(s, l), gate.Span<ushort>().Slice(s, l), up.Span<ushort>().Slice(s, l), dGate.Floats.Slice(s, l), dUp.Floats.Slice(s, l)));
        else Elementwise(dy.Elements, (s, l) => Cpu.SwiGlu.Backward(dy.Floats.Slice(s, l), gate.Floats.Slice(s, l), up.Floats.Slice(s, l), dGate.Floats.Slice(s, l), dUp.Floats.Slice(s, l)));
    }

    public void LmHeadCrossEntropy(Tensor hidden, Tensor lmHead, ReadOnlySpan<int> labels, Tensor losses, float lossScale, Tensor? dHidden, Tensor? dLmHead, ReadOnlySpan<float> rowScales = default)
    {
        const string op = "LmHeadCrossEntropy";
        Host(op, hidden, lmHead, losses, dHidden, dLmHead);
        F32(op, hidden, losses, dHidden, dLmHead);
        var (n, c, v) = LmHeadShapes.CrossEntropy(hidden, lmHead, labels, losses, dHidden, dLmHead, rowScales, "cpu");
        bool bf16 = lmHead.DType == DType.BF16;
        using var scratch = Uninitialized(new Shape(checked((int)Cpu.LmHeadCrossEntropy.ScratchFloats(n, c, v, onePass: dLmHead == null && dHidden != null))));
        Cpu.LmHeadCrossEntropy.Run(hidden.Floats, bf16 ? default : lmHead.Floats, bf16 ? lmHead.Span<ushort>() : default, labels, losses.Floats, lossScale,
            Out(dHidden), Out(dLmHead), n, c, v, _threads, rowScales: rowScales, scratch: scratch.Floats);
    }

    public void LmHeadDistillation(Tensor studentHidden, Tensor studentLmHead, Tensor teacherHidden, Tensor teacherLmHead, ReadOnlySpan<int> mask, float temperature, bool reverse,
        Tensor losses, float lossScale, Tensor? dHidden, Tensor? dLmHead)
    {
        const string op = "LmHeadDistillation";
        Host(op, studentHidden, studentLmHead, teacherHidden, teacherLmHead, losses, dHidden, dLmHead);
        F32(op, studentHidden, teacherHidden, losses, dHidden, dLmHead);
        var (n, cs, ct, v) = LmHeadShapes.Distillation(studentHidden, studentLmHead, teacherHidden, teacherLmHead, mask, temperature, losses, dHidden, dLmHead, "cpu");
        bool sb = studentLmHead.DType == DType.BF16, tb = teacherLmHead.DType == DType.BF16;
        Cpu.LmHeadDistillation.Run(studentHidden.Floats, sb ? default : studentLmHead.Floats, sb ? studentLmHead.Span<ushort>() : default,
            teacherHidden.Floats, tb ? default : teacherLmHead.Floats, tb ? teacherLmHead.Span<ushort>() : default,
            mask, temperature, reverse, losses.Floats, lossScale, Out(dHidden), Out(dLmHead), n, cs, ct, v, _threads);
    }

    // ---- optimizer and reductions ----

    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, in AdamWParams p)
    {
        Host("AdamWStep", param, grad, m, v);
        F32("AdamWStep", param, grad, m, v);
        Require(grad.Shape == param.Shape && m.Shape == param.Shape && v.Shape == param.Shape, "AdamWStep", $"param {param.Shape}, grad {grad.Shape}, m {m.Shape}, v {v.Shape} must have one shape");
        Cpu.AdamW.Step(param.Floats, grad.Floats, m.Floats, v.Floats, p);
    }

    public double SumOfSquares(Tensor x)
    {
        Host("SumOfSquares", x);
        F32("SumOfSquares", x);
        return Cpu.SumOfSquares.Compute(x.Floats, _threads);
    }

    public void Clear(Tensor x)
    {
        Host("Clear", x);
        x.Bytes.Clear();
    }

    public void Scale(Tensor x, float s)
    {
        Host("Scale", x);
        F32("Scale", x);
        Cpu.Scale.Apply(x.Floats, s);
    }

    public void ScaleRows(Tensor x, ReadOnlySpan<float> scales)
    {
        Host("ScaleRows", x);
        F32("ScaleRows", x);
        Require(x.Shape.Rank >= 1 && x.Shape.Rows == scales.Length, "ScaleRows", $"x {x.Shape} must have one row per scale ({scales.Length})");
        if (x.Elements > 0) Cpu.ScaleRows.Apply(x.Floats, scales, x.Shape[-1]);
    }

    public void Dispose()
    {
        Volatile.Write(ref _disposed, true);
        _pool.Trim();
    }

    // ---- checks ----

    private (int N, int K, int M) CheckLinear(string op, Tensor x, Tensor weight, Tensor? bias, Tensor y)
    {
        Host(op, x, weight, bias, y);
        F32(op, x, bias, y);
        Require(weight.DType == DType.F32 || weight.DType == DType.BF16, op, $"weight {Describe(weight)} must be f32 or bf16");
        Require(x.Shape.Rank >= 1 && weight.Shape.Rank == 2 && weight.Shape[1] == x.Shape[-1], op, $"x {x.Shape} and weight {weight.Shape}: weight must be [M,{(x.Shape.Rank >= 1 ? x.Shape[-1] : 0)}]");
        int k = weight.Shape[1], m = weight.Shape[0];
        Require(y.Shape == x.Shape.WithLast(m), op, $"y {y.Shape} must be {x.Shape.WithLast(m)} for x {x.Shape} and weight {weight.Shape}");
        Require(bias == null || (bias.Shape.Rank == 1 && bias.Shape[0] == m), op, $"bias {bias?.Shape} must be [{m}] for weight {weight.Shape}");
        return (x.Shape.Rows, k, m);
    }

    // q, k and v all f32 or all bf16; the output and lse f32.
    private static (int B, int Tq, int H, int S, int Hkv, int D) CheckAttention(string op, in AttentionArgs a)
    {
        Host(op, a.Q, a.K, a.V, a.Output, a.Lse);
        F32(op, a.Output, a.Lse);
        if (a.Q.DType != DType.BF16) F32(op, a.Q, a.K, a.V);
        else Require(a.K.DType == DType.BF16 && a.V.DType == DType.BF16, op, $"q is bf16, so k {a.K} and v {a.V} must be too");
        var (q, k) = (a.Q.Shape, a.K.Shape);
        Require(q.Rank == 4 && k.Rank == 4 && a.V.Shape == k && a.Output.Shape == q && k[0] == q[0] && k[3] == q[3] && k[2] > 0 && q[2] % k[2] == 0,
            op, $"q {q}, k {k}, v {a.V.Shape}, output {a.Output.Shape}: need q,output [B,Tq,H,D], k,v [B,S,Hkv,D], H a multiple of Hkv");
        int batch = q[0], tq = q[1], heads = q[2], d = q[3], s = k[1], kvHeads = k[2];
        Require(a.KvLength >= 0 && a.KvLength <= s && a.QueryOffset >= 0, op, $"kvLength {a.KvLength} must be within the cache's {s} rows and offset {a.QueryOffset} >= 0 (k {k})");
        Require(a.KeyMask.IsEmpty || a.KeyMask.Length == batch * a.KvLength, op, $"key mask has {a.KeyMask.Length} entries, need B*kvLength = {batch}x{a.KvLength}");
        Require(a.Lse == null || a.Lse.Shape == new Shape(batch, heads, tq), op, $"lse {a.Lse?.Shape} must be [{batch},{heads},{tq}]");
        Require(a.SegmentIds.IsEmpty || (a.SegmentIds.Length == batch * a.KvLength && a.QueryOffset + tq <= a.KvLength), op,
            $"segment ids have {a.SegmentIds.Length} entries, need B*kvLength = {batch}x{a.KvLength} covering the queries (offset {a.QueryOffset} + {tq})");
        return (batch, tq, heads, s, kvHeads, d);
    }

    private static int CheckRope(string op, Tensor x, ReadOnlySpan<int> positions, RopeFrequencies freqs)
    {
        Host(op, x);
        F32(op, x);
        Require(x.Shape.Rank >= 2 && x.Shape[-1] == freqs.HeadDim && freqs.HeadDim > 0, op, $"x {x.Shape} must be [N,H,{freqs.HeadDim}] for these frequencies");
        int heads = x.Shape[-2];
        Require(heads > 0 && x.Elements == (long)positions.Length * heads * freqs.HeadDim, op, $"x {x.Shape} must hold {positions.Length} positions of [{heads},{freqs.HeadDim}]");
        return heads;
    }

    private static ReadOnlySpan<float> Floats(Tensor? t) => t == null ? default : t.Floats;
    private static Span<float> Out(Tensor? t) => t == null ? default : t.Floats;

    private static void Require(bool ok, string op, string detail)
    {
        if (!ok) throw new ArgumentException($"cpu {op}: {detail}");
    }

    private static void Require(bool ok, string op, [System.Runtime.CompilerServices.InterpolatedStringHandlerArgument(nameof(ok))] ref CheckMessage detail)
    {
        if (!ok) throw new ArgumentException($"cpu {op}: {detail.ToStringAndClear()}");
    }

    private static void Host(string op, params ReadOnlySpan<Tensor?> ts)
    {
        foreach (var t in ts)
            if (t != null && !t.IsHost) throw new ArgumentException($"cpu {op}: {Describe(t)} is not a host tensor");
    }

    private static void F32(string op, params ReadOnlySpan<Tensor?> ts)
    {
        foreach (var t in ts)
            if (t != null && t.DType != DType.F32) throw new ArgumentException($"cpu {op}: {Describe(t)} must be f32");
    }

    private static string Describe(Tensor t) => $"{t.Name ?? "tensor"} {t.DType}{t.Shape}";

}
