// The LM head fused with cross-entropy (the backend op chunks over the vocabulary, so the [B*T,V] logits
// are never held). targets[B*T] are the next-token targets (-100 = no loss). Returns the per-token
// cross-entropy [B*T] (0 where no target); gradients are of lossScale * sum_n rowScales[n] loss[n]
// (rowScales empty = all 1: per-token weights, as the preference and RL losses need).
using Temper.Core;

namespace Temper.Models;

/// <param name="temperature">The logits are divided by it (as TRL's GRPO does with the sampling
/// temperature): the head runs on hidden / T, whose gradient is scaled back by 1 / T.</param>
public sealed class CrossEntropyHead(int[] targets, float lossScale, float[]? rowScales = null, float temperature = 1f) : IDecoderHead
{
    public float[] Apply(Decoder decoder, Tensor hidden, Tensor? dHidden, Func<Tensor, Tensor?>? gradOf)
    {
        var be = decoder.Backend;
        var lmHead = decoder.Weights.LmHead.FusedHeadWeight();
        if (!(temperature > 0)) throw new TemperException($"cross-entropy temperature must be > 0 (got {temperature})");
        using var losses = be.Zeros(new Shape(hidden.Shape.Rows));
        var dLmHead = dHidden == null ? null : gradOf?.Invoke(lmHead);
        if (temperature == 1f)
        {
            be.LmHeadCrossEntropy(hidden, lmHead, targets, losses, lossScale, dHidden, dLmHead, rowScales);
            return be.ToHost(losses).Floats.ToArray();
        }
        using var scaled = be.Zeros(hidden.Shape);
        be.CopyRows(hidden, 0, scaled, 0, hidden.Shape.Rows);
        be.Scale(scaled, 1f / temperature);
        using var dScaled = dHidden == null ? null : be.Zeros(hidden.Shape);
        be.LmHeadCrossEntropy(scaled, lmHead, targets, losses, lossScale, dScaled, dLmHead, rowScales);
        if (dHidden != null)
        {
            be.Scale(dScaled!, 1f / temperature);
            be.Add(dHidden, dScaled!, dHidden);
        }
        return be.ToHost(losses).Floats.ToArray();
    }
}
