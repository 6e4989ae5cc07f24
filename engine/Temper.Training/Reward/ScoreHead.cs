// The reward model's head, as HF's *ForSequenceClassification with num_labels 1: score = hidden[last] .
// weight, where weight [1,C] is the `score` Linear (no bias) and last[b] is the row of hidden [B*T,C]
// holding sequence b's last non-padding token. Returns the scores [B]. When training, lossGradient maps
// the scores to d loss / d score (the pairwise loss needs all of them at once), and the backward puts
// d score * weight into those rows of d hidden and accumulates d weight += d score * hidden[last].
using Temper.Core;
using Temper.Models;

namespace Temper.Training.Reward;

public sealed class ScoreHead(Tensor weight, int[] lastRows, Func<float[], float[]>? lossGradient = null) : IDecoderHead
{
    /// <summary>last[b] = b*T + (index of row b's last mask-1 position), for a right-padded mask [B,T].</summary>
    public static int[] LastTokenRows(ReadOnlySpan<int> mask, int batch)
    {
        int t = mask.Length / batch;
        var rows = new int[batch];
        for (int b = 0; b < batch; b++)
        {
            int last = -1;
            for (int i = 0; i < t; i++) if (mask[b * t + i] != 0) last = i;
            if (last < 0) throw new TemperException($"reward model: sequence {b} of the batch is empty");
            rows[b] = b * t + last;
        }
        return rows;
    }

    public float[] Apply(Decoder decoder, Tensor hidden, Tensor? dHidden, Func<Tensor, Tensor?>? gradOf)
    {
        var be = decoder.Backend;
        int b = lastRows.Length, c = hidden.Shape[-1];
        if (weight.Shape != new Shape(1, c)) throw new TemperException($"reward head score.weight has shape {weight.Shape}, the model needs [1,{c}]");
        using var last = be.Zeros(new Shape(b, c));
        for (int i = 0; i < b; i++) be.CopyRows(hidden, lastRows[i], last, i, 1);
        using var scores = be.Zeros(new Shape(b, 1));
        be.Linear(last, weight, null, scores);
        var s = be.ToHost(scores).Floats.ToArray();
        if (dHidden == null || lossGradient == null) return s;

        var ds = lossGradient(s);
        using var dScores = be.FromHost(Tensor.FromFloats(new Shape(b, 1), ds));
        using var dLast = be.Zeros(new Shape(b, c));
        be.LinearBackward(dScores, last, weight, dLast, gradOf?.Invoke(weight), null);
        for (int i = 0; i < b; i++) be.CopyRows(dLast, i, dHidden, lastRows[i], 1);
        return s;
    }
}
