// Causal GQA attention forward. q[B,Tq,H,D], k/v[B,S,Hkv,D] (the first kvLength rows used),
// output[B,Tq,H,D], lse[B,H,Tq] (optional). Query i of batch b sits at position queryOffset + i and sees
// key j when j <= that position, j < kvLength, keyMask[b,j] != 0 (an empty mask admits all) and, for
// packed rows, segmentIds[b,j] == segmentIds[b,position] (empty: one segment); head h reads kv head
// h / (H / Hkv). Blocks of up to 64 query rows go through the GEMM: S = Q K^T over the
// keys the block can see (for packed rows, from the first key of the block's segments on), scaled,
// masked (causal, padding, other segments), softmax per row in f32 with the max
// subtracted (SIMD exp), O = P V, divided by the row's sum; lse = max + log(sum). A query that sees no
// key gets zeros and lse = -inf. Units of work (a query head of a sequence, or for a decode step the
// query heads sharing a kv head) are split across threads.
// Backward (dq, dk, dv overwritten): p_j = exp(s_j - lse), dp_j = dOut.v_j, ds_j = p_j (dp_j - sum p dp),
// dq = scale sum ds_j k_j, dk_j += scale ds_j q, dv_j += p_j dOut, in the same 64-row blocks through the
// GEMM; (batch, kv head) pairs are split across threads so that each dk/dv row is summed by one thread in
// a fixed (head, block) order.
// On AVX-512 with D % 16 == 0 both go to FlashAttention.cs (register-tiled, no GEMM packing per block),
// except a decode step's forward (Tq = 1: one row per head, where packing K^T costs more than it saves),
// which stays here with its products done by AttentionDecode.cs; this file's GEMM route serves the other
// machines and head sizes.
using System.Buffers;

namespace Temper.Kernels.Cpu;

public static unsafe class Attention
{
    public static void Forward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, Span<float> output, Span<float> lse,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, ReadOnlySpan<int> keyMask, ReadOnlySpan<int> segmentIds = default, int threads = 1)
    {
        if (batch < 0 || tq < 0 || heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || d <= 0 || kvLength < 0 || kvLength > s || queryOffset < 0
            || q.Length != (long)batch * tq * heads * d || k.Length != (long)batch * s * kvHeads * d || v.Length != k.Length
            || output.Length != q.Length || (!lse.IsEmpty && lse.Length != (long)batch * heads * tq)
            || (!keyMask.IsEmpty && keyMask.Length != (long)batch * kvLength) || !SegmentsFit(segmentIds, batch, tq, kvLength, queryOffset))
            throw new ArgumentException($"Attention: q {q.Length}, k {k.Length}, v {v.Length}, output {output.Length}, lse {lse.Length}, mask {keyMask.Length}, segments {segmentIds.Length} values " +
                $"do not fit B{batch} Tq{tq} H{heads} S{s} Hkv{kvHeads} D{d} kvLength {kvLength} offset {queryOffset}");
        if (AttentionTiles.Supported(d) && tq > 1)
        {
            fixed (float* pq = q) fixed (float* pk = k) fixed (float* pv = v) fixed (float* po = output) fixed (float* pl = lse) fixed (int* pm = keyMask) fixed (int* ps = segmentIds)
                FlashAttention.Forward(pq, pk, pv, po, pl, pm, ps, batch, tq, heads, s, kvHeads, d, kvLength, queryOffset, scale, threads);
            return;
        }
        int group = heads / kvHeads;
        // A unit of work is one query head of one sequence (its Tq rows, at stride H*D), or for a decode
        // step (Tq = 1) the group of query heads sharing one kv head (contiguous rows of D), or with the
        // direct decode products (AttentionDecode.cs) every head of the sequence: each key and value row is
        // then read whole and in order, which beat splitting a sequence's kv heads between two threads
        // (SmolLM-135M shape, bf16, 2 threads: 1.9 -> 1.2 ms of attention a token at 128-384 keys, decode
        // 47-49 -> 68 tokens/s at ~1600). A batch of sequences still splits across threads.
        bool decode = tq == 1, direct = decode && AttentionTiles.Supported(d);
        int widest = Math.Max(1, Math.Min(kvLength, queryOffset + tq));
        long work = (long)batch * heads * tq * widest * d;
        int unitsPerSequence = direct ? 1 : kvHeads;
        int units = decode ? batch * unitsPerSequence : batch * heads, rows = decode ? heads / unitsPerSequence : tq;
        fixed (float* pq0 = q) fixed (float* pk0 = k) fixed (float* pv0 = v) fixed (float* po0 = output) fixed (float* pl0 = lse) fixed (int* pm0 = keyMask) fixed (int* ps0 = segmentIds)
        {
            nint pq = (nint)pq0, pk = (nint)pk0, pv = (nint)pv0, po = (nint)po0, pl = (nint)pl0, pm = (nint)pm0, ps = (nint)ps0;
            StaticPartition.For(units, StaticPartition.Parts(threads, units, work, 1 << 16), (u0, u1) =>
            {
                var scores = ArrayPool<float>.Shared.Rent(Math.Min(BlockRows, rows) * widest);
                try
                {
                    fixed (float* sc = scores)
                        for (int u = u0; u < u1; u++)
                        {
                            int b, h0, kh, ldq;
                            if (decode)
                            {
                                (b, kh) = (u / unitsPerSequence, u % unitsPerSequence);
                                (h0, ldq) = (kh * group, d);
                            }
                            else
                            {
                                (b, h0) = (u / heads, u % heads);
                                (kh, ldq) = (h0 / group, heads * d);
                            }
                            long qOff = ((long)b * tq * heads + h0) * d, kvOff = ((long)b * s * kvHeads + kh) * d;
                            var unit = new Unit((float*)pq + qOff, (float*)po + qOff, ldq, (float*)pk + kvOff, (float*)pv + kvOff, kvHeads * d,
                                pm == 0 ? null : (int*)pm + (long)b * kvLength, ps == 0 ? null : (int*)ps + (long)b * kvLength,
                                pl == 0 ? null : (float*)pl + ((long)b * heads + h0) * tq, decode ? tq : 1);
                            for (int r0 = 0; r0 < rows; r0 += BlockRows)
                                Block(unit, r0, Math.Min(BlockRows, rows - r0), decode, direct ? group : 0, d, kvLength, queryOffset, scale, sc);
                        }
                }
                finally { ArrayPool<float>.Shared.Return(scores); }
            });
        }
    }

    private const int BlockRows = 64;

    // One unit's pointers: query/output rows (stride ldq), its kv head's rows (stride ldkv), mask and
    // segment ids of its sequence, and lse entries (row r at lse[r * lseStride] for a decode group, lse[r]
    // for a head's queries).
    private readonly struct Unit(float* q, float* o, int ldq, float* k, float* v, int ldkv, int* mask, int* segments, float* lse, int lseStride)
    {
        public readonly float* Q = q, O = o, K = k, V = v, Lse = lse;
        public readonly int Ldq = ldq, Ldkv = ldkv, LseStride = lseStride;
        public readonly int* Mask = mask, Segments = segments;
    }

    private static bool SegmentsFit(ReadOnlySpan<int> segmentIds, int batch, int tq, int kvLength, int queryOffset) =>
        segmentIds.IsEmpty || (segmentIds.Length == (long)batch * kvLength && queryOffset + tq <= kvLength);

    // The first key any query at positions p0..p1 may see: 0, or with segment ids the first key of any of
    // their segments (keys before it belong to other examples of the packed row, so a block skips them).
    internal static int FirstKey(int* segments, int p0, int p1)
    {
        if (segments == null) return 0;
        int first = p0;
        for (int p = p0; p <= p1; p++)
        {
            if (p > p0 && segments[p] == segments[p - 1]) continue;
            for (int j = 0; j < first; j++)
                if (segments[j] == segments[p]) { first = j; break; }
        }
        return first;
    }

    // -inf on the scores of keys [lo, visible) (row[j - lo] is key j) that the query at `position` may not
    // see: masked out, or (packed rows) of another segment.
    internal static void MaskScores(float* row, int lo, int visible, int* mask, int* segments, int position)
    {
        if (mask != null)
            for (int j = lo; j < visible; j++)
                if (mask[j] == 0) row[j - lo] = float.NegativeInfinity;
        if (segments != null)
        {
            int own = segments[position];
            for (int j = lo; j < visible; j++)
                if (segments[j] != own) row[j - lo] = float.NegativeInfinity;
        }
    }

    // Rows [r0, r0+nr) of a unit: S = Q K^T over keys [lo, width), those the rows can see (GEMM), scaled
    // and masked, softmax per row, then O = P V (GEMM) scaled by 1/sum. directGroup > 0: a decode unit of
    // every head, row r reading kv head r / directGroup, its products done by AttentionDecode.
    private static void Block(in Unit u, int r0, int nr, bool decode, int directGroup, int d, int kvLength, int queryOffset, float scale, float* sc)
    {
        int p0 = queryOffset + (decode ? 0 : r0), p1 = queryOffset + (decode ? 0 : r0 + nr - 1);
        int width = Math.Min(kvLength, p1 + 1);
        float* o = u.O + (long)r0 * u.Ldq;
        for (int rr = 0; rr < nr; rr++) new Span<float>(o + (long)rr * u.Ldq, d).Clear();
        if (width <= 0)
        {
            for (int rr = 0; rr < nr; rr++)
                if (u.Lse != null) u.Lse[(long)(r0 + rr) * u.LseStride] = float.NegativeInfinity;
            return;
        }
        int lo = FirstKey(u.Segments, p0, p1), cols = width - lo;
        float* k = u.K + (long)lo * u.Ldkv, v = u.V + (long)lo * u.Ldkv;
        bool direct = directGroup > 0;
        if (direct) AttentionDecode.Scores(u.Q + (long)r0 * u.Ldq, r0, nr, directGroup, k, u.Ldkv, cols, d, sc);
        else
        {
            new Span<float>(sc, nr * cols).Clear();
            Gemm.MultiplyNT(u.Q + (long)r0 * u.Ldq, u.Ldq, k, u.Ldkv, sc, cols, nr, d, cols, threads: 1);
        }
        Span<float> inv = stackalloc float[nr];
        for (int rr = 0; rr < nr; rr++)
        {
            float* row = sc + (long)rr * cols;
            int position = queryOffset + (decode ? 0 : r0 + rr), visible = Math.Min(kvLength, position + 1);
            Scale.Apply(new Span<float>(row, visible - lo), scale);
            MaskScores(row, lo, visible, u.Mask, u.Segments, position);
            for (int j = visible; j < width; j++) row[j - lo] = float.NegativeInfinity;
            float max = Reductions.Max(row, cols), l = float.NegativeInfinity;
            if (float.IsNegativeInfinity(max))
            {
                new Span<float>(row, cols).Clear();
                inv[rr] = 0;
            }
            else
            {
                float sum = Reductions.ExpShiftedInPlace(row, cols, max);
                inv[rr] = 1f / sum;
                l = max + MathF.Log(sum);
            }
            if (u.Lse != null) u.Lse[(long)(r0 + rr) * u.LseStride] = l;
        }
        if (direct)
        {
            AttentionDecode.Values(sc, r0, nr, directGroup, v, u.Ldkv, cols, d, inv, o);
            return;
        }
        Gemm.MultiplyNN(sc, cols, v, u.Ldkv, o, u.Ldq, nr, cols, d, threads: 1);
        for (int rr = 0; rr < nr; rr++) Scale.Apply(new Span<float>(o + (long)rr * u.Ldq, d), inv[rr]);
    }

    /// <summary>Backward of <see cref="Forward"/>; lse is the forward's (or empty: recomputed).</summary>
    public static void Backward(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> lse, ReadOnlySpan<float> dOut,
        Span<float> dq, Span<float> dk, Span<float> dv,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, ReadOnlySpan<int> keyMask, ReadOnlySpan<int> segmentIds = default, int threads = 1)
    {
        if (batch < 0 || tq < 0 || heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0 || d <= 0 || kvLength < 0 || kvLength > s || queryOffset < 0
            || q.Length != (long)batch * tq * heads * d || k.Length != (long)batch * s * kvHeads * d || v.Length != k.Length
            || dOut.Length != q.Length || dq.Length != q.Length || dk.Length != k.Length || dv.Length != k.Length
            || (!lse.IsEmpty && lse.Length != (long)batch * heads * tq) || (!keyMask.IsEmpty && keyMask.Length != (long)batch * kvLength)
            || !SegmentsFit(segmentIds, batch, tq, kvLength, queryOffset))
            throw new ArgumentException($"Attention backward: q {q.Length}, k {k.Length}, v {v.Length}, dOut {dOut.Length}, dq {dq.Length}, dk {dk.Length}, dv {dv.Length}, lse {lse.Length}, mask {keyMask.Length}, segments {segmentIds.Length} values " +
                $"do not fit B{batch} Tq{tq} H{heads} S{s} Hkv{kvHeads} D{d} kvLength {kvLength} offset {queryOffset}");
        if (AttentionTiles.Supported(d))
        {
            fixed (float* pq = q) fixed (float* pk = k) fixed (float* pv = v) fixed (float* pl = lse) fixed (float* pdo = dOut)
            fixed (float* pdq = dq) fixed (float* pdk = dk) fixed (float* pdv = dv) fixed (int* pm = keyMask) fixed (int* ps = segmentIds)
                FlashAttention.Backward(pq, pk, pv, pl, pdo, pdq, pdk, pdv, pm, ps, batch, tq, heads, s, kvHeads, d, kvLength, queryOffset, scale, threads);
            return;
        }
        int group = heads / kvHeads, units = batch * kvHeads;
        int widest = Math.Max(1, Math.Min(kvLength, queryOffset + tq));
        fixed (float* pq0 = q) fixed (float* pk0 = k) fixed (float* pv0 = v) fixed (float* pl0 = lse) fixed (float* pdo0 = dOut)
        fixed (float* pdq0 = dq) fixed (float* pdk0 = dk) fixed (float* pdv0 = dv) fixed (int* pm0 = keyMask) fixed (int* ps0 = segmentIds)
        {
            nint pq = (nint)pq0, pk = (nint)pk0, pv = (nint)pv0, pl = (nint)pl0, pdo = (nint)pdo0, pdq = (nint)pdq0, pdk = (nint)pdk0, pdv = (nint)pdv0, pm = (nint)pm0, ps = (nint)ps0;
            long work = (long)batch * heads * tq * widest * d;
            StaticPartition.For(units, StaticPartition.Parts(threads, units, work, 1 << 16), (u0, u1) =>
            {
                var pBuf = new float[Math.Min(BlockRows, tq) * widest];
                var dsBuf = new float[Math.Min(BlockRows, tq) * widest];
                fixed (float* p = pBuf) fixed (float* ds = dsBuf)
                {
                    for (int u = u0; u < u1; u++)
                    {
                        int b = u / kvHeads, kh = u % kvHeads, ldkv = kvHeads * d, ldq = heads * d;
                        long kvOff = ((long)b * s * kvHeads + kh) * d;
                        float* dkBase = (float*)pdk + kvOff, dvBase = (float*)pdv + kvOff;
                        for (int j = 0; j < s; j++)
                        {
                            new Span<float>(dkBase + (long)j * ldkv, d).Clear();
                            new Span<float>(dvBase + (long)j * ldkv, d).Clear();
                        }
                        for (int h = kh * group; h < (kh + 1) * group; h++)
                        {
                            long qOff = ((long)b * tq * heads + h) * d;
                            var g = new GradUnit((float*)pq + qOff, (float*)pdo + qOff, (float*)pdq + qOff, ldq, (float*)pk + kvOff, (float*)pv + kvOff, dkBase, dvBase, ldkv,
                                pm == 0 ? null : (int*)pm + (long)b * kvLength, ps == 0 ? null : (int*)ps + (long)b * kvLength,
                                pl == 0 ? null : (float*)pl + ((long)b * heads + h) * tq);
                            for (int r0 = 0; r0 < tq; r0 += BlockRows)
                                BackwardBlock(g, r0, Math.Min(BlockRows, tq - r0), d, kvLength, queryOffset, scale, p, ds);
                        }
                    }
                }
            });
        }
    }

    // One query head's backward pointers: q/dOut/dq rows at stride ldq; k, v, dk, dv rows of its kv head at
    // stride ldkv; the sequence's mask and segment ids; the forward's lse for this head (or null).
    private readonly struct GradUnit(float* q, float* dOut, float* dq, int ldq, float* k, float* v, float* dk, float* dv, int ldkv, int* mask, int* segments, float* lse)
    {
        public readonly float* Q = q, DOut = dOut, DQ = dq, K = k, V = v, DK = dk, DV = dv, Lse = lse;
        public readonly int Ldq = ldq, Ldkv = ldkv;
        public readonly int* Mask = mask, Segments = segments;
    }

    // Query rows [r0, r0+nr) of one head: P from S = Q K^T (and lse), dP = dOut V^T, dS = scale P (dP - rowsum(P dP)),
    // then dq = dS K, dk += dS^T Q, dv += P^T dOut, all through the GEMM.
    private static void BackwardBlock(in GradUnit u, int r0, int nr, int d, int kvLength, int queryOffset, float scale, float* p, float* ds)
    {
        int width = Math.Min(kvLength, queryOffset + r0 + nr - 1 + 1);
        float* q = u.Q + (long)r0 * u.Ldq, dOut = u.DOut + (long)r0 * u.Ldq, dq = u.DQ + (long)r0 * u.Ldq;
        for (int rr = 0; rr < nr; rr++) new Span<float>(dq + (long)rr * u.Ldq, d).Clear();
        if (width <= 0) return;
        int lo = FirstKey(u.Segments, queryOffset + r0, queryOffset + r0 + nr - 1), cols = width - lo;
        float* k = u.K + (long)lo * u.Ldkv, v = u.V + (long)lo * u.Ldkv, dk = u.DK + (long)lo * u.Ldkv, dv = u.DV + (long)lo * u.Ldkv;
        new Span<float>(p, nr * cols).Clear();
        new Span<float>(ds, nr * cols).Clear();
        Gemm.MultiplyNT(q, u.Ldq, k, u.Ldkv, p, cols, nr, d, cols, threads: 1);
        Gemm.MultiplyNT(dOut, u.Ldq, v, u.Ldkv, ds, cols, nr, d, cols, threads: 1);
        for (int rr = 0; rr < nr; rr++)
        {
            float* pr = p + (long)rr * cols, dsr = ds + (long)rr * cols;
            int position = queryOffset + r0 + rr, visible = Math.Min(kvLength, position + 1);
            Scale.Apply(new Span<float>(pr, visible - lo), scale);
            MaskScores(pr, lo, visible, u.Mask, u.Segments, position);
            for (int j = visible; j < width; j++) pr[j - lo] = float.NegativeInfinity;
            float max = Reductions.Max(pr, cols);
            if (float.IsNegativeInfinity(max))
            {
                new Span<float>(pr, cols).Clear();
                new Span<float>(dsr, cols).Clear();
                continue;
            }
            float l = u.Lse != null ? u.Lse[r0 + rr] : max + MathF.Log(Reductions.SumExpShifted(pr, cols, max));
            Reductions.ExpShiftedInPlace(pr, cols, l);
            float pdp = Reductions.Dot(pr, dsr, cols);
            for (int j = 0; j < cols; j++) dsr[j] = scale * pr[j] * (dsr[j] - pdp);
        }
        Gemm.MultiplyNN(ds, cols, k, u.Ldkv, dq, u.Ldq, nr, cols, d, threads: 1);
        Gemm.MultiplyTN(ds, cols, q, u.Ldq, dk, u.Ldkv, cols, nr, d, threads: 1);
        Gemm.MultiplyTN(p, cols, dOut, u.Ldq, dv, u.Ldkv, cols, nr, d, threads: 1);
    }
}
