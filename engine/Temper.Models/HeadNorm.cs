// Qwen3's q_norm and k_norm: an RMSNorm over each head's D values of q [N, H*D] or k [N, Hkv*D],
// with one weight [D] shared by the heads, applied after the projection and before RoPE
// (transformers: self.q_norm(self.q_proj(x).view(..., H, D))). The backend's RMSNorm runs on the
// tensor viewed as [N*heads, D]; rstd, when kept for backward, is [N*heads].
using Temper.Core;

namespace Temper.Models;

public static class HeadNorm
{
    /// <summary>y = RMSNorm of each D-long head of x (weight [D]); x and y [N, heads*D]; rstd [N*heads] optional.</summary>
    public static void Forward(IBackend be, Tensor x, Tensor weight, float eps, Tensor y, Tensor? rstd = null)
    {
        int d = weight.Shape[0];
        be.RmsNorm(Heads(x, d), weight, eps, Heads(y, d), rstd);
    }

    /// <summary>Inference: a layer's head norms on its q [N, H*D] and k [N, Hkv*D] in place (nothing for a model without them).</summary>
    public static void Apply(IBackend be, LayerWeights w, float eps, Tensor q, Tensor k)
    {
        if (w.QNorm is { } qn) Forward(be, q, qn, eps, q);
        if (w.KNorm is { } kn) Forward(be, k, kn, eps, k);
    }

        /// <summary>dx (overwritten) and dWeight (+=, when given) from dy, the unnormed x and the rstd Forward kept.</summary>
    public static void Backward(IBackend be, Tensor dy, Tensor x, Tensor weight, Tensor rstd, Tensor dx, Tensor? dWeight)
    {
        int d = weight.Shape[0];
        be.RmsNormBackward(Heads(dy, d), Heads(x, d), weight, rstd, Heads(dx, d), dWeight);
    }

    private static Tensor Heads(Tensor t, int d)
    {
        if (t.Shape.Rank != 2 || t.Shape[1] % d != 0)
            throw new ArgumentException($"{t.Name}: {t.Shape} is not [N, heads*{d}]");
        return new Tensor(new Shape(t.Shape[0] * (t.Shape[1] / d), d), t.DType, t.Storage, t.Name);
    }
}
