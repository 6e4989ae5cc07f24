// One decode step's attention products for a sequence's query heads: q rows [nr, D] (contiguous; the first
// is head h0), key and value rows [cols, Hkv * D] at row stride ldkv, head h reading kv head h / group
// (columns from (h / group) * D), scores scratch [nr, cols], output rows [nr, D]. With AVX-512 and
// D % 16 == 0, for Attention.Forward's Tq = 1 units (every head of a sequence) in place of its GEMM blocks:
// a single query row per head makes packing K^T cost more than the product. Both passes walk the keys in
// order and read each key (value) row whole for all heads: the rows come from memory (the weights streamed
// since evicted them), and one contiguous stream reads them faster than a pass per kv head over every
// third 256-byte piece. The scores are plain SIMD dot products; O = P V is summed key by key, 64 columns
// of D at a time, in registers over blocks of 16 keys and in the output row between blocks (the same
// sums in the same order). The softmax between the passes is Attention's: the caller scales and masks
// the scores and keeps lse.
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

internal static unsafe class AttentionDecode
{
    private const int KeyBlock = 16;

    /// <summary>s[r, j] = q_r . k_j[kv head of h0 + r] for r &lt; nr, j &lt; cols.</summary>
    public static void Scores(float* q, int h0, int nr, int group, float* k, int ldkv, int cols, int d, float* s)
    {
        for (int j = 0; j < cols; j++)
        {
            float* kj = k + (long)j * ldkv;
            for (int r = 0; r < nr; r++)
            {
                float* qr = q + (long)r * d, kr = kj + (h0 + r) / group * d;
                var acc = Vector512.Multiply(Vector512.Load(kr), Vector512.Load(qr));
                for (int c = 16; c < d; c += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(kr + c), Vector512.Load(qr + c), acc);
                s[(long)r * cols + j] = Vector512.Sum(acc);
            }
        }
    }

    /// <summary>o_r = inv_r * sum_j p[r, j] v_j[kv head of h0 + r] for r &lt; nr; o holds zeros on entry (Attention's Block clears it).</summary>
    public static void Values(float* p, int h0, int nr, int group, float* v, int ldkv, int cols, int d, ReadOnlySpan<float> inv, float* o)
    {
        for (int j0 = 0; j0 < cols; j0 += KeyBlock)
        {
            int j1 = Math.Min(cols, j0 + KeyBlock);
            for (int r = 0; r < nr; r++)
            {
                float* pr = p + (long)r * cols, or = o + (long)r * d, vr = v + (long)j0 * ldkv + (h0 + r) / group * d;
                for (int c = 0; c < d; c += 64)
                {
                    int w = Math.Min(64, d - c);
                    Vector512<float> a0 = Vector512.Load(or + c), a1 = default, a2 = default, a3 = default;
                    if (w > 16) a1 = Vector512.Load(or + c + 16);
                    if (w > 32) a2 = Vector512.Load(or + c + 32);
                    if (w > 48) a3 = Vector512.Load(or + c + 48);
                    float* vc = vr + c;
                    for (int j = j0; j < j1; j++, vc += ldkv)
                    {
                        var pj = Vector512.Create(pr[j]);
                        a0 = Vector512.FusedMultiplyAdd(Vector512.Load(vc), pj, a0);
                        if (w > 16) a1 = Vector512.FusedMultiplyAdd(Vector512.Load(vc + 16), pj, a1);
                        if (w > 32) a2 = Vector512.FusedMultiplyAdd(Vector512.Load(vc + 32), pj, a2);
                        if (w > 48) a3 = Vector512.FusedMultiplyAdd(Vector512.Load(vc + 48), pj, a3);
                    }
                    a0.Store(or + c);
                    if (w > 16) a1.Store(or + c + 16);
                    if (w > 32) a2.Store(or + c + 32);
                    if (w > 48) a3.Store(or + c + 48);
                }
            }
        }
        for (int r = 0; r < nr; r++)
        {
            var scale = Vector512.Create(inv[r]);
            float* or = o + (long)r * d;
            for (int c = 0; c < d; c += 16) (Vector512.Load(or + c) * scale).Store(or + c);
        }
    }
}
