// Summed completion log-probs of whole sequences, log p(y|x) = sum over label tokens of log p(token),
// as preference losses use them: one forward pass (no gradients) over right-padded rows.
using Temper.Models;
using Temper.Training.Data;

namespace Temper.Training.Preference;

public static class SequenceLogps
{
    /// <summary>Per example: (summed label-token log-prob, label-token count).</summary>
    public static (double[] Sums, int[] Counts) Compute(DecoderBackprop backprop, IReadOnlyList<SftExample> examples, int padId, int batchSize = 16)
    {
        var sums = new double[examples.Count];
        var counts = new int[examples.Count];
        for (int s = 0; s < examples.Count; s += batchSize)
        {
            var part = examples.Skip(s).Take(batchSize).ToList();
            var b = SftBatcher.Pad(part, padId);
            var losses = backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, null);
            for (int r = 0; r < part.Count; r++)
            {
                sums[s + r] = -PerRowSum(losses, r, b.Length);
                counts[s + r] = part[r].LabelTokens;
            }
        }
        return (sums, counts);
    }

    public static double PerRowSum(float[] tokenLosses, int row, int length)
    {
        double sum = 0;
        for (int t = 0; t < length; t++) sum += tokenLosses[row * length + t];
        return sum;
    }

    /// <summary>Per-token weights for DecoderBackprop: every token row of sequence r gets w[r].</summary>
    public static float[] RowScales(IReadOnlyList<double> perSequence, int length)
    {
        var s = new float[perSequence.Count * length];
        for (int r = 0; r < perSequence.Count; r++) Array.Fill(s, (float)perSequence[r], r * length, length);
        return s;
    }
}
