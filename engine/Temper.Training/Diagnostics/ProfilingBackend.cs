// A timing decorator over IBackend for `temper bench train --profile` and the bench's `--train-step N
// --profile`: forwards every member to the wrapped backend and adds the time and call count of each op
// to a table keyed by op name (the matmul ops also by shape, x[N,K] -> [N,M], so each projection shows
// apart). CpuBackend's ops are synchronous, so the time of a call is the op's time; for a device backend
// pass its synchronize (IlgpuBackend.Synchronize), called before each op's end timestamp, so an op is
// timed to its completion rather than its launch. Written by hand because `in` parameters and
// ReadOnlySpan arguments can't go through DispatchProxy. Dispose does not dispose the wrapped backend.
using System.Diagnostics;
using Temper.Core;
using Temper.Core.Quantization;

namespace Temper.Training.Diagnostics;

public sealed class ProfilingBackend(IBackend inner, Action? synchronize = null) : IBackend
{
    private readonly Dictionary<string, (long Ticks, int Calls)> _ops = [];

    public string Name => inner.Name;

    /// <summary>(op, seconds, calls) by total time, largest first.</summary>
    public IReadOnlyList<(string Op, double Seconds, int Calls)> Table() =>
        _ops.Select(kv => (kv.Key, kv.Value.Ticks / (double)Stopwatch.Frequency, kv.Value.Calls))
            .OrderByDescending(r => r.Item2).ToList();

    public void Reset() => _ops.Clear();

    /// <summary>
    /// Writes the table as markdown: each op's ms, calls and share per step over the given number of
    /// timed steps that took stepSeconds of wall time in all, largest first.
    /// </summary>
    public void WriteTable(TextWriter output, double stepSeconds, int steps)
    {
        var table = Table();
        double opSeconds = table.Sum(r => r.Seconds);
        output.WriteLine($"per-op time over the {steps} timed steps ({opSeconds / stepSeconds:P0} of step time is inside backend ops):");
        output.WriteLine("| op | ms/step | calls/step | share of step |");
        output.WriteLine("| --- | ---: | ---: | ---: |");
        foreach (var (op, seconds, calls) in table)
            output.WriteLine($"| {op} | {seconds / steps * 1000:F1} | {calls / (double)steps:0.#} | {seconds / stepSeconds:P1} |");
    }

    private void Record(string op, long start)
    {
        synchronize?.Invoke();
        long ticks = Stopwatch.GetTimestamp() - start;
        _ops[op] = _ops.TryGetValue(op, out var t) ? (t.Ticks + ticks, t.Calls + 1) : (ticks, 1);
    }

    private static string Mm(string op, Tensor x, int m) => $"{op} [{x.Shape.Rows},{x.Shape[-1]}]->{m}";

    public Tensor Zeros(Shape shape, DType dtype = DType.F32) { long s = Stopwatch.GetTimestamp(); var r = inner.Zeros(shape, dtype); Record(nameof(Zeros), s); return r; }
    public Tensor Uninitialized(Shape shape, DType dtype = DType.F32) { long s = Stopwatch.GetTimestamp(); var r = inner.Uninitialized(shape, dtype); Record(nameof(Uninitialized), s); return r; }
    public Tensor FromHost(Tensor host) { long s = Stopwatch.GetTimestamp(); var r = inner.FromHost(host); Record(nameof(FromHost), s); return r; }
    public Tensor ToHost(Tensor t) { long s = Stopwatch.GetTimestamp(); var r = inner.ToHost(t); Record(nameof(ToHost), s); return r; }
    public void CopyRows(Tensor src, int srcRow, Tensor dst, int dstRow, int rows) { long s = Stopwatch.GetTimestamp(); inner.CopyRows(src, srcRow, dst, dstRow, rows); Record(nameof(CopyRows), s); }

    public void Embedding(Tensor table, ReadOnlySpan<int> ids, Tensor output) { long s = Stopwatch.GetTimestamp(); inner.Embedding(table, ids, output); Record(nameof(Embedding), s); }
    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor? rstd = null) { long s = Stopwatch.GetTimestamp(); inner.RmsNorm(x, weight, eps, y, rstd); Record(nameof(RmsNorm), s); }
    public void AddRmsNorm(Tensor a, Tensor b, Tensor sum, Tensor weight, float eps, Tensor y, Tensor? rstd = null) { long s = Stopwatch.GetTimestamp(); inner.AddRmsNorm(a, b, sum, weight, eps, y, rstd); Record(nameof(AddRmsNorm), s); }
    public void Linear(Tensor x, Tensor weight, Tensor? bias, Tensor y, bool accumulate = false) { long s = Stopwatch.GetTimestamp(); inner.Linear(x, weight, bias, y, accumulate); Record(Mm(nameof(Linear), x, weight.Shape[0]), s); }
    public void LoraLinear(Tensor x, Tensor weight, Tensor? bias, Tensor loraA, Tensor loraB, float scale, Tensor y, Tensor? xa = null) { long s = Stopwatch.GetTimestamp(); inner.LoraLinear(x, weight, bias, loraA, loraB, scale, y, xa); Record(Mm(nameof(LoraLinear), x, weight.Shape[0]), s); }
    public void Rope(Tensor x, ReadOnlySpan<int> positions, RopeFrequencies freqs) { long s = Stopwatch.GetTimestamp(); inner.Rope(x, positions, freqs); Record(nameof(Rope), s); }
    public void Attention(in AttentionArgs a) { long s = Stopwatch.GetTimestamp(); inner.Attention(a); Record(nameof(Attention), s); }
    public void SwiGlu(Tensor gate, Tensor up, Tensor y) { long s = Stopwatch.GetTimestamp(); inner.SwiGlu(gate, up, y); Record(nameof(SwiGlu), s); }
    public void RoundToBf16(Tensor x, Tensor y) { long s = Stopwatch.GetTimestamp(); inner.RoundToBf16(x, y); Record(nameof(RoundToBf16), s); }
    public void SwiGluRounded(Tensor gate, Tensor up, Tensor y, Tensor gateBf16, Tensor upBf16) { long s = Stopwatch.GetTimestamp(); inner.SwiGluRounded(gate, up, y, gateBf16, upBf16); Record(nameof(SwiGluRounded), s); }
    public bool KeepsBf16Activations => inner.KeepsBf16Activations;
    public void Add(Tensor a, Tensor b, Tensor y) { long s = Stopwatch.GetTimestamp(); inner.Add(a, b, y); Record(nameof(Add), s); }
    public void LogSoftmax(Tensor x, Tensor y) { long s = Stopwatch.GetTimestamp(); inner.LogSoftmax(x, y); Record(nameof(LogSoftmax), s); }
    public void Nf4Linear(Tensor x, Nf4Weight w, Tensor? bias, Tensor y, bool accumulate = false) { long s = Stopwatch.GetTimestamp(); inner.Nf4Linear(x, w, bias, y, accumulate); Record(Mm(nameof(Nf4Linear), x, w.Shape[0]), s); }
    public void Nf4Dequantize(Nf4Weight w, Tensor output) { long s = Stopwatch.GetTimestamp(); inner.Nf4Dequantize(w, output); Record(nameof(Nf4Dequantize), s); }
    public void Dropout(Tensor x, ulong seed, float p, Tensor y) { long s = Stopwatch.GetTimestamp(); inner.Dropout(x, seed, p, y); Record(nameof(Dropout), s); }

    public void EmbeddingBackward(Tensor dOut, ReadOnlySpan<int> ids, Tensor dTable) { long s = Stopwatch.GetTimestamp(); inner.EmbeddingBackward(dOut, ids, dTable); Record(nameof(EmbeddingBackward), s); }
    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dWeight, bool accumulateDx = false) { long s = Stopwatch.GetTimestamp(); inner.RmsNormBackward(dy, x, weight, rstd, dx, dWeight, accumulateDx); Record(nameof(RmsNormBackward), s); }
    public void LinearBackward(Tensor dy, Tensor x, Tensor weight, Tensor? dx, Tensor? dWeight, Tensor? dBias, bool accumulateDx = false) { long s = Stopwatch.GetTimestamp(); inner.LinearBackward(dy, x, weight, dx, dWeight, dBias, accumulateDx); Record(Mm(nameof(LinearBackward), x, weight.Shape[0]), s); }
    public void DoraNorm(Tensor weight, Tensor loraA, Tensor loraB, float scale, Tensor norm) { long s = Stopwatch.GetTimestamp(); inner.DoraNorm(weight, loraA, loraB, scale, norm); Record(nameof(DoraNorm), s); }
    public void DoraScale(Tensor z, Tensor magnitude, Tensor norm, Tensor? bias, Tensor y) { long s = Stopwatch.GetTimestamp(); inner.DoraScale(z, magnitude, norm, bias, y); Record(nameof(DoraScale), s); }
    public void DoraMagnitudeBackward(Tensor dy, Tensor z, Tensor norm, Tensor dMagnitude) { long s = Stopwatch.GetTimestamp(); inner.DoraMagnitudeBackward(dy, z, norm, dMagnitude); Record(nameof(DoraMagnitudeBackward), s); }
    public void LoraLinearBackward(Tensor dy, Tensor x, Tensor xa, Tensor loraA, Tensor loraB, float scale, Tensor? dx, Tensor? dA, Tensor? dB) { long s = Stopwatch.GetTimestamp(); inner.LoraLinearBackward(dy, x, xa, loraA, loraB, scale, dx, dA, dB); Record(Mm(nameof(LoraLinearBackward), x, loraB.Shape[0]), s); }
    public void RopeBackward(Tensor dx, ReadOnlySpan<int> positions, RopeFrequencies freqs) { long s = Stopwatch.GetTimestamp(); inner.RopeBackward(dx, positions, freqs); Record(nameof(RopeBackward), s); }
    public void AttentionBackward(in AttentionArgs a, Tensor dOut, Tensor dq, Tensor dk, Tensor dv) { long s = Stopwatch.GetTimestamp(); inner.AttentionBackward(a, dOut, dq, dk, dv); Record(nameof(AttentionBackward), s); }
    public void SwiGluBackward(Tensor dy, Tensor gate, Tensor up, Tensor dGate, Tensor dUp) { long s = Stopwatch.GetTimestamp(); inner.SwiGluBackward(dy, gate, up, dGate, dUp); Record(nameof(SwiGluBackward), s); }
    public void LmHeadCrossEntropy(Tensor hidden, Tensor lmHead, ReadOnlySpan<int> labels, Tensor losses, float lossScale, Tensor? dHidden, Tensor? dLmHead, ReadOnlySpan<float> rowScales = default)
    { long s = Stopwatch.GetTimestamp(); inner.LmHeadCrossEntropy(hidden, lmHead, labels, losses, lossScale, dHidden, dLmHead, rowScales); Record(nameof(LmHeadCrossEntropy), s); }
    public void LmHeadDistillation(Tensor studentHidden, Tensor studentLmHead, Tensor teacherHidden, Tensor teacherLmHead, ReadOnlySpan<int> mask, float temperature, bool reverse,
        Tensor losses, float lossScale, Tensor? dHidden, Tensor? dLmHead)
    { long s = Stopwatch.GetTimestamp(); inner.LmHeadDistillation(studentHidden, studentLmHead, teacherHidden, teacherLmHead, mask, temperature, reverse, losses, lossScale, dHidden, dLmHead); Record(nameof(LmHeadDistillation), s); }
    public void Nf4LinearBackward(Tensor dy, Nf4Weight w, Tensor dx, bool accumulateDx = false) { long s = Stopwatch.GetTimestamp(); inner.Nf4LinearBackward(dy, w, dx, accumulateDx); Record(Mm(nameof(Nf4LinearBackward), dx, w.Shape[0]), s); }

    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, in AdamWParams p) { long s = Stopwatch.GetTimestamp(); inner.AdamWStep(param, grad, m, v, p); Record(nameof(AdamWStep), s); }
    public double SumOfSquares(Tensor x) { long s = Stopwatch.GetTimestamp(); double r = inner.SumOfSquares(x); Record(nameof(SumOfSquares), s); return r; }
    public double SumOfSquares(IReadOnlyList<Tensor> xs) { long s = Stopwatch.GetTimestamp(); double r = inner.SumOfSquares(xs); Record(nameof(SumOfSquares) + "s", s); return r; }
    public void AdamWSteps(IReadOnlyList<AdamWTensors> tensors, in AdamWParams p) { long s = Stopwatch.GetTimestamp(); inner.AdamWSteps(tensors, p); Record(nameof(AdamWSteps), s); }
    public void Clear(Tensor x) { long s = Stopwatch.GetTimestamp(); inner.Clear(x); Record(nameof(Clear), s); }
    public void Scale(Tensor x, float s) { long t = Stopwatch.GetTimestamp(); inner.Scale(x, s); Record(nameof(Scale), t); }
    public void ScaleRows(Tensor x, ReadOnlySpan<float> scales) { long t = Stopwatch.GetTimestamp(); inner.ScaleRows(x, scales); Record(nameof(ScaleRows), t); }

    public void PagedAttention(in PagedAttentionArgs a) { long s = Stopwatch.GetTimestamp(); inner.PagedAttention(a); Record(nameof(PagedAttention), s); }
    public void GatheredLoraLinear(Tensor x, Tensor loraA, Tensor loraB, ReadOnlySpan<float> scales, ReadOnlySpan<int> rowAdapter, Tensor y)
    { long s = Stopwatch.GetTimestamp(); inner.GatheredLoraLinear(x, loraA, loraB, scales, rowAdapter, y); Record(nameof(GatheredLoraLinear), s); }

    public void Dispose() { }
}
