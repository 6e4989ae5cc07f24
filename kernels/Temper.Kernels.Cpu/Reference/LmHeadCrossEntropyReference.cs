// LM head + cross-entropy, the oracle (full logits per row, f64): logits[n] = hidden[n,C] lmHead[V,C]^T,
// losses[n] = logsumexp(logits[n]) - logits[n][labels[n]], 0 where labels[n] < 0. Gradients of
// L = lossScale * sum_n rowScales[n] losses[n] (rowScales empty = 1): with
// dlogits[n] = lossScale rowScales[n] (softmax(logits[n]) - onehot(labels[n])),
//   dHidden += dlogits lmHead,  dLmHead += dlogits^T hidden.
namespace Temper.Kernels.Cpu.Reference;

public static class LmHeadCrossEntropyReference
{
    public static void Forward(ReadOnlySpan<float> hidden, ReadOnlySpan<float> lmHead, ReadOnlySpan<int> labels, Span<float> losses,
        float lossScale, Span<float> dHidden, Span<float> dLmHead, int n, int c, int v, ReadOnlySpan<float> rowScales = default)
    {
        var logits = new double[v];
        for (int i = 0; i < n; i++)
        {
            if (labels[i] < 0)
            {
                losses[i] = 0;
                continue;
            }
            double max = double.NegativeInfinity;
            for (int j = 0; j < v; j++)
            {
                double dot = 0;
                for (int t = 0; t < c; t++) dot += (double)hidden[i * c + t] * lmHead[j * c + t];
                logits[j] = dot;
                max = Math.Max(max, dot);
            }
            double sum = 0;
            for (int j = 0; j < v; j++) sum += Math.Exp(logits[j] - max);
            double lse = max + Math.Log(sum);
            losses[i] = (float)(lse - logits[labels[i]]);
            if (dHidden.IsEmpty && dLmHead.IsEmpty) continue;
            for (int j = 0; j < v; j++)
            {
                double g = lossScale * (rowScales.IsEmpty ? 1.0 : rowScales[i]) * (Math.Exp(logits[j] - lse) - (j == labels[i] ? 1 : 0));
                for (int t = 0; t < c; t++)
                {
                    if (!dHidden.IsEmpty) dHidden[i * c + t] += (float)(g * lmHead[j * c + t]);
                    if (!dLmHead.IsEmpty) dLmHead[j * c + t] += (float)(g * hidden[i * c + t]);
                }
            }
        }
    }
}
