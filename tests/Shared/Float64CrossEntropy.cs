// The float64 cross-entropy the reference forwards (Qwen3Tiny, MoeTiny) score a sequence with: logits [T][V] of one
// sequence and its labels [T] as transformers shifts them (labels[t+1] is the target of position t, -100 skipped);
// each scored position adds logsumexp(logits[t]) - logits[t][labels[t+1]].
namespace Temper.Tests;

public static class Float64CrossEntropy
{
    /// <summary>The summed cross-entropy over the labelled positions, and how many there are.</summary>
    public static (double Sum, int Count) Sum(double[][] logits, int[] labels)
    {
        double sum = 0;
        int count = 0;
        for (int t = 0; t + 1 < labels.Length; t++)
        {
            if (labels[t + 1] == -100) continue;
            double max = logits[t].Max(), lse = max + Math.Log(logits[t].Sum(z => Math.Exp(z - max)));
            sum += lse - logits[t][labels[t + 1]];
            count++;
        }
        return (sum, count);
    }

    /// <summary>The mean cross-entropy over the labelled positions.</summary>
    public static double Mean(double[][] logits, int[] labels)
    {
        var (sum, count) = Sum(logits, labels);
        return sum / count;
    }
}
