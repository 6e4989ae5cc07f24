// One decode step's attention for the query heads that share a kv head: q rows [nr, D] (contiguous, the
// group), keys and values [cols, D] at row stride ldkv (the keys the step may see, from the first of its
// segment on), scores scratch [nr, cols], output rows [nr, D]. With AVX-512 and D % 16 == 0, for
// Attention.Forward's Tq = 1 units in place of its GEMM blocks: a single query row per head makes packing
// K^T cost more than the product, so the scores are plain SIMD dot products (each key row loaded once for
// the group) and O = P V is summed key by key in registers, 64 columns of D at a time. The softmax between
// them is Attention's: the caller scales and masks the scores and keeps lse.
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

internal static unsafe class AttentionDecode
{
    /// <summary>s[r, j] = q_r . k_j for r &lt; nr, j &lt; cols.</summary>
    public static void Scores(float* q, int nr, float* k, int ldkv, int cols, int d, float* s)
    {
        for (int j = 0; j < cols; j++)
        {
            float* kj = k + (long)j * ldkv;
            for (int r = 0; r < nr; r++)
            {
                float* qr = q + (long)r * d;
                var acc = Vector512.Multiply(Vector512.Load(kj), Vector512.Load(qr));
                for (int c = 16; c < d; c += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(kj + c), Vector512.Load(qr + c), acc);
                s[(long)r * cols + j] = Vector512.Sum(acc);
            }
        }
    }

    /// <summary>o_r = inv_r * sum_j p[r, j] v_j for r &lt; nr (o overwritten).</summary>
    public static void Values(float* p, int nr, float* v, int ldkv, int cols, int d, ReadOnlySpan<float> inv, float* o)
    {
        for (int r = 0; r < nr; r++)
        {
            float* pr = p + (long)r * cols, or = o + (long)r * d;
            for (int c = 0; c < d; c += 64)
            {
                int w = Math.Min(64, d - c);
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                float* vc = v + c;
                for (int j = 0; j < cols; j++, vc += ldkv)
                {
                    var pj = Vector512.Create(pr[j]);
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Load(vc), pj, a0);
                    if (w > 16) a1 = Vector512.FusedMultiplyAdd(Vector512.Load(vc + 16), pj, a1);
                    if (w > 32) a2 = Vector512.FusedMultiplyAdd(Vector512.Load(vc + 32), pj, a2);
                    if (w > 48) a3 = Vector512.FusedMultiplyAdd(Vector512.Load(vc + 48), pj, a3);
                }
                var scale = Vector512.Create(inv[r]);
                (a0 * scale).Store(or + c);
                if (w > 16) (a1 * scale).Store(or + c + 16);
                if (w > 32) (a2 * scale).Store(or + c + 32);
                if (w > 48) (a3 * scale).Store(or + c + 48);
            }
        }
    }
}
