// The LM head fused with cross-entropy (the backend op chunks over the vocabulary, so the [B*T,V] logits
// are never held). targets[B*T] are the next-token targets (-100 = no loss). Returns the per-token
// cross-entropy [B*T] (0 where no target); gradients are of lossScale * sum_n rowScales[n] loss[n]
// (rowScales empty = all 1: per-token weights, as the preference and RL losses need).
using Temper.Core;

namespace Temper.Models;

public sealed class CrossEntropyHead(int[] targets, float lossScale, float[]? rowScales = null) : IDecoderHead
{
    public float[] Apply(Decoder decoder, Tensor hidden, Tensor? dHidden, Func<Tensor, Tensor?>? gradOf)
    {
        var be = decoder.Backend;
        var lmHead = decoder.Weights.LmHead;
        if (lmHead.Lora != null && dHidden != null) throw new TemperException("training with a LoRA on lm_head is not supported yet");
        using var losses = be.Zeros(new Shape(hidden.Shape.Rows));
        be.LmHeadCrossEntropy(hidden, lmHead.Weight, targets, losses, lossScale, dHidden, dHidden == null ? null : gradOf?.Invoke(lmHead.Weight), rowScales);
        return be.ToHost(losses).Floats.ToArray();
    }
}
