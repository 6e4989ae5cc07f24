// Causal GQA attention, the oracle. q[B,Tq,H,D], k/v[B,S,Hkv,D] (first kvLength rows used),
// output[B,Tq,H,D], lse[B,H,Tq]. Query i of batch b sits at position queryOffset + i and sees key j when
// j <= that position, j < kvLength and keyMask[b, j] != 0 (an empty mask admits every key); head h reads
// kv head h / (H / Hkv). With segmentIds[B,kvLength] (packed rows) the query at position p also needs
// segmentIds[b,j] == segmentIds[b,p]. Scores scale * q.k, softmax with max subtraction, out = sum p_j v_j;
// a query that sees no key gets zeros and lse = -inf. Sums in f64.
namespace Temper.Kernels.Cpu.Reference;

public static class AttentionReference
{
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> output, Span<float> lse,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, ReadOnlySpan<int> keyMask, ReadOnlySpan<int> segmentIds = default)
    {
        int group = heads / kvHeads;
        var scores = new double[kvLength];
        for (int b = 0; b < batch; b++)
        for (int i = 0; i < tq; i++)
        for (int h = 0; h < heads; h++)
        {
            int kh = h / group;
            int qo = ((b * tq + i) * heads + h) * d;
            int visible = Math.Min(kvLength, queryOffset + i + 1);
            double max = double.NegativeInfinity;
            for (int j = 0; j < visible; j++)
            {
                scores[j] = double.NegativeInfinity;
                if (!Sees(keyMask, segmentIds, b * kvLength, queryOffset + i, j)) continue;
                int ko = ((b * s + j) * kvHeads + kh) * d;
                double dot = 0;
                for (int t = 0; t < d; t++) dot += (double)q[qo + t] * k[ko + t];
                scores[j] = scale * dot;
                max = Math.Max(max, scores[j]);
            }
            for (int t = 0; t < d; t++) output[qo + t] = 0;
            if (double.IsNegativeInfinity(max))
            {
                if (!lse.IsEmpty) lse[(b * heads + h) * tq + i] = float.NegativeInfinity;
                continue;
            }
            double sum = 0;
            for (int j = 0; j < visible; j++) sum += Math.Exp(scores[j] - max);
            for (int t = 0; t < d; t++)
            {
                double acc = 0;
                for (int j = 0; j < visible; j++)
                {
                    if (double.IsNegativeInfinity(scores[j])) continue;
                    acc += Math.Exp(scores[j] - max) / sum * v[((b * s + j) * kvHeads + kh) * d + t];
                }
                output[qo + t] = (float)acc;
            }
            if (!lse.IsEmpty) lse[(b * heads + h) * tq + i] = (float)(max + Math.Log(sum));
        }
    }

    public static void Backward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dOut,
        Span<float> dq, Span<float> dk, Span<float> dv,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, ReadOnlySpan<int> keyMask, ReadOnlySpan<int> segmentIds = default)
    {
        int group = heads / kvHeads;
        var dkAcc = new double[dk.Length];
        var dvAcc = new double[dv.Length];
        var p = new double[kvLength];
        for (int b = 0; b < batch; b++)
        for (int i = 0; i < tq; i++)
        for (int h = 0; h < heads; h++)
        {
            int kh = h / group;
            int qo = ((b * tq + i) * heads + h) * d;
            int visible = Math.Min(kvLength, queryOffset + i + 1);
            double max = double.NegativeInfinity;
            for (int j = 0; j < visible; j++)
            {
                p[j] = double.NegativeInfinity;
                if (!Sees(keyMask, segmentIds, b * kvLength, queryOffset + i, j)) continue;
                int ko = ((b * s + j) * kvHeads + kh) * d;
                double dot = 0;
                for (int t = 0; t < d; t++) dot += (double)q[qo + t] * k[ko + t];
                p[j] = scale * dot;
                max = Math.Max(max, p[j]);
            }
            for (int t = 0; t < d; t++) dq[qo + t] = 0;
            if (double.IsNegativeInfinity(max)) continue;
            double sum = 0;
            for (int j = 0; j < visible; j++) sum += Math.Exp(p[j] - max);
            for (int j = 0; j < visible; j++) p[j] = Math.Exp(p[j] - max) / sum;
            double pdp = 0;
            var dp = new double[visible];
            for (int j = 0; j < visible; j++)
            {
                if (p[j] == 0) continue;
                int vo = ((b * s + j) * kvHeads + kh) * d;
                for (int t = 0; t < d; t++) dp[j] += (double)dOut[qo + t] * v[vo + t];
                pdp += p[j] * dp[j];
            }
            var dqAcc = new double[d];
            for (int j = 0; j < visible; j++)
            {
                if (p[j] == 0) continue;
                int ko = ((b * s + j) * kvHeads + kh) * d;
                double ds = p[j] * (dp[j] - pdp);
                for (int t = 0; t < d; t++)
                {
                    dqAcc[t] += scale * ds * k[ko + t];
                    dkAcc[ko + t] += scale * ds * q[qo + t];
                    dvAcc[ko + t] += p[j] * dOut[qo + t];
                }
            }
            for (int t = 0; t < d; t++) dq[qo + t] = (float)dqAcc[t];
        }
        for (int i = 0; i < dk.Length; i++)
        {
            dk[i] = (float)dkAcc[i];
            dv[i] = (float)dvAcc[i];
        }
    }

    private static bool Sees(ReadOnlySpan<int> keyMask, ReadOnlySpan<int> segmentIds, int row, int position, int j) =>
        (keyMask.IsEmpty || keyMask[row + j] != 0) && (segmentIds.IsEmpty || segmentIds[row + j] == segmentIds[row + position]);
}
