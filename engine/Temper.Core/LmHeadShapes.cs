// The argument checks of the fused LM-head ops (LmHeadCrossEntropy, LmHeadDistillation), shared by every
// backend so that each refuses the same inputs with the same message ("<backend> <op>: ..."): the heads
// [V,C] f32 or bf16 over their hidden's C, a non-empty vocabulary shared by student and teacher, one
// label / mask entry / loss / row scale per row, gradients shaped like what they are the gradient of.
// Dtypes of the f32 operands and where tensors live stay each backend's own checks.
namespace Temper.Core;

public static class LmHeadShapes
{
    /// <summary>Checks a fused LM head + cross-entropy call; returns (rows N, hidden C, vocabulary V).</summary>
    public static (int N, int C, int V) CrossEntropy(Tensor hidden, Tensor lmHead, ReadOnlySpan<int> labels, Tensor losses, Tensor? dHidden, Tensor? dLmHead,
        ReadOnlySpan<float> rowScales, string backend)
    {
        const string op = "LmHeadCrossEntropy";
        Require(lmHead.DType == DType.F32 || lmHead.DType == DType.BF16, backend, op, $"lmHead {Describe(lmHead)} must be f32 or bf16");
        Require(lmHead.Shape.Rank == 2 && hidden.Shape.Rank >= 1 && hidden.Shape[-1] == lmHead.Shape[1], backend, op, $"hidden {hidden.Shape} and lmHead {lmHead.Shape}: lmHead must be [V,C]");
        int n = hidden.Shape.Rows, c = lmHead.Shape[1], v = lmHead.Shape[0];
        Require(rowScales.IsEmpty || rowScales.Length == n, backend, op, $"{rowScales.Length} row scales for {n} rows");
        Require(labels.Length == n && losses.Elements == n, backend, op, $"{labels.Length} labels and losses {losses.Shape} must give one per row of hidden {hidden.Shape}");
        Require(dHidden == null || dHidden.Shape == hidden.Shape, backend, op, $"dHidden {dHidden?.Shape} must be hidden's {hidden.Shape}");
        Require(dLmHead == null || dLmHead.Shape == lmHead.Shape, backend, op, $"dLmHead {dLmHead?.Shape} must be lmHead's {lmHead.Shape}");
        Require(v > 0, backend, op, "the vocabulary is empty");
        return (n, c, v);
    }

    /// <summary>Checks a fused two-head distillation call; returns (rows N, student C, teacher C, vocabulary V).</summary>
    public static (int N, int StudentC, int TeacherC, int V) Distillation(Tensor studentHidden, Tensor studentLmHead, Tensor teacherHidden, Tensor teacherLmHead,
        ReadOnlySpan<int> mask, float temperature, Tensor losses, Tensor? dHidden, Tensor? dLmHead, string backend)
    {
        const string op = "LmHeadDistillation";
        foreach (var head in new[] { studentLmHead, teacherLmHead })
            Require(head.DType is DType.F32 or DType.BF16 && head.Shape.Rank == 2, backend, op, $"LM head {Describe(head)} must be [V,C] f32 or bf16");
        Require(studentHidden.Shape.Rank >= 1 && studentHidden.Shape[-1] == studentLmHead.Shape[1] && teacherHidden.Shape.Rank >= 1 && teacherHidden.Shape[-1] == teacherLmHead.Shape[1],
            backend, op, $"student hidden {studentHidden.Shape} / head {studentLmHead.Shape}, teacher hidden {teacherHidden.Shape} / head {teacherLmHead.Shape}: each head must be [V,C] of its hidden's C");
        int n = studentHidden.Shape.Rows, cs = studentLmHead.Shape[1], ct = teacherLmHead.Shape[1], v = studentLmHead.Shape[0];
        Require(v > 0 && teacherLmHead.Shape[0] == v, backend, op, $"student head {studentLmHead.Shape} and teacher head {teacherLmHead.Shape} must share a non-empty vocabulary");
        Require(teacherHidden.Shape.Rows == n && mask.Length == n && losses.Elements == n, backend, op, $"teacher hidden {teacherHidden.Shape}, {mask.Length} mask entries and losses {losses.Shape} must give one per row of student hidden {studentHidden.Shape}");
        Require(temperature > 0, backend, op, $"temperature {temperature} must be > 0");
        Require(dHidden == null || dHidden.Shape == studentHidden.Shape, backend, op, $"dHidden {dHidden?.Shape} must be student hidden's {studentHidden.Shape}");
        Require(dLmHead == null || dLmHead.Shape == studentLmHead.Shape, backend, op, $"dLmHead {dLmHead?.Shape} must be the student head's {studentLmHead.Shape}");
        return (n, cs, ct, v);
    }

    private static string Describe(Tensor t) => $"{t.Name ?? "tensor"} {t.DType}{t.Shape}";

    private static void Require(bool ok, string backend, string op, string detail)
    {
        if (!ok) throw new ArgumentException($"{backend} {op}: {detail}");
    }

    private static void Require(bool ok, string backend, string op, [System.Runtime.CompilerServices.InterpolatedStringHandlerArgument(nameof(ok))] ref CheckMessage detail)
    {
        if (!ok) throw new ArgumentException($"{backend} {op}: {detail.ToStringAndClear()}");
    }
}
