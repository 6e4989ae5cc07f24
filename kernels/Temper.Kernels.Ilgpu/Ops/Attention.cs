// Causal GQA attention. q[B,Tq,H,D], k/v[B,S,Hkv,D] (the first KvLength rows used), out[B,Tq,H,D],
// lse[B,H,Tq]. Query i of batch b sits at position QueryOffset + i and sees key j when j <= that
// position, j < KvLength, mask[b,j] != 0 (no mask admits all) and, for packed rows, segment[b,j] ==
// segment[b,position]; head h reads kv head h / (H/Hkv). The key mask and the segment ids travel in
// one int buffer: [mask B*KvLength (when present) | segments B*KvLength (when present)].
// Forward: one thread per query row (b,i,h): a pass for the max score, then a pass accumulating
// exp(s - max) v into out (in place, normalised at the end); f32 throughout. A query that sees no
// key gets zeros and lse = -inf.
// Backward (dq, dk, dv overwritten):
//   per query row: lse, delta = sum_j p_j (dO.v_j), dq = scale sum_j p_j (dO.v_j - delta) k_j;
//   per key row (b,j,kh): over the group's heads and the queries that see j,
//     dk_j = scale sum p (dO.v_j - delta) q,  dv_j = sum p dO   (p = exp(scale q.k_j - lse)).
// lse and delta live in the arena, so no two threads ever write one element.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal struct AttentionDims
{
    public int B, Tq, H, S, Hkv, D, KvLength, QueryOffset, HasMask, HasLse, HasSegments, SegmentBase;
    public float Scale;
}

internal static class Attention
{
    // mask holds the key mask and then the segment ids (see the header); p is the query's position.
    private static bool Visible(ArrayView<int> mask, AttentionDims a, int b, int p, int j) =>
        (a.HasMask == 0 || mask[b * a.KvLength + j] != 0)
        && (a.HasSegments == 0 || mask[a.SegmentBase + b * a.KvLength + j] == mask[a.SegmentBase + b * a.KvLength + p]);

    private static float Dot(ArrayView<float> x, int xo, ArrayView<float> y, int yo, int d)
    {
        float s = 0;
        for (int t = 0; t < d; t++) s += x[xo + t] * y[yo + t];
        return s;
    }

    public static void ForwardKernel(Index1D index, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> output, ArrayView<float> lse, ArrayView<int> mask, AttentionDims a)
    {
        int h = index % a.H, bi = index / a.H, i = bi % a.Tq, b = bi / a.Tq;
        int kh = h / (a.H / a.Hkv), d = a.D, qo = index * d, stride = a.Hkv * d, kBase = (b * a.S * a.Hkv + kh) * d;
        int visible = IntrinsicMath.Min(a.KvLength, a.QueryOffset + i + 1);
        float max = float.NegativeInfinity;
        for (int j = 0; j < visible; j++)
            if (Visible(mask, a, b, a.QueryOffset + i, j)) max = IntrinsicMath.Max(max, a.Scale * Dot(q, qo, k, kBase + j * stride, d));
        for (int t = 0; t < d; t++) output[qo + t] = 0;
        int lo = (b * a.H + h) * a.Tq + i;
        if (max == float.NegativeInfinity)
        {
            if (a.HasLse != 0) lse[lo] = float.NegativeInfinity;
            return;
        }
        float sum = 0;
        for (int j = 0; j < visible; j++)
        {
            if (!Visible(mask, a, b, a.QueryOffset + i, j)) continue;
            float p = MathF.Exp(a.Scale * Dot(q, qo, k, kBase + j * stride, d) - max);
            sum += p;
            int vo = kBase + j * stride;
            for (int t = 0; t < d; t++) output[qo + t] += p * v[vo + t];
        }
        float inv = 1f / sum;
        for (int t = 0; t < d; t++) output[qo + t] *= inv;
        if (a.HasLse != 0) lse[lo] = max + MathF.Log(sum);
    }

    public static void BackwardQueryKernel(Index1D index, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dOut, ArrayView<float> dq,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> mask, AttentionDims a)
    {
        int h = index % a.H, bi = index / a.H, i = bi % a.Tq, b = bi / a.Tq;
        int kh = h / (a.H / a.Hkv), d = a.D, qo = index * d, stride = a.Hkv * d, kBase = (b * a.S * a.Hkv + kh) * d;
        int visible = IntrinsicMath.Min(a.KvLength, a.QueryOffset + i + 1);
        int lo = (b * a.H + h) * a.Tq + i;
        for (int t = 0; t < d; t++) dq[qo + t] = 0;
        float max = float.NegativeInfinity;
        for (int j = 0; j < visible; j++)
            if (Visible(mask, a, b, a.QueryOffset + i, j)) max = IntrinsicMath.Max(max, a.Scale * Dot(q, qo, k, kBase + j * stride, d));
        if (max == float.NegativeInfinity)
        {
            lse[lo] = float.NegativeInfinity;
            delta[lo] = 0;
            return;
        }
        float sum = 0, sumDp = 0;
        for (int j = 0; j < visible; j++)
        {
            if (!Visible(mask, a, b, a.QueryOffset + i, j)) continue;
            float e = MathF.Exp(a.Scale * Dot(q, qo, k, kBase + j * stride, d) - max);
            sum += e;
            sumDp += e * Dot(dOut, qo, v, kBase + j * stride, d);
        }
        float l = max + MathF.Log(sum), dl = sumDp / sum;
        lse[lo] = l;
        delta[lo] = dl;
        for (int j = 0; j < visible; j++)
        {
            if (!Visible(mask, a, b, a.QueryOffset + i, j)) continue;
            int ko = kBase + j * stride;
            float p = MathF.Exp(a.Scale * Dot(q, qo, k, ko, d) - l);
            float ds = a.Scale * p * (Dot(dOut, qo, v, ko, d) - dl);
            for (int t = 0; t < d; t++) dq[qo + t] += ds * k[ko + t];
        }
    }

    public static void BackwardKeyKernel(Index1D index, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dOut, ArrayView<float> dk, ArrayView<float> dv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> mask, AttentionDims a)
    {
        // index = (b * S + j) * Hkv + kh: the layout of k itself.
        int kh = index % a.Hkv, bj = index / a.Hkv, j = bj % a.S, b = bj / a.S;
        int d = a.D, ko = index * d, group = a.H / a.Hkv;
        for (int t = 0; t < d; t++)
        {
            dk[ko + t] = 0;
            dv[ko + t] = 0;
        }
        if (j >= a.KvLength || (a.HasMask != 0 && mask[b * a.KvLength + j] == 0)) return;
        int i0 = IntrinsicMath.Max(0, j - a.QueryOffset);
        for (int g = 0; g < group; g++)
        {
            int h = kh * group + g;
            for (int i = i0; i < a.Tq; i++)
            {
                if (!Visible(mask, a, b, a.QueryOffset + i, j)) continue;
                int qo = ((b * a.Tq + i) * a.H + h) * d, lo = (b * a.H + h) * a.Tq + i;
                float p = MathF.Exp(a.Scale * Dot(q, qo, k, ko, d) - lse[lo]);
                float ds = a.Scale * p * (Dot(dOut, qo, v, ko, d) - delta[lo]);
                for (int t = 0; t < d; t++)
                {
                    dk[ko + t] += ds * q[qo + t];
                    dv[ko + t] += p * dOut[qo + t];
                }
            }
        }
    }

    // One device buffer [mask | segments] (either part may be absent), and the dims that say so.
    private static ArrayView<int> UploadMasks(DeviceContext dc, ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, ref AttentionDims a)
    {
        a.HasMask = mask.IsEmpty ? 0 : 1;
        a.HasSegments = segments.IsEmpty ? 0 : 1;
        a.SegmentBase = mask.Length;
        if (segments.IsEmpty) return dc.Arena.Upload(mask);
        if (mask.IsEmpty) return dc.Arena.Upload(segments);
        var both = new int[mask.Length + segments.Length];
        mask.CopyTo(both);
        segments.CopyTo(both.AsSpan(mask.Length));
        return dc.Arena.Upload<int>(both);
    }

    public static void Forward(DeviceContext dc, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> output, ArrayView<float>? lse, ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, AttentionDims a)
    {
        a.HasLse = lse.HasValue ? 1 : 0;
        var dMask = UploadMasks(dc, mask, segments, ref a);
        int rows = a.B * a.Tq * a.H;
        if (rows == 0) return;
        dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>>("attention.fwd",
            acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(ForwardKernel))
            (rows, q, k, v, output, lse ?? output, dMask, a);
    }

    public static void Backward(DeviceContext dc, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dOut, ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv,
        ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, AttentionDims a)
    {
        var dMask = UploadMasks(dc, mask, segments, ref a);
        int rows = a.B * a.Tq * a.H;
        var lse = dc.Arena.Take<float>(rows);
        var delta = dc.Arena.Take<float>(rows);
        if (rows > 0)
            dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>>("attention.bwd.q",
                acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(BackwardQueryKernel))
                (rows, q, k, v, dOut, dq, lse, delta, dMask, a);
        int keyRows = a.B * a.S * a.Hkv;
        if (keyRows > 0)
            dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>>("attention.bwd.kv",
                acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(BackwardKeyKernel))
                (keyRows, q, k, v, dOut, dk, dv, lse, delta, dMask, a);
    }
}
