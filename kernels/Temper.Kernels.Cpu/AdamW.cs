// AdamW step in place over param, grad, m, v (all f32, same length), torch.optim.AdamW's single-tensor
// arithmetic: param *= 1 - lr wd; m = lerp(m, g, 1 - b1); v = v b2 + (1 - b2) g g;
// param += -(lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), scalars prepared in f64 as Python does.
// SIMD with the same separate multiplies and adds as the reference (no FMA), so it matches bit for bit.
using System.Runtime.Intrinsics;
using Temper.Core;

namespace Temper.Kernels.Cpu;

public static unsafe class AdamW
{
    public static void Step(Span<float> param, ReadOnlySpan<float> grad, Span<float> m, Span<float> v, in AdamWParams p)
    {
        if (grad.Length != param.Length || m.Length != param.Length || v.Length != param.Length)
            throw new ArgumentException($"AdamWStep: param has {param.Length} values, grad {grad.Length}, m {m.Length}, v {v.Length}");
        if (p.Step < 1) throw new ArgumentOutOfRangeException(nameof(p), $"AdamWStep: step {p.Step} must count from 1");
        var sc = AdamWScalars.Of(p);
        float decay = sc.Decay, w1 = sc.W1, w2 = sc.W2, b2 = sc.Beta2, eps = sc.Eps, stepSize = sc.StepSize, bc2Sqrt = sc.Bc2Sqrt;
        bool lerpFromM = Math.Abs(w1) < 0.5f;
        int n = param.Length, i = 0;
        fixed (float* pp = param) fixed (float* pg = grad) fixed (float* pm = m) fixed (float* pv = v)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                Vector512<float> vDecay = Vector512.Create(decay), vW1 = Vector512.Create(w1), vOneMinusW1 = Vector512.Create(1f - w1), vW2 = Vector512.Create(w2),
                    vB2 = Vector512.Create(b2), vEps = Vector512.Create(eps), vStep = Vector512.Create(-stepSize), vBc2 = Vector512.Create(bc2Sqrt);
                for (; i <= n - 16; i += 16)
                {
                    Vector512<float> g = Vector512.Load(pg + i), mi = Vector512.Load(pm + i);
                    var pr = Vector512.Load(pp + i) * vDecay;
                    mi = lerpFromM ? mi + vW1 * (g - mi) : g - (g - mi) * vOneMinusW1;
                    var vi = Vector512.Load(pv + i) * vB2 + vW2 * g * g;
                    var denom = Vector512.Sqrt(vi) / vBc2 + vEps;
                    (pr + vStep * (mi / denom)).Store(pp + i);
                    mi.Store(pm + i);
                    vi.Store(pv + i);
                }
            }
            if (Vector256.IsHardwareAccelerated)
            {
                Vector256<float> vDecay = Vector256.Create(decay), vW1 = Vector256.Create(w1), vOneMinusW1 = Vector256.Create(1f - w1), vW2 = Vector256.Create(w2),
                    vB2 = Vector256.Create(b2), vEps = Vector256.Create(eps), vStep = Vector256.Create(-stepSize), vBc2 = Vector256.Create(bc2Sqrt);
                for (; i <= n - 8; i += 8)
                {
                    Vector256<float> g = Vector256.Load(pg + i), mi = Vector256.Load(pm + i);
                    var pr = Vector256.Load(pp + i) * vDecay;
                    mi = lerpFromM ? mi + vW1 * (g - mi) : g - (g - mi) * vOneMinusW1;
                    var vi = Vector256.Load(pv + i) * vB2 + vW2 * g * g;
                    var denom = Vector256.Sqrt(vi) / vBc2 + vEps;
                    (pr + vStep * (mi / denom)).Store(pp + i);
                    mi.Store(pm + i);
                    vi.Store(pv + i);
                }
            }
            for (; i < n; i++)
            {
                float g = pg[i];
                pp[i] *= decay;
                pm[i] = lerpFromM ? pm[i] + w1 * (g - pm[i]) : g - (g - pm[i]) * (1f - w1);
                pv[i] = pv[i] * b2 + w2 * g * g;
                float denom = MathF.Sqrt(pv[i]) / bc2Sqrt + eps;
                pp[i] += -stepSize * (pm[i] / denom);
            }
        }
    }
}
