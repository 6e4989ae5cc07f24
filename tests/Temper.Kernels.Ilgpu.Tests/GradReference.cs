// Scalar f64 references for the backward ops, kept in the test project (the CPU backend's own
// references arrive with its backward ops on another branch; where CpuBackend implements an op the
// op checks compare with it as well). Each is checked against finite differences of the forward
// references in ReferenceGradientChecks, so the oracle is itself tested.
using Temper.Core;

namespace Temper.Kernels.Ilgpu.Tests;

public static class GradReference
{
    /// <summary>dTable[ids[n]] += dOut[n].</summary>
    public static void Embedding(ReadOnlySpan<float> dOut, ReadOnlySpan<int> ids, Span<float> dTable, int c)
    {
        for (int n = 0; n < ids.Length; n++)
            for (int j = 0; j < c; j++) dTable[ids[n] * c + j] += dOut[n * c + j];
    }

    /// <summary>dx = rstd (dy w - xhat mean(dy w xhat)); dWeight += sum_n dy xhat.</summary>
    public static void RmsNorm(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> rstd, Span<float> dx, Span<float> dWeight, int c)
    {
        int rows = x.Length / c;
        var dw = new double[c];
        for (int n = 0; n < rows; n++)
        {
            double r = rstd[n], dot = 0;
            for (int j = 0; j < c; j++)
            {
                double xhat = x[n * c + j] * r;
                dot += dy[n * c + j] * (double)weight[j] * xhat;
                dw[j] += dy[n * c + j] * xhat;
            }
            double mean = dot / c;
            for (int j = 0; j < c; j++) dx[n * c + j] = (float)(r * (dy[n * c + j] * (double)weight[j] - x[n * c + j] * r * mean));
        }
        if (!dWeight.IsEmpty)
            for (int j = 0; j < c; j++) dWeight[j] += (float)dw[j];
    }

    /// <summary>dx = dy w (or +=), dw += dy^T x, dBias += sum dy.</summary>
    public static void Linear(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> w, Span<float> dx, Span<float> dw, Span<float> dBias, int n, int k, int m, bool accumulateDx)
    {
        if (!dx.IsEmpty)
            for (int i = 0; i < n; i++)
                for (int q = 0; q < k; q++)
                {
                    double s = accumulateDx ? dx[i * k + q] : 0;
                    for (int j = 0; j < m; j++) s += (double)dy[i * m + j] * w[j * k + q];
                    dx[i * k + q] = (float)s;
                }
        if (!dw.IsEmpty)
            for (int j = 0; j < m; j++)
                for (int q = 0; q < k; q++)
                {
                    double s = dw[j * k + q];
                    for (int i = 0; i < n; i++) s += (double)dy[i * m + j] * x[i * k + q];
                    dw[j * k + q] = (float)s;
                }
        if (!dBias.IsEmpty)
            for (int j = 0; j < m; j++)
            {
                double s = dBias[j];
                for (int i = 0; i < n; i++) s += dy[i * m + j];
                dBias[j] = (float)s;
            }
    }

    /// <summary>dxa = scale dy B; dB += scale dy^T xa; dA += dxa^T x; dx += dxa A.</summary>
    public static void LoraLinear(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> xa, ReadOnlySpan<float> a, ReadOnlySpan<float> b, float scale,
        Span<float> dx, Span<float> dA, Span<float> dB, int n, int k, int m, int r)
    {
        var dxa = new double[n * r];
        for (int i = 0; i < n; i++)
            for (int t = 0; t < r; t++)
            {
                double s = 0;
                for (int j = 0; j < m; j++) s += (double)dy[i * m + j] * b[j * r + t];
                dxa[i * r + t] = scale * s;
            }
        if (!dB.IsEmpty)
            for (int j = 0; j < m; j++)
                for (int t = 0; t < r; t++)
                {
                    double s = 0;
                    for (int i = 0; i < n; i++) s += (double)dy[i * m + j] * xa[i * r + t];
                    dB[j * r + t] += (float)(scale * s);
                }
        if (!dA.IsEmpty)
            for (int t = 0; t < r; t++)
                for (int q = 0; q < k; q++)
                {
                    double s = 0;
                    for (int i = 0; i < n; i++) s += dxa[i * r + t] * x[i * k + q];
                    dA[t * k + q] += (float)s;
                }
        if (!dx.IsEmpty)
            for (int i = 0; i < n; i++)
                for (int q = 0; q < k; q++)
                {
                    double s = dx[i * k + q];
                    for (int t = 0; t < r; t++) s += dxa[i * r + t] * a[t * k + q];
                    dx[i * k + q] = (float)s;
                }
    }

    /// <summary>Attention backward (dq, dk, dv overwritten), recomputing the softmax in f64.</summary>
    public static void Attention(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> dOut, Span<float> dq, Span<float> dk, Span<float> dv,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, ReadOnlySpan<int> keyMask)
    {
        int group = heads / kvHeads;
        var dkAcc = new double[dk.Length];
        var dvAcc = new double[dv.Length];
        var p = new double[Math.Max(1, kvLength)];
        for (int b = 0; b < batch; b++)
        for (int i = 0; i < tq; i++)
        for (int h = 0; h < heads; h++)
        {
            int kh = h / group, qo = ((b * tq + i) * heads + h) * d;
            int visible = Math.Min(kvLength, queryOffset + i + 1);
            double max = double.NegativeInfinity;
            for (int j = 0; j < visible; j++)
            {
                p[j] = double.NegativeInfinity;
                if (!keyMask.IsEmpty && keyMask[b * kvLength + j] == 0) continue;
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
            var dp = new double[visible];
            double pdp = 0;
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

    /// <summary>dUp = dy silu(g), dGate = dy up sig (1 + g (1 - sig)).</summary>
    public static void SwiGlu(ReadOnlySpan<float> dy, ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> dGate, Span<float> dUp)
    {
        for (int i = 0; i < dy.Length; i++)
        {
            double g = gate[i], sig = 1 / (1 + Math.Exp(-g));
            dUp[i] = (float)(dy[i] * g * sig);
            dGate[i] = (float)(dy[i] * (double)up[i] * sig * (1 + g * (1 - sig)));
        }
    }

    /// <summary>Full-logit LM head + cross-entropy in f64: losses, and dHidden/dLmHead += grads of lossScale sum(rowScales losses).</summary>
    public static void LmHeadCrossEntropy(ReadOnlySpan<float> hidden, ReadOnlySpan<float> lmHead, ReadOnlySpan<int> labels, Span<float> losses, float lossScale,
        Span<float> dHidden, Span<float> dLmHead, int n, int c, int v, ReadOnlySpan<float> rowScales = default)
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
            for (int j = 0; j < v; j++)
            {
                double g = lossScale * (rowScales.IsEmpty ? 1 : rowScales[i]) * (Math.Exp(logits[j] - lse) - (j == labels[i] ? 1 : 0));
                for (int t = 0; t < c; t++)
                {
                    if (!dHidden.IsEmpty) dHidden[i * c + t] += (float)(g * lmHead[j * c + t]);
                    if (!dLmHead.IsEmpty) dLmHead[j * c + t] += (float)(g * hidden[i * c + t]);
                }
            }
        }
    }

    /// <summary>torch.optim.AdamW's update (f64 scalars applied as f32).</summary>
    public static void AdamW(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v, in AdamWParams p)
    {
        float decay = (float)(1 - (double)p.Lr * p.WeightDecay);
        float w1 = (float)(1 - (double)p.Beta1), w2 = (float)(1 - (double)p.Beta2);
        float stepSize = (float)(p.Lr / (1 - Math.Pow(p.Beta1, p.Step)));
        float bc2Sqrt = (float)Math.Sqrt(1 - Math.Pow(p.Beta2, p.Step));
        for (int i = 0; i < param.Length; i++)
        {
            float g = grad[i];
            param[i] *= decay;
            m[i] = Math.Abs(w1) < 0.5f ? m[i] + w1 * (g - m[i]) : g - (g - m[i]) * (1f - w1);
            v[i] = v[i] * p.Beta2 + w2 * g * g;
            float denom = MathF.Sqrt(v[i]) / bc2Sqrt + p.Eps;
            param[i] += -stepSize * (m[i] / denom);
        }
    }
}
