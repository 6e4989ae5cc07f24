// AdamW step, the oracle: torch.optim.AdamW's single-tensor update in f32, step counted from 1:
//   param *= 1 - lr wd;  m = lerp(m, g, 1 - b1);  v = v b2 + (1 - b2) g g;
//   param += -(lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// with every scalar (1 - lr wd, 1 - b1, 1 - b2, the bias corrections) computed in f64, as Python does,
// and applied as an f32 scalar, as torch does for f32 tensors.
using Temper.Core;

namespace Temper.Kernels.Cpu.Reference;

public static class AdamWReference
{
    public static void Step(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v, in AdamWParams p)
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
