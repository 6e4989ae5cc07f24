// Logit distillation through the LM heads, the oracle (full logits per row, f64). For each row n with
// mask[n] != 0, student logits s = studentHidden[n,Cs] studentHead[V,Cs]^T and teacher logits
// t = teacherHidden[n,Ct] teacherHead[V,Ct]^T, softmaxes at temperature T: p_S = softmax(s/T),
// p_T = softmax(t/T), and
//   forward KL: losses[n] = T^2 sum_v p_T (log p_T - log p_S)
//   reverse KL: losses[n] = T^2 sum_v p_S (log p_S - log p_T)
// (Hinton's T^2 keeps gradient sizes independent of T); 0 where mask[n] == 0. Gradients of
// L = lossScale * sum_n losses[n] with respect to the student only, with g = d L / d s:
//   forward: g = lossScale T (p_S - p_T);  reverse: g = lossScale T p_S (log p_S - log p_T - KL_n),
// KL_n = losses[n] / T^2; dHidden += g studentHead, dLmHead += g^T studentHidden.
namespace Temper.Kernels.Cpu.Reference;

public static class LmHeadDistillationReference
{
    public static void Forward(ReadOnlySpan<float> studentHidden, ReadOnlySpan<float> studentHead, ReadOnlySpan<float> teacherHidden, ReadOnlySpan<float> teacherHead,
        ReadOnlySpan<int> mask, float temperature, bool reverse, Span<float> losses, float lossScale, Span<float> dHidden, Span<float> dLmHead, int n, int cs, int ct, int v)
    {
        var logPs = new double[v];
        var logPt = new double[v];
        for (int i = 0; i < n; i++)
        {
            if (mask[i] == 0)
            {
                losses[i] = 0;
                continue;
            }
            LogSoftmax(studentHidden.Slice(i * cs, cs), studentHead, temperature, logPs, cs, v);
            LogSoftmax(teacherHidden.Slice(i * ct, ct), teacherHead, temperature, logPt, ct, v);
            double kl = 0;
            for (int j = 0; j < v; j++)
                kl += reverse ? Math.Exp(logPs[j]) * (logPs[j] - logPt[j]) : Math.Exp(logPt[j]) * (logPt[j] - logPs[j]);
            losses[i] = (float)(temperature * (double)temperature * kl);
            if (dHidden.IsEmpty && dLmHead.IsEmpty) continue;
            for (int j = 0; j < v; j++)
            {
                double ps = Math.Exp(logPs[j]);
                double g = lossScale * (double)temperature * (reverse ? ps * (logPs[j] - logPt[j] - kl) : ps - Math.Exp(logPt[j]));
                for (int k = 0; k < cs; k++)
                {
                    if (!dHidden.IsEmpty) dHidden[i * cs + k] += (float)(g * studentHead[j * cs + k]);
                    if (!dLmHead.IsEmpty) dLmHead[j * cs + k] += (float)(g * studentHidden[i * cs + k]);
                }
            }
        }
    }

    /// <summary>logp[v] = log softmax(hidden[C] head[V,C]^T / T).</summary>
    private static void LogSoftmax(ReadOnlySpan<float> hidden, ReadOnlySpan<float> head, float temperature, double[] logp, int c, int v)
    {
        double max = double.NegativeInfinity;
        for (int j = 0; j < v; j++)
        {
            double dot = 0;
            for (int k = 0; k < c; k++) dot += (double)hidden[k] * head[j * c + k];
            logp[j] = dot / temperature;
            max = Math.Max(max, logp[j]);
        }
        double sum = 0;
        for (int j = 0; j < v; j++) sum += Math.Exp(logp[j] - max);
        double lse = max + Math.Log(sum);
        for (int j = 0; j < v; j++) logp[j] -= lse;
    }
}
