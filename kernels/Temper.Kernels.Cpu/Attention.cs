// Causal GQA attention forward. q[B,Tq,H,D], k/v[B,S,Hkv,D] (the first kvLength rows used),
// output[B,Tq,H,D], lse[B,H,Tq] (optional). Query i of batch b sits at position queryOffset + i and sees
// key j when j <= that position, j < kvLength and keyMask[b,j] != 0 (an empty mask admits all); head h
// reads kv head h / (H / Hkv). Per query: scores = scale * q.k (SIMD dots), softmax in f32 with the max
// subtracted (SIMD exp), out = (sum_j p_j v_j) / sum_j p_j, lse = max + log(sum). A query that sees no
// key gets zeros and lse = -inf. (batch, head) pairs are split across threads.
// Backward (dq, dk, dv overwritten): p_j = exp(s_j - lse), dp_j = dOut.v_j, ds_j = p_j (dp_j - sum p dp),
// dq = scale sum ds_j k_j, dk_j += scale ds_j q, dv_j += p_j dOut; (batch, kv head) pairs are split
// across threads so that each dk/dv row is summed by one thread in a fixed (head, query) order.
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

public static unsafe class Attention
{
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> output, Span<float> lse,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, ReadOnlySpan<int> keyMask, int threads = 1)
    {
        if (batch < 0 || tq < 0 || heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || d <= 0 || kvLength < 0 || kvLength > s || queryOffset < 0
            || q.Length != (long)batch * tq * heads * d || k.Length != (long)batch * s * kvHeads * d || v.Length != k.Length
            || output.Length != q.Length || (!lse.IsEmpty && lse.Length != (long)batch * heads * tq)
            || (!keyMask.IsEmpty && keyMask.Length != (long)batch * kvLength))
            throw new ArgumentException($"Attention: q {q.Length}, k {k.Length}, v {v.Length}, output {output.Length}, lse {lse.Length}, mask {keyMask.Length} values " +
                $"do not fit B{batch} Tq{tq} H{heads} S{s} Hkv{kvHeads} D{d} kvLength {kvLength} offset {queryOffset}");
        int pairs = batch * heads, group = heads / kvHeads;
        fixed (float* pq0 = q) fixed (float* pk0 = k) fixed (float* pv0 = v) fixed (float* po0 = output) fixed (float* pl0 = lse) fixed (int* pm0 = keyMask)
        {
            nint pq = (nint)pq0, pk = (nint)pk0, pv = (nint)pv0, po = (nint)po0, pl = (nint)pl0, pm = (nint)pm0;
            long work = (long)pairs * tq * Math.Max(1, Math.Min(kvLength, queryOffset + tq)) * d;
            StaticPartition.For(pairs, StaticPartition.Parts(threads, pairs, work, 1 << 16), (p0, p1) =>
            {
                var scores = new float[Math.Max(1, kvLength)];
                fixed (float* sc = scores)
                {
                    for (int p = p0; p < p1; p++)
                    {
                        int b = p / heads, h = p % heads, kh = h / group;
                        float* kBase = (float*)pk + ((long)b * s * kvHeads + kh) * d;
                        float* vBase = (float*)pv + ((long)b * s * kvHeads + kh) * d;
                        int* mask = pm == 0 ? null : (int*)pm + (long)b * kvLength;
                        for (int i = 0; i < tq; i++)
                        {
                            long qo = (((long)b * tq + i) * heads + h) * d;
                            float l = Query((float*)pq + qo, kBase, vBase, kvHeads * d, mask, Math.Min(kvLength, queryOffset + i + 1), d, scale, sc, (float*)po + qo);
                            if (pl != 0) ((float*)pl)[((long)b * heads + h) * tq + i] = l;
                        }
                    }
                }
            });
        }
    }

    /// <summary>Backward of <see cref="Forward"/>; lse is the forward's (or empty: recomputed).</summary>
    public static void Backward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> lse, ReadOnlySpan<float> dOut,
        Span<float> dq, Span<float> dk, Span<float> dv,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, ReadOnlySpan<int> keyMask, int threads = 1)
    {
        if (batch < 0 || tq < 0 || heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || d <= 0 || kvLength < 0 || kvLength > s || queryOffset < 0
            || q.Length != (long)batch * tq * heads * d || k.Length != (long)batch * s * kvHeads * d || v.Length != k.Length
            || dOut.Length != q.Length || dq.Length != q.Length || dk.Length != k.Length || dv.Length != k.Length
            || (!lse.IsEmpty && lse.Length != (long)batch * heads * tq) || (!keyMask.IsEmpty && keyMask.Length != (long)batch * kvLength))
            throw new ArgumentException($"Attention backward: q {q.Length}, k {k.Length}, v {v.Length}, dOut {dOut.Length}, dq {dq.Length}, dk {dk.Length}, dv {dv.Length}, lse {lse.Length}, mask {keyMask.Length} values " +
                $"do not fit B{batch} Tq{tq} H{heads} S{s} Hkv{kvHeads} D{d} kvLength {kvLength} offset {queryOffset}");
        int pairs = batch * kvHeads, group = heads / kvHeads;
        fixed (float* pq0 = q) fixed (float* pk0 = k) fixed (float* pv0 = v) fixed (float* pl0 = lse) fixed (float* pdo0 = dOut)
        fixed (float* pdq0 = dq) fixed (float* pdk0 = dk) fixed (float* pdv0 = dv) fixed (int* pm0 = keyMask)
        {
            nint pq = (nint)pq0, pk = (nint)pk0, pv = (nint)pv0, pl = (nint)pl0, pdo = (nint)pdo0, pdq = (nint)pdq0, pdk = (nint)pdk0, pdv = (nint)pdv0, pm = (nint)pm0;
            long work = (long)batch * heads * tq * Math.Max(1, Math.Min(kvLength, queryOffset + tq)) * d;
            StaticPartition.For(pairs, StaticPartition.Parts(threads, pairs, work, 1 << 16), (p0, p1) =>
            {
                var scores = new float[Math.Max(1, kvLength)];
                var dps = new float[Math.Max(1, kvLength)];
                fixed (float* sc = scores) fixed (float* dp = dps)
                {
                    for (int p = p0; p < p1; p++)
                    {
                        int b = p / kvHeads, kh = p % kvHeads;
                        int stride = kvHeads * d;
                        long kvOff = ((long)b * s * kvHeads + kh) * d;
                        float* kBase = (float*)pk + kvOff, vBase = (float*)pv + kvOff, dkBase = (float*)pdk + kvOff, dvBase = (float*)pdv + kvOff;
                        for (int j = 0; j < s; j++)
                        {
                            new Span<float>(dkBase + (long)j * stride, d).Clear();
                            new Span<float>(dvBase + (long)j * stride, d).Clear();
                        }
                        int* mask = pm == 0 ? null : (int*)pm + (long)b * kvLength;
                        for (int h = kh * group; h < (kh + 1) * group; h++)
                        for (int i = 0; i < tq; i++)
                        {
                            long qo = (((long)b * tq + i) * heads + h) * d;
                            float* qr = (float*)pq + qo, dor = (float*)pdo + qo, dqr = (float*)pdq + qo;
                            new Span<float>(dqr, d).Clear();
                            int visible = Math.Min(kvLength, queryOffset + i + 1);
                            float max = float.NegativeInfinity;
                            for (int j = 0; j < visible; j++)
                            {
                                if (mask != null && mask[j] == 0)
                                {
                                    sc[j] = float.NegativeInfinity;
                                    continue;
                                }
                                sc[j] = scale * Reductions.Dot(qr, kBase + (long)j * stride, d);
                                max = MathF.Max(max, sc[j]);
                            }
                            if (float.IsNegativeInfinity(max)) continue;
                            float l = pl != 0 ? ((float*)pl)[((long)b * heads + h) * tq + i] : max + MathF.Log(Reductions.SumExpShifted(sc, visible, max));
                            Reductions.ExpShiftedInPlace(sc, visible, l);
                            float pdp = 0;
                            for (int j = 0; j < visible; j++)
                            {
                                dp[j] = sc[j] == 0 ? 0 : Reductions.Dot(dor, vBase + (long)j * stride, d);
                                pdp += sc[j] * dp[j];
                            }
                            for (int j = 0; j < visible; j++)
                            {
                                if (sc[j] == 0) continue;
                                float ds = scale * sc[j] * (dp[j] - pdp);
                                Axpy(dqr, ds, kBase + (long)j * stride, d);
                                Axpy(dkBase + (long)j * stride, ds, qr, d);
                                Axpy(dvBase + (long)j * stride, sc[j], dor, d);
                            }
                        }
                    }
                }
            });
        }
    }

    // One query row against keys [0, visible): writes out[D], returns the log-sum-exp.
    private static float Query(float* q, float* k, float* v, int stride, int* mask, int visible, int d, float scale, float* sc, float* o)
    {
        float max = float.NegativeInfinity;
        for (int j = 0; j < visible; j++)
        {
            if (mask != null && mask[j] == 0)
            {
                sc[j] = float.NegativeInfinity;
                continue;
            }
            sc[j] = scale * Reductions.Dot(q, k + (long)j * stride, d);
            max = MathF.Max(max, sc[j]);
        }
        new Span<float>(o, d).Clear();
        if (float.IsNegativeInfinity(max)) return float.NegativeInfinity;
        float sum = Reductions.ExpShiftedInPlace(sc, visible, max);
        for (int j = 0; j < visible; j++)
            if (sc[j] != 0) Axpy(o, sc[j], v + (long)j * stride, d);
        Scale(o, 1f / sum, d);
        return max + MathF.Log(sum);
    }

    // y[0..n) += a x[0..n)
    private static void Axpy(float* y, float a, float* x, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var av = Vector512.Create(a);
            for (; i <= n - 16; i += 16) Vector512.FusedMultiplyAdd(av, Vector512.Load(x + i), Vector512.Load(y + i)).Store(y + i);
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var av = Vector256.Create(a);
            for (; i <= n - 8; i += 8) Vector256.FusedMultiplyAdd(av, Vector256.Load(x + i), Vector256.Load(y + i)).Store(y + i);
        }
        for (; i < n; i++) y[i] = MathF.FusedMultiplyAdd(a, x[i], y[i]);
    }

    private static void Scale(float* y, float a, int n)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var av = Vector512.Create(a);
            for (; i <= n - 16; i += 16) (Vector512.Load(y + i) * av).Store(y + i);
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var av = Vector256.Create(a);
            for (; i <= n - 8; i += 8) (Vector256.Load(y + i) * av).Store(y + i);
        }
        for (; i < n; i++) y[i] *= a;
    }
}
