// The student's head in logit distillation: the backend's fused LmHeadDistillation between the student's
// final normed hidden state [B*T,Cs] with its LM head and the teacher's [B*T,Ct] (from a no-gradient
// teacher pass) with the teacher's LM head. mask[B*T] marks the positions that predict a completion
// token. Returns the per-token losses T^2 KL [B*T] (0 where unmasked); gradients are of lossScale * their sum.
using Temper.Core;
using Temper.Models;

namespace Temper.Training.Distill;

public sealed class LogitDistillationHead(Tensor teacherHidden, Tensor teacherLmHead, int[] mask, float temperature, bool reverse, float lossScale) : IDecoderHead
{
    public float[] Apply(Decoder decoder, Tensor hidden, Tensor? dHidden, Func<Tensor, Tensor?>? gradOf)
    {
        var be = decoder.Backend;
        var lmHead = decoder.Weights.LmHead.FusedHeadWeight();
        using var losses = be.Zeros(new Shape(hidden.Shape.Rows));
        be.LmHeadDistillation(hidden, lmHead, teacherHidden, teacherLmHead, mask, temperature, reverse, losses, lossScale, dHidden,
            dHidden == null ? null : gradOf?.Invoke(lmHead));
        return be.ToHost(losses).Floats.ToArray();
    }

    /// <summary>mask[n] = 1 where position n predicts a labelled token (labels[n+1] != -100 within its row of [B,T]).</summary>
    public static int[] CompletionMask(ReadOnlySpan<int> labels, int t) =>
        DecoderBackprop.NextTokenTargets(labels, t).Select(x => x < 0 ? 0 : 1).ToArray();
}
