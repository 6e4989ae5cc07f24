// Attention.cs's forward and backward on AVX-512 for head sizes in whole vectors (D % 16 == 0), in the
// FlashAttention-2 manner: tiles of six query rows go through the register-tiled products of
// AttentionTiles.cs, each row tile only over the keys its last row can see (causal: no work above the
// diagonal), the scores and probabilities of a tile staying in cache. Same shapes and features as
// Attention.cs (q[B,Tq,H,D], k/v[B,S,Hkv,D], GQA, queryOffset, kvLength, key mask, segment ids, lse;
// a decode step's forward, Tq = 1, stays on Attention.cs's GEMM route), same arithmetic order per row:
// scores = scale (q.k), masked, max subtracted, exp, sum; out = (P V) / sum; lse = max + log(sum); a
// query that sees no key gets zeros and lse = -inf.
// K^T (and for the backward V^T) of every (batch, kv head) is packed once per call, [D, keys + padding].
// Forward: units of up to 64 query rows of one head, split across threads by work. Backward: one unit
// per (batch, query head) computes its dq rows and its contribution to dk/dv over its kv head's keys
// (64-row blocks: P and dS of the block, then dK += dS^T Q and dV += P^T dOut tiled over six keys); the
// group's first head adds into dk/dv itself, the others into their own buffers, added afterwards in head
// order: every dk/dv row is summed in an order fixed by the shapes, so the bits do not depend on the
// thread count.
using System.Buffers;
using System.Runtime.Intrinsics;

namespace Temper.Kernels.Cpu;

internal static unsafe class FlashAttention
{
    private const int BlockRows = 64, R = AttentionTiles.Rows;

    // The call's shapes and pointers (those a caller left empty are null).
    private readonly struct Call(float* q, float* k, float* v, int* mask, int* segments, float* lse,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale)
    {
        public readonly float* Q = q, K = k, V = v, Lse = lse;
        public readonly int* Mask = mask, Segments = segments;
        public readonly int Batch = batch, Tq = tq, Heads = heads, S = s, KvHeads = kvHeads, D = d, KvLength = kvLength, QueryOffset = queryOffset;
        public readonly float Scale = scale;
        public int Group => Heads / KvHeads;
        public int Ldq => Heads * D;
        public int Ldkv => KvHeads * D;
        /// <summary>Row length of the packed K^T / V^T: every key, 16 zero columns at least past the last.</summary>
        public int Packed => (KvLength + 31) & ~15;
        public long KvOffset(int b, int kh) => ((long)b * S * KvHeads + kh) * D;
        public long QOffset(int b, int h) => ((long)b * Tq * Heads + h) * D;
        public int* MaskOf(int b) => Mask == null ? null : Mask + (long)b * KvLength;
        public int* SegmentsOf(int b) => Segments == null ? null : Segments + (long)b * KvLength;
    }

    public static void Forward(float* q, float* k, float* v, float* output, float* lse, int* mask, int* segments,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, int threads)
    {
        var c = new Call(q, k, v, mask, segments, lse, batch, tq, heads, s, kvHeads, d, kvLength, queryOffset, scale);
        var ktArray = ArrayPool<float>.Shared.Rent(Math.Max(1, batch * kvHeads * d * c.Packed));
        try
        {
            fixed (float* kt = ktArray)
            {
                Pack(c, c.K, kt, threads);
                nint ktp = (nint)kt, op = (nint)output;
                // A unit: rows [r0, r0 + 64) of one head of one sequence.
                int chunks = (tq + BlockRows - 1) / BlockRows, units = batch * heads * chunks;
                long Weight(int u)
                {
                    int r0 = u % chunks * BlockRows, r1 = Math.Min(tq, r0 + BlockRows);
                    return (long)(r1 - r0) * Math.Max(1, Math.Min(kvLength, queryOffset + (r0 + r1) / 2 + 1));
                }
                long work = (long)batch * heads * tq * Math.Max(1, Math.Min(kvLength, queryOffset + tq)) * d;
                StaticPartition.ForBalanced(units, Weight, StaticPartition.Parts(threads, units, work, 1 << 16), (u0, u1) =>
                {
                    int sw = (Math.Max(1, Math.Min(kvLength, queryOffset + tq)) + 15) & ~15;
                    var scratch = ArrayPool<float>.Shared.Rent(R * sw + d);
                    try
                    {
                        fixed (float* sc = scratch)
                            for (int u = u0; u < u1; u++)
                            {
                                int b = u / (heads * chunks), h = u / chunks % heads, r0 = u % chunks * BlockRows, kh = h / c.Group;
                                long qOff = c.QOffset(b, h);
                                var rows = new Rows(c.Q + qOff, (float*)op + qOff, r0, Math.Min(BlockRows, tq - r0),
                                    c.Lse == null ? null : c.Lse + ((long)b * heads + h) * tq);
                                ForwardRows(c, rows, (float*)ktp + (long)(b * kvHeads + kh) * d * c.Packed, c.V + c.KvOffset(b, kh), b, sc, sw);
                            }
                    }
                    finally { ArrayPool<float>.Shared.Return(scratch); }
                });
            }
        }
        finally { ArrayPool<float>.Shared.Return(ktArray); }
    }

    // Query rows [R0, R0 + N) of one head: row r at Q + r * Ldq (output alike), at position queryOffset + r,
    // its lse at Lse[r].
    private readonly struct Rows(float* q, float* o, int r0, int n, float* lse)
    {
        public readonly float* Q = q, O = o, Lse = lse;
        public readonly int R0 = r0, N = n;
    }

    // Row tiles of six: S = Q K^T over the keys [lo, lo + w) the tile can see, scaled, masked, softmax per
    // row, O = P V, scaled by 1/sum.
    private static void ForwardRows(in Call c, in Rows rows, float* kt, float* v, int b, float* sc, int sw)
    {
        float** a = stackalloc float*[R];
        float** dst = stackalloc float*[R];
        float* junk = sc + R * sw;
        float* inv = stackalloc float[R];
        int* mask = c.MaskOf(b), segments = c.SegmentsOf(b);
        for (int t0 = rows.R0; t0 < rows.R0 + rows.N; t0 += R)
        {
            int nt = Math.Min(R, rows.R0 + rows.N - t0);
            int pFirst = c.QueryOffset + t0, pLast = pFirst + nt - 1;
            int lo = Attention.FirstKey(segments, pFirst, pLast), w = Math.Min(c.KvLength, pLast + 1) - lo;
            if (w <= 0)
            {
                for (int rr = 0; rr < nt; rr++)
                {
                    new Span<float>(rows.O + (long)(t0 + rr) * c.Ldq, c.D).Clear();
                    if (rows.Lse != null) rows.Lse[t0 + rr] = float.NegativeInfinity;
                }
                continue;
            }
            int w16 = (w + 15) & ~15;
            for (int rr = 0; rr < R; rr++)
            {
                a[rr] = rows.Q + (long)(t0 + Math.Min(rr, nt - 1)) * c.Ldq;
                dst[rr] = sc + rr * sw;
            }
            AttentionTiles.Product(a, 1, kt + lo, c.Packed, c.D, w16, dst, accumulate: false);
            for (int rr = 0; rr < nt; rr++)
            {
                float* row = sc + rr * sw;
                int position = pFirst + rr;
                float l = Softmax(row, lo, Math.Min(c.KvLength, position + 1), w16, mask, segments, position, c.Scale, out float sum);
                inv[rr] = sum > 0 ? 1f / sum : 0;
                if (rows.Lse != null) rows.Lse[t0 + rr] = l;
            }
            for (int rr = 0; rr < R; rr++)
            {
                a[rr] = sc + rr * sw;
                dst[rr] = rr < nt ? rows.O + (long)(t0 + rr) * c.Ldq : junk;
            }
            AttentionTiles.Product(a, 1, v + (long)lo * c.Ldkv, c.Ldkv, w, c.D, dst, accumulate: false);
            for (int rr = 0; rr < nt; rr++) AttentionTiles.ScaleRow(rows.O + (long)(t0 + rr) * c.Ldq, c.D, inv[rr]);
        }
    }

    // One row of unscaled scores row[j - lo] = q.k_j, j in [lo, lo + w16): scaled, -inf where the query
    // at `position` may not see key j (j >= visible, masked, other segment), then exp(x - max) in place;
    // returns lse = max + log(sum) and the sum (0 and lse = -inf, the row zeroed, when it sees no key).
    internal static float Softmax(float* row, int lo, int visible, int w16, int* mask, int* segments, int position, float scale, out float sum)
    {
        AttentionTiles.ScaleRow(row, w16, scale);
        MaskRow(row, lo, visible, w16, mask, segments, position);
        float max = AttentionTiles.Max(row, w16);
        if (float.IsNegativeInfinity(max))
        {
            new Span<float>(row, w16).Clear();
            sum = 0;
            return float.NegativeInfinity;
        }
        sum = AttentionTiles.ExpShifted(row, w16, max);
        return max + MathF.Log(sum);
    }

    private static void MaskRow(float* row, int lo, int visible, int w16, int* mask, int* segments, int position)
    {
        Attention.MaskScores(row, lo, visible, mask, segments, position);
        new Span<float>(row + Math.Max(0, visible - lo), w16 - Math.Max(0, visible - lo)).Fill(float.NegativeInfinity);
    }

    public static void Backward(float* q, float* k, float* v, float* lse, float* dOut, float* dq, float* dk, float* dv, int* mask, int* segments,
        int batch, int tq, int heads, int s, int kvHeads, int d, int kvLength, int queryOffset, float scale, int threads)
    {
        var c = new Call(q, k, v, mask, segments, lse, batch, tq, heads, s, kvHeads, d, kvLength, queryOffset, scale);
        int group = c.Group, units = batch * heads;
        long packed = (long)batch * kvHeads * d * c.Packed, partial = (long)batch * kvHeads * (group - 1) * kvLength * d;
        var ktArray = ArrayPool<float>.Shared.Rent((int)Math.Max(1, packed));
        var vtArray = ArrayPool<float>.Shared.Rent((int)Math.Max(1, packed));
        var dkArray = ArrayPool<float>.Shared.Rent((int)Math.Max(1, partial));
        var dvArray = ArrayPool<float>.Shared.Rent((int)Math.Max(1, partial));
        try
        {
            fixed (float* kt = ktArray) fixed (float* vt = vtArray) fixed (float* dkp = dkArray) fixed (float* dvp = dvArray)
            {
                Pack(c, c.K, kt, threads);
                Pack(c, c.V, vt, threads);
                nint ktn = (nint)kt, vtn = (nint)vt, dkpn = (nint)dkp, dvpn = (nint)dvp, don = (nint)dOut, dqn = (nint)dq, dkn = (nint)dk, dvn = (nint)dv;
                int widest = Math.Max(1, Math.Min(kvLength, queryOffset + tq)), sw = (widest + 15) & ~15;
                long work = (long)batch * heads * tq * widest * d;
                StaticPartition.For(units, StaticPartition.Parts(threads, units, work, 1 << 16), (u0, u1) =>
                {
                    var scratch = ArrayPool<float>.Shared.Rent(2 * (BlockRows + R) * sw + d);
                    try
                    {
                        fixed (float* buf = scratch)
                            for (int u = u0; u < u1; u++)
                            {
                                int b = u / heads, h = u % heads, kh = h / group, g = h % group;
                                long kvOff = c.KvOffset(b, kh), qOff = c.QOffset(b, h);
                                // The group's first head sums into dk/dv; head g > 0 into its own [kvLength, D] buffers.
                                float* dkT, dvT;
                                int ldT;
                                if (g == 0)
                                {
                                    dkT = (float*)dkn + kvOff;
                                    dvT = (float*)dvn + kvOff;
                                    ldT = c.Ldkv;
                                    for (int j = 0; j < s; j++)
                                    {
                                        new Span<float>(dkT + (long)j * ldT, d).Clear();
                                        new Span<float>(dvT + (long)j * ldT, d).Clear();
                                    }
                                }
                                else
                                {
                                    long pOff = (((long)b * kvHeads + kh) * (group - 1) + g - 1) * kvLength * d;
                                    dkT = (float*)dkpn + pOff;
                                    dvT = (float*)dvpn + pOff;
                                    ldT = d;
                                    new Span<float>(dkT, kvLength * d).Clear();
                                    new Span<float>(dvT, kvLength * d).Clear();
                                }
                                var unit = new GradUnit(c.Q + qOff, (float*)don + qOff, (float*)dqn + qOff, c.K + kvOff, c.V + kvOff,
                                    (float*)ktn + (long)(b * kvHeads + kh) * d * c.Packed, (float*)vtn + (long)(b * kvHeads + kh) * d * c.Packed,
                                    dkT, dvT, ldT, c.MaskOf(b), c.SegmentsOf(b), c.Lse == null ? null : c.Lse + ((long)b * heads + h) * tq);
                                for (int r0 = 0; r0 < tq; r0 += BlockRows)
                                    BackwardBlock(c, unit, r0, Math.Min(BlockRows, tq - r0), buf, sw);
                            }
                    }
                    finally { ArrayPool<float>.Shared.Return(scratch); }
                });
                if (group > 1)
                    StaticPartition.For(batch * kvHeads, StaticPartition.Parts(threads, batch * kvHeads, partial, 1 << 16), (u0, u1) =>
                    {
                        for (int u = u0; u < u1; u++)
                        {
                            int b = u / kvHeads, kh = u % kvHeads;
                            long kvOff = c.KvOffset(b, kh);
                            for (int g = 1; g < group; g++)
                            {
                                long pOff = ((long)u * (group - 1) + g - 1) * kvLength * d;
                                for (int j = 0; j < kvLength; j++)
                                {
                                    Add((float*)dkn + kvOff + (long)j * c.Ldkv, (float*)dkpn + pOff + (long)j * d, d);
                                    Add((float*)dvn + kvOff + (long)j * c.Ldkv, (float*)dvpn + pOff + (long)j * d, d);
                                }
                            }
                        }
                    });
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(ktArray);
            ArrayPool<float>.Shared.Return(vtArray);
            ArrayPool<float>.Shared.Return(dkArray);
            ArrayPool<float>.Shared.Return(dvArray);
        }
    }

    // One query head's backward pointers: q/dOut/dq rows at stride ldq (the call's), k/v rows of its kv
    // head, their packed transposes, the dk/dv rows it sums into (stride LdT), mask, segment ids, lse.
    private readonly struct GradUnit(float* q, float* dOut, float* dq, float* k, float* v, float* kt, float* vt, float* dk, float* dv, int ldT,
        int* mask, int* segments, float* lse)
    {
        public readonly float* Q = q, DOut = dOut, DQ = dq, K = k, V = v, Kt = kt, Vt = vt, DK = dk, DV = dv, Lse = lse;
        public readonly int LdT = ldT;
        public readonly int* Mask = mask, Segments = segments;
    }

    // Query rows [r0, r0+nr) of one head over the keys [lo, lo + wb) the block can see. Per row tile of six:
    // P (from S = Q K^T and lse), dP = dOut V^T, dS = scale P (dP - sum P dP), dq = dS K. Then per tile of
    // six keys: dK += dS^T Q and dV += P^T dOut over the block's rows that can see them.
    private static void BackwardBlock(in Call c, in GradUnit u, int r0, int nr, float* buf, int sw)
    {
        int ldq = c.Ldq, ldkv = c.Ldkv, d = c.D;
        int p0 = c.QueryOffset + r0, p1 = p0 + nr - 1;
        int width = Math.Min(c.KvLength, p1 + 1);
        if (width <= 0)
        {
            for (int rr = 0; rr < nr; rr++) new Span<float>(u.DQ + (long)(r0 + rr) * ldq, d).Clear();
            return;
        }
        int lo = Attention.FirstKey(u.Segments, p0, p1), wb = width - lo, wb16 = (wb + 15) & ~15;
        float* p = buf, ds = buf + (BlockRows + R) * sw, junk = buf + 2 * (BlockRows + R) * sw;
        float** a = stackalloc float*[R];
        float** dst = stackalloc float*[R];
        for (int t0 = 0; t0 < nr; t0 += R)
        {
            int nt = Math.Min(R, nr - t0), pLast = p0 + t0 + nt - 1;
            int w = Math.Min(c.KvLength, pLast + 1) - lo, w16 = (w + 15) & ~15;
            for (int rr = 0; rr < R; rr++)
            {
                a[rr] = u.Q + (long)(r0 + t0 + Math.Min(rr, nt - 1)) * ldq;
                dst[rr] = p + (t0 + rr) * sw;
            }
            AttentionTiles.Product(a, 1, u.Kt + lo, c.Packed, d, w16, dst, accumulate: false);
            for (int rr = 0; rr < R; rr++)
            {
                a[rr] = u.DOut + (long)(r0 + t0 + Math.Min(rr, nt - 1)) * ldq;
                dst[rr] = ds + (t0 + rr) * sw;
            }
            AttentionTiles.Product(a, 1, u.Vt + lo, c.Packed, d, w16, dst, accumulate: false);
            for (int rr = 0; rr < nt; rr++)
            {
                float* pr = p + (t0 + rr) * sw, dsr = ds + (t0 + rr) * sw;
                int position = p0 + t0 + rr;
                AttentionTiles.ScaleRow(pr, w16, c.Scale);
                MaskRow(pr, lo, Math.Min(c.KvLength, position + 1), w16, u.Mask, u.Segments, position);
                float max = AttentionTiles.Max(pr, w16);
                if (float.IsNegativeInfinity(max))
                {
                    new Span<float>(pr, wb16).Clear();
                    new Span<float>(dsr, wb16).Clear();
                    continue;
                }
                float l = u.Lse != null ? u.Lse[r0 + t0 + rr] : max + MathF.Log(SumExp(pr, w16, max));
                AttentionTiles.SoftmaxGrad(pr, dsr, w16, AttentionTiles.ExpShiftedDot(pr, dsr, w16, l), c.Scale);
                new Span<float>(pr + w16, wb16 - w16).Clear();
                new Span<float>(dsr + w16, wb16 - w16).Clear();
            }
            for (int rr = 0; rr < R; rr++)
            {
                a[rr] = ds + (t0 + rr) * sw;
                dst[rr] = rr < nt ? u.DQ + (long)(r0 + t0 + rr) * ldq : junk;
            }
            AttentionTiles.Product(a, 1, u.K + (long)lo * ldkv, ldkv, w, d, dst, accumulate: false);
        }
        for (int c0 = 0; c0 < wb; c0 += R)
        {
            // Rows before i0 are at positions before key lo + c0: they see none of this tile's keys.
            int i0 = Math.Max(0, lo + c0 - p0), n = nr - i0;
            for (int rr = 0; rr < R; rr++)
            {
                a[rr] = ds + i0 * sw + Math.Min(c0 + rr, wb - 1);
                dst[rr] = c0 + rr < wb ? u.DK + (long)(lo + c0 + rr) * u.LdT : junk;
            }
            AttentionTiles.Product(a, sw, u.Q + (long)(r0 + i0) * ldq, ldq, n, d, dst, accumulate: true);
            for (int rr = 0; rr < R; rr++)
            {
                a[rr] = p + i0 * sw + Math.Min(c0 + rr, wb - 1);
                dst[rr] = c0 + rr < wb ? u.DV + (long)(lo + c0 + rr) * u.LdT : junk;
            }
            AttentionTiles.Product(a, sw, u.DOut + (long)(r0 + i0) * ldq, ldq, n, d, dst, accumulate: true);
        }
    }

    // sum_j exp(row[j] - max), the row unchanged (its scores are shifted by lse next).
    private static float SumExp(float* row, int w16, float max)
    {
        var sh = Vector512.Create(max);
        var s = Vector512<float>.Zero;
        for (int j = 0; j < w16; j += 16) s += Vector512.Exp(Vector512.Load(row + j) - sh);
        return Vector512.Sum(s);
    }

    private static void Add(float* dst, float* src, int n)
    {
        for (int j = 0; j < n; j += 16) (Vector512.Load(dst + j) + Vector512.Load(src + j)).Store(dst + j);
    }

    // K^T (or V^T) of every (batch, kv head): packed[(b * Hkv + kh) * D * Packed + t * Packed + j] = x[b, j, kh, t].
    private static void Pack(in Call c, float* x, float* packed, int threads)
    {
        var call = c;
        nint xn = (nint)x, pn = (nint)packed;
        int units = c.Batch * c.KvHeads;
        StaticPartition.For(units, StaticPartition.Parts(threads, units, (long)units * c.KvLength * c.D, 1 << 14), (u0, u1) =>
        {
            for (int u = u0; u < u1; u++)
                AttentionTiles.Transpose((float*)xn + call.KvOffset(u / call.KvHeads, u % call.KvHeads), call.Ldkv, call.KvLength, call.D,
                    (float*)pn + (long)u * call.D * call.Packed, call.Packed);
        });
    }
}
