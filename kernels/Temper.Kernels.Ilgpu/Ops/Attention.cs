// Causal GQA attention, FlashAttention-2 style tiles. q[B,Tq,H,D], k/v[B,S,Hkv,D] (the first KvLength
// rows used), out[B,Tq,H,D], lse[B,H,Tq]. Query i of batch b sits at position QueryOffset + i and sees
// key j when j <= that position, j < KvLength, mask[b,j] != 0 (no mask admits all) and, for packed
// rows, segment[b,j] == segment[b,position]; head h reads kv head h / (H/Hkv). The key mask and the
// segment ids travel in one int buffer: [mask B*KvLength (when present) | segments B*KvLength (when
// present)]. f32 throughout; D <= 128. A query that sees no key gets zeros and lse = -inf.
// With PTX kernels on (DeviceContext.PtxAttention), D = 64 and 128 go to the CUDA C++ kernels instead
// (Temper.Kernels.Cuda.CudaAttention: bf16 tensor cores), forward and backward alike (Forward says why).
//
// Tiling: R = 32 rows per tile for D <= 64, 16 for D <= 128 (an R x (D+1) tile, padded against bank
// conflicts, is at most TileFloats). Every kernel is explicitly grouped (up to 128 threads; the CPU
// accelerator's 16) and every phase loops its work items over the group's threads, so any group size
// computes the same sums in the same order. A work item keeps a 4 x 2 block of sums in registers
// (FourByTwo: 4 rows by two keys or two columns, 6 shared-memory loads per 8 FMAs).
// Each kernel is compiled for D = 64 and D = 128 as constants (IHeadDim: fixed strides and trip
// counts, which the PTX compiler unrolls) and for any other D <= 128 read at run time.
//   forward   one group per (b, h, R queries): per tile of R keys the query can see (causal bound),
//             K and V staged in shared memory, S = q k^T, online softmax (running max and sum per row),
//             O = alpha O + P V in shared memory; out = O / sum, lse = max + log(sum).
//   backward  delta = rowsum(dO * O) first (O and lse from forward: Lse given means forward ran with
//             these args; without it, forward runs into scratch), then two kernels, no atomics:
//             dq   one group per (b, h, R queries), over the key tiles it sees: p = exp(s - lse),
//                  ds = p (dO.v - delta), dq += scale ds k;
//             dk,dv one group per (b, kv head, R keys), over the group's query heads and the R/2-query tiles
//                  that see the keys: dv += p^T dO, dk += scale ds^T q (the key rows past KvLength get 0).
// Cost: causal forward ~ B H T^2 D FMAs (q k^T and P V over the visible half), each reading 0.75
// shared-memory floats, so bound by shared-memory bandwidth (one warp-wide load a clock per SM) near a
// third of the f32 peak at best: B8 H9 T1024 D64 is ~4.8 G FMAs, about 1-3 ms on an H100. Backward does
// 7 such products (q k^T and dO v^T in both kernels, then dq, dk, dv), ~3.5 times forward. K/V (and
// q/dO for dk,dv) are re-read from L2 once per tile; the softmax row pass uses R of the threads.
// A tile pair no query of which sees a key (left padding, other segments of a packed row) is skipped.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu.Ops;

internal struct AttentionDims
{
    public int B, Tq, H, S, Hkv, D, KvLength, QueryOffset, HasMask, HasLse, HasSegments, SegmentBase;
    public float Scale;
}

/// <summary>The head dim a kernel is compiled for: a constant (strides and loop bounds known to the PTX
/// compiler, which unrolls and folds them) or the runtime AttentionDims.D.</summary>
internal interface IHeadDim
{
    int Of(int runtime);
}

internal readonly struct HeadDim64 : IHeadDim
{
    public int Of(int runtime) => 64;
}

internal readonly struct HeadDim128 : IHeadDim
{
    public int Of(int runtime) => 128;
}

internal readonly struct AnyHeadDim : IHeadDim
{
    public int Of(int runtime) => runtime;
}

internal static class Attention
{
    public const int MaxHeadDim = 128;
    private const int MaxThreads = 128;
    private const int MaxRows = 32;
    private const int TileFloats = 2080;  // 32 x (64 + 1) >= 16 x (128 + 1)
    private const int HalfTileFloats = 1040; // 16 x 65 >= 8 x 129
    private const int AccumFloats = 2048; // R x D, unpadded
    private const int ScoreFloats = 1024; // R x R
    private const int HalfScoreFloats = 512; // R/2 x R

    /// <summary>Four rows' sums of one column of a work item.</summary>
    private struct Four
    {
        public float R0, R1, R2, R3;
    }

    /// <summary>A work item's 4 x 2 sums: columns A and B (6 shared loads per 8 FMAs).</summary>
    private struct FourByTwo
    {
        public Four A, B;
    }

    // A_r = sum_t x[xBase + r xRow + t xStep] y[yBase + t yStep], B_r the same with y[yBase + yNext + t yStep]; r < 4, t < n.
    private static FourByTwo Dot4x2(ArrayView<float> x, int xBase, int xRow, int xStep, ArrayView<float> y, int yBase, int yNext, int yStep, int n)
    {
        Four a = default, b = default;
        for (int t = 0, xt = xBase, yt = yBase; t < n; t++, xt += xStep, yt += yStep)
        {
            float x0 = x[xt], x1 = x[xt + xRow], x2 = x[xt + 2 * xRow], x3 = x[xt + 3 * xRow], ya = y[yt], yb = y[yt + yNext];
            a.R0 += x0 * ya;
            a.R1 += x1 * ya;
            a.R2 += x2 * ya;
            a.R3 += x3 * ya;
            b.R0 += x0 * yb;
            b.R1 += x1 * yb;
            b.R2 += x2 * yb;
            b.R3 += x3 * yb;
        }
        return new FourByTwo { A = a, B = b };
    }

    // Columns c and c + (d+1)/2 make the pair of an item (lanes read consecutive columns: no bank conflicts);
    // for odd d the last item's second column is the row's padding column, computed and not stored.
    private static int HalfCols(int d) => (d + 1) / 2;

    /// <summary>Rows of a full tile (R) for head dim d (IlgpuBackend refuses d > MaxHeadDim).</summary>
    private static int TileRows(int d) => d <= 64 ? 32 : 16;

    private static float Get(Four f, int r) => r == 0 ? f.R0 : r == 1 ? f.R1 : r == 2 ? f.R2 : f.R3;

    // dst[r, c] (row stride dStride) = src[srcBase + r srcRow + c] for r < rows, 0 for rows <= r < tileRows.
    private static void LoadRows(ArrayView<float> src, int srcBase, int srcRow, int rows, int tileRows, int d, ArrayView<float> dst, int dStride)
    {
        for (int e = Group.IdxX; e < tileRows * d; e += Group.DimX)
        {
            int r = e / d, c = e - r * d;
            dst[r * dStride + c] = r < rows ? src[srcBase + r * srcRow + c] : 0f;
        }
    }

    // Per key j0 + j of the tile: admitted (in range, mask) and its segment.
    private static void KeyInfo(ArrayView<int> mask, AttentionDims a, int b, int j0, int tileRows, ArrayView<int> keyOk, ArrayView<int> keySeg)
    {
        for (int j = Group.IdxX; j < tileRows; j += Group.DimX)
        {
            int jj = j0 + j, o = b * a.KvLength + jj;
            bool inRange = jj < a.KvLength;
            keyOk[j] = inRange && (a.HasMask == 0 || mask[o] != 0) ? 1 : 0;
            keySeg[j] = inRange && a.HasSegments != 0 ? mask[a.SegmentBase + o] : 0;
        }
    }

    // Per query i0 + i of the tile: its key position (-1 past Tq: sees nothing) and its segment.
    private static void QueryInfo(ArrayView<int> mask, AttentionDims a, int b, int i0, int tileRows, ArrayView<int> queryPos, ArrayView<int> querySeg)
    {
        for (int i = Group.IdxX; i < tileRows; i += Group.DimX)
        {
            int p = a.QueryOffset + i0 + i;
            bool inRange = i0 + i < a.Tq;
            queryPos[i] = inRange ? p : -1;
            querySeg[i] = inRange && a.HasSegments != 0 ? mask[a.SegmentBase + b * a.KvLength + p] : 0;
        }
    }

    private static bool Visible(ArrayView<int> queryPos, ArrayView<int> querySeg, ArrayView<int> keyOk, ArrayView<int> keySeg, int i, int j0, int j) =>
        keyOk[j] != 0 && j0 + j <= queryPos[i] && keySeg[j] == querySeg[i];

    // Whether some query of the tile sees some key of it, for every thread (a group-wide OR that is also a
    // barrier): tiles wholly hidden by the mask or by other segments (packed rows) are skipped.
    private static bool AnyVisible(ArrayView<int> queryPos, ArrayView<int> querySeg, ArrayView<int> keyOk, ArrayView<int> keySeg, int queries, int keys, int j0)
    {
        bool any = false;
        for (int e = Group.IdxX; e < queries * keys && !any; e += Group.DimX)
            any = Visible(queryPos, querySeg, keyOk, keySeg, e / keys, j0, e % keys);
        return Group.BarrierOr(any);
    }

    public static void ForwardKernel<THead>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> output, ArrayView<float> lse, ArrayView<int> mask, AttentionDims a)
        where THead : struct, IHeadDim
    {
        var qs = SharedMemory.Allocate<float>(TileFloats);
        var ks = SharedMemory.Allocate<float>(TileFloats);
        var vs = SharedMemory.Allocate<float>(TileFloats);
        var os = SharedMemory.Allocate<float>(AccumFloats);
        var ps = SharedMemory.Allocate<float>(ScoreFloats);
        var rowMax = SharedMemory.Allocate<float>(MaxRows);
        var rowSum = SharedMemory.Allocate<float>(MaxRows);
        var rowScale = SharedMemory.Allocate<float>(MaxRows);
        var queryPos = SharedMemory.Allocate<int>(MaxRows);
        var querySeg = SharedMemory.Allocate<int>(MaxRows);
        var keyOk = SharedMemory.Allocate<int>(MaxRows);
        var keySeg = SharedMemory.Allocate<int>(MaxRows);
        int tid = Group.IdxX, threads = Group.DimX, d = default(THead).Of(a.D), r = TileRows(d), st = d + 1, hd = HalfCols(d);
        // The last query tiles see the most keys: they start first (the light ones fill the tail).
        int tile = (a.Tq + r - 1) / r - 1 - Grid.IdxX / (a.B * a.H), bh = Grid.IdxX % (a.B * a.H), h = bh % a.H, b = bh / a.H;
        int kh = h / (a.H / a.Hkv), i0 = tile * r, rows = IntrinsicMath.Min(r, a.Tq - i0);
        int qRow = a.H * d, qBase = ((b * a.Tq + i0) * a.H + h) * d, kRow = a.Hkv * d, kBase = (b * a.S * a.Hkv + kh) * d;
        LoadRows(q, qBase, qRow, rows, r, d, qs, st);
        QueryInfo(mask, a, b, i0, r, queryPos, querySeg);
        for (int e = tid; e < r * d; e += threads) os[e] = 0f;
        for (int i = tid; i < r; i += threads)
        {
            rowMax[i] = float.NegativeInfinity;
            rowSum[i] = 0f;
        }
        int keyEnd = IntrinsicMath.Min(a.KvLength, a.QueryOffset + i0 + rows);
        for (int j0 = 0; j0 < keyEnd; j0 += r)
        {
            int keys = IntrinsicMath.Min(r, keyEnd - j0);
            Group.Barrier(); // the previous tile's readers are done
            LoadRows(k, kBase + j0 * kRow, kRow, keys, r, d, ks, st);
            LoadRows(v, kBase + j0 * kRow, kRow, keys, r, d, vs, st);
            KeyInfo(mask, a, b, j0, r, keyOk, keySeg);
            Group.Barrier();
            if (!AnyVisible(queryPos, querySeg, keyOk, keySeg, r, r, j0)) continue;
            // S = scale q k^T where visible, -inf elsewhere; 4 query rows x keys j, j + r/2 per item.
            for (int e = tid; e < r / 4 * (r / 2); e += threads)
            {
                int j = e % (r / 2), i = e / (r / 2) * 4, j2 = j + r / 2;
                var s = Dot4x2(qs, i * st, st, 1, ks, j * st, r / 2 * st, 1, d);
                for (int u = 0; u < 4; u++)
                {
                    ps[(i + u) * r + j] = Visible(queryPos, querySeg, keyOk, keySeg, i + u, j0, j) ? a.Scale * Get(s.A, u) : float.NegativeInfinity;
                    ps[(i + u) * r + j2] = Visible(queryPos, querySeg, keyOk, keySeg, i + u, j0, j2) ? a.Scale * Get(s.B, u) : float.NegativeInfinity;
                }
            }
            Group.Barrier();
            // Online softmax, one row per item: new max, p = exp(s - max), rescale of the old sum.
            for (int i = tid; i < r; i += threads)
            {
                float m = rowMax[i], mt = m;
                for (int j = 0; j < r; j++) mt = IntrinsicMath.Max(mt, ps[i * r + j]);
                float sum = 0f;
                for (int j = 0; j < r; j++)
                {
                    float p = mt == float.NegativeInfinity ? 0f : MathF.Exp(ps[i * r + j] - mt); // exp(-inf) = 0 for the hidden keys
                    ps[i * r + j] = p;
                    sum += p;
                }
                float alpha = m == float.NegativeInfinity ? 0f : MathF.Exp(m - mt);
                rowScale[i] = alpha;
                rowSum[i] = rowSum[i] * alpha + sum;
                rowMax[i] = mt;
            }
            Group.Barrier();
            // O = alpha O + P V, 4 query rows x columns c, c + hd per item.
            for (int e = tid; e < r / 4 * hd; e += threads)
            {
                int c = e % hd, i = e / hd * 4, c2 = c + hd;
                var pv = Dot4x2(ps, i * r, r, 1, vs, c, hd, st, r);
                for (int u = 0; u < 4; u++)
                {
                    int o = (i + u) * d;
                    os[o + c] = os[o + c] * rowScale[i + u] + Get(pv.A, u);
                    if (c2 < d) os[o + c2] = os[o + c2] * rowScale[i + u] + Get(pv.B, u);
                }
            }
        }
        Group.Barrier();
        for (int e = tid; e < rows * d; e += threads)
        {
            int i = e / d, c = e - i * d;
            float l = rowSum[i];
            output[qBase + i * qRow + c] = l > 0f ? os[i * d + c] / l : 0f;
        }
        if (a.HasLse != 0)
            for (int i = tid; i < rows; i += threads)
                lse[(b * a.H + h) * a.Tq + i0 + i] = rowSum[i] > 0f ? rowMax[i] + MathF.Log(rowSum[i]) : float.NegativeInfinity;
    }

    /// <summary>delta[b,h,i] = dOut . out of query row (b,i,h); index runs over q's rows.</summary>
    public static void DeltaKernel(Index1D index, ArrayView<float> dOut, ArrayView<float> output, ArrayView<float> delta, AttentionDims a)
    {
        int h = index % a.H, bi = index / a.H, i = bi % a.Tq, b = bi / a.Tq, o = index * a.D;
        float s = 0f;
        for (int c = 0; c < a.D; c++) s += dOut[o + c] * output[o + c];
        delta[(b * a.H + h) * a.Tq + i] = s;
    }

    // p and ds of 4 query rows x keys j, j + keys/2 (item e): p = exp(scale s - lse) where visible (kept in ps when keepP),
    // ds = p (dO.v - delta).
    private static void ScoresAndGrads(int e, ArrayView<float> qs, ArrayView<float> dos, ArrayView<float> ks, ArrayView<float> vs, int st, int d, int j0, float scale,
        ArrayView<float> rowLse, ArrayView<float> rowDelta, ArrayView<int> queryPos, ArrayView<int> querySeg, ArrayView<int> keyOk, ArrayView<int> keySeg,
        bool keepP, ArrayView<float> ps, ArrayView<float> dss, int keys)
    {
        int half = keys / 2, j = e % half, i = e / half * 4;
        var s = Dot4x2(qs, i * st, st, 1, ks, j * st, half * st, 1, d);
        var dp = Dot4x2(dos, i * st, st, 1, vs, j * st, half * st, 1, d);
        for (int u = 0; u < 4; u++)
        {
            float lse = rowLse[i + u], delta = rowDelta[i + u];
            int o = (i + u) * keys + j;
            float p = Visible(queryPos, querySeg, keyOk, keySeg, i + u, j0, j) ? MathF.Exp(scale * Get(s.A, u) - lse) : 0f;
            float p2 = Visible(queryPos, querySeg, keyOk, keySeg, i + u, j0, j + half) ? MathF.Exp(scale * Get(s.B, u) - lse) : 0f;
            if (keepP)
            {
                ps[o] = p;
                ps[o + half] = p2;
            }
            dss[o] = p * (Get(dp.A, u) - delta);
            dss[o + half] = p2 * (Get(dp.B, u) - delta);
        }
    }

    // Per query row of the tile: lse and delta (0 past Tq).
    private static void RowStats(ArrayView<float> lse, ArrayView<float> delta, AttentionDims a, int b, int h, int i0, int tileRows, ArrayView<float> rowLse, ArrayView<float> rowDelta)
    {
        for (int i = Group.IdxX; i < tileRows; i += Group.DimX)
        {
            bool inRange = i0 + i < a.Tq;
            int o = (b * a.H + h) * a.Tq + i0 + i;
            rowLse[i] = inRange ? lse[o] : 0f;
            rowDelta[i] = inRange ? delta[o] : 0f;
        }
    }

    public static void BackwardQueryKernel<THead>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dOut, ArrayView<float> dq,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> mask, AttentionDims a) where THead : struct, IHeadDim
    {
        var qs = SharedMemory.Allocate<float>(TileFloats);
        var dos = SharedMemory.Allocate<float>(TileFloats);
        var dqs = SharedMemory.Allocate<float>(TileFloats);
        var ks = SharedMemory.Allocate<float>(TileFloats);
        var vs = SharedMemory.Allocate<float>(TileFloats);
        var dss = SharedMemory.Allocate<float>(ScoreFloats);
        var rowLse = SharedMemory.Allocate<float>(MaxRows);
        var rowDelta = SharedMemory.Allocate<float>(MaxRows);
        var queryPos = SharedMemory.Allocate<int>(MaxRows);
        var querySeg = SharedMemory.Allocate<int>(MaxRows);
        var keyOk = SharedMemory.Allocate<int>(MaxRows);
        var keySeg = SharedMemory.Allocate<int>(MaxRows);
        int tid = Group.IdxX, threads = Group.DimX, d = default(THead).Of(a.D), rk = TileRows(d), rq = rk, st = d + 1, hd = HalfCols(d);
        int tile = (a.Tq + rq - 1) / rq - 1 - Grid.IdxX / (a.B * a.H), bh = Grid.IdxX % (a.B * a.H), h = bh % a.H, b = bh / a.H;
        int kh = h / (a.H / a.Hkv), i0 = tile * rq, rows = IntrinsicMath.Min(rq, a.Tq - i0);
        int qRow = a.H * d, qBase = ((b * a.Tq + i0) * a.H + h) * d, kRow = a.Hkv * d, kBase = (b * a.S * a.Hkv + kh) * d;
        LoadRows(q, qBase, qRow, rows, rq, d, qs, st);
        LoadRows(dOut, qBase, qRow, rows, rq, d, dos, st);
        QueryInfo(mask, a, b, i0, rq, queryPos, querySeg);
        RowStats(lse, delta, a, b, h, i0, rq, rowLse, rowDelta);
        for (int e = tid; e < rq * d; e += threads) dqs[e] = 0f;
        int keyEnd = IntrinsicMath.Min(a.KvLength, a.QueryOffset + i0 + rows);
        for (int j0 = 0; j0 < keyEnd; j0 += rk)
        {
            int keys = IntrinsicMath.Min(rk, keyEnd - j0);
            Group.Barrier();
            LoadRows(k, kBase + j0 * kRow, kRow, keys, rk, d, ks, st);
            LoadRows(v, kBase + j0 * kRow, kRow, keys, rk, d, vs, st);
            KeyInfo(mask, a, b, j0, rk, keyOk, keySeg);
            Group.Barrier();
            if (!AnyVisible(queryPos, querySeg, keyOk, keySeg, rq, rk, j0)) continue;
            for (int e = tid; e < rq / 4 * (rk / 2); e += threads)
                ScoresAndGrads(e, qs, dos, ks, vs, st, d, j0, a.Scale, rowLse, rowDelta, queryPos, querySeg, keyOk, keySeg, false, dss, dss, rk);
            Group.Barrier();
            // dq += scale ds k, 4 query rows x columns c, c + hd per item.
            for (int e = tid; e < rq / 4 * hd; e += threads)
            {
                int c = e % hd, i = e / hd * 4, c2 = c + hd;
                var g = Dot4x2(dss, i * rk, rk, 1, ks, c, hd, st, rk);
                for (int u = 0; u < 4; u++)
                {
                    dqs[(i + u) * d + c] += a.Scale * Get(g.A, u);
                    if (c2 < d) dqs[(i + u) * d + c2] += a.Scale * Get(g.B, u);
                }
            }
        }
        Group.Barrier();
        for (int e = tid; e < rows * d; e += threads)
        {
            int i = e / d, c = e - i * d;
            dq[qBase + i * qRow + c] = dqs[i * d + c];
        }
    }

    public static void BackwardKeyKernel<THead>(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> dOut, ArrayView<float> dk, ArrayView<float> dv,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<int> mask, AttentionDims a) where THead : struct, IHeadDim
    {
        var ks = SharedMemory.Allocate<float>(TileFloats);
        var vs = SharedMemory.Allocate<float>(TileFloats);
        var dks = SharedMemory.Allocate<float>(AccumFloats);
        var dvs = SharedMemory.Allocate<float>(AccumFloats);
        var qs = SharedMemory.Allocate<float>(HalfTileFloats);
        var dos = SharedMemory.Allocate<float>(HalfTileFloats);
        var ps = SharedMemory.Allocate<float>(HalfScoreFloats);
        var dss = SharedMemory.Allocate<float>(HalfScoreFloats);
        var rowLse = SharedMemory.Allocate<float>(MaxRows);
        var rowDelta = SharedMemory.Allocate<float>(MaxRows);
        var queryPos = SharedMemory.Allocate<int>(MaxRows);
        var querySeg = SharedMemory.Allocate<int>(MaxRows);
        var keyOk = SharedMemory.Allocate<int>(MaxRows);
        var keySeg = SharedMemory.Allocate<int>(MaxRows);
        int tid = Group.IdxX, threads = Group.DimX, d = default(THead).Of(a.D), rk = TileRows(d), rq = rk / 2, st = d + 1, hd = HalfCols(d), group = a.H / a.Hkv;
        // The first key tiles are seen by the most queries: they start first.
        int tile = Grid.IdxX / (a.B * a.Hkv), bkh = Grid.IdxX % (a.B * a.Hkv), kh = bkh % a.Hkv, b = bkh / a.Hkv;
        int j0 = tile * rk, keys = IntrinsicMath.Min(rk, a.S - j0), kRow = a.Hkv * d, kBase = ((b * a.S + j0) * a.Hkv + kh) * d, qRow = a.H * d;
        LoadRows(k, kBase, kRow, keys, rk, d, ks, st);
        LoadRows(v, kBase, kRow, keys, rk, d, vs, st);
        KeyInfo(mask, a, b, j0, rk, keyOk, keySeg);
        for (int e = tid; e < rk * d; e += threads)
        {
            dks[e] = 0f;
            dvs[e] = 0f;
        }
        // The queries that can see key j0 or later: i >= j0 - QueryOffset.
        int firstTile = j0 < a.KvLength ? IntrinsicMath.Max(0, j0 - a.QueryOffset) / rq : a.Tq;
        for (int g = 0; g < group; g++)
        {
            int h = kh * group + g;
            for (int i0 = firstTile * rq; i0 < a.Tq; i0 += rq)
            {
                int rows = IntrinsicMath.Min(rq, a.Tq - i0), qBase = ((b * a.Tq + i0) * a.H + h) * d;
                Group.Barrier();
                LoadRows(q, qBase, qRow, rows, rq, d, qs, st);
                LoadRows(dOut, qBase, qRow, rows, rq, d, dos, st);
                QueryInfo(mask, a, b, i0, rq, queryPos, querySeg);
                RowStats(lse, delta, a, b, h, i0, rq, rowLse, rowDelta);
                Group.Barrier();
                if (!AnyVisible(queryPos, querySeg, keyOk, keySeg, rq, rk, j0)) continue;
                for (int e = tid; e < rq / 4 * (rk / 2); e += threads)
                    ScoresAndGrads(e, qs, dos, ks, vs, st, d, j0, a.Scale, rowLse, rowDelta, queryPos, querySeg, keyOk, keySeg, true, ps, dss, rk);
                Group.Barrier();
                // dv += p^T dO, dk += scale ds^T q, 4 key rows x columns c, c + hd per item.
                for (int e = tid; e < rk / 4 * hd; e += threads)
                {
                    int c = e % hd, j = e / hd * 4, c2 = c + hd;
                    var gv = Dot4x2(ps, j, 1, rk, dos, c, hd, st, rq);
                    var gk = Dot4x2(dss, j, 1, rk, qs, c, hd, st, rq);
                    for (int u = 0; u < 4; u++)
                    {
                        int o = (j + u) * d;
                        dvs[o + c] += Get(gv.A, u);
                        dks[o + c] += a.Scale * Get(gk.A, u);
                        if (c2 < d)
                        {
                            dvs[o + c2] += Get(gv.B, u);
                            dks[o + c2] += a.Scale * Get(gk.B, u);
                        }
                    }
                }
            }
        }
        Group.Barrier();
        for (int e = tid; e < keys * d; e += threads)
        {
            int j = e / d, c = e - j * d;
            dk[kBase + j * kRow + c] = dks[j * d + c];
            dv[kBase + j * kRow + c] = dvs[j * d + c];
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

    private static KernelConfig Config(DeviceContext dc, int groups) =>
        new(groups, Math.Min(MaxThreads, dc.Accelerator.MaxNumThreadsPerGroup));

    private static void RunForward<THead>(DeviceContext dc, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> output, ArrayView<float> lse, ArrayView<int> dMask, AttentionDims a)
        where THead : struct, IHeadDim
    {
        int r = TileRows(a.D);
        dc.Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>>("attention.fwd." + typeof(THead).Name,
            acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(ForwardKernel<THead>))
            (Config(dc, a.B * a.H * ((a.Tq + r - 1) / r)), q, k, v, output, lse, dMask, a);
    }

    private static void RunBackward<THead>(DeviceContext dc, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> output, ArrayView<float>? lse,
        ArrayView<float> dOut, ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, ArrayView<int> dMask, AttentionDims a) where THead : struct, IHeadDim
    {
        int rows = a.B * a.Tq * a.H, rk = TileRows(a.D), rq = rk; // dq: R queries a group (dk,dv: R/2, for shared memory)
        var delta = dc.Arena.Take<float>(rows);
        if (!lse.HasValue)
        {
            a.HasLse = 1;
            output = dc.Arena.Take<float>((long)rows * a.D);
            lse = dc.Arena.Take<float>(rows);
            if (rows > 0) RunForward<THead>(dc, q, k, v, output, lse.Value, dMask, a);
        }
        if (rows > 0)
        {
            dc.Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionDims>>("attention.bwd.delta",
                acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionDims>(DeltaKernel))
                (rows, dOut, output, delta, a);
            dc.Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>>("attention.bwd.q." + typeof(THead).Name,
                acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(BackwardQueryKernel<THead>))
                (Config(dc, a.B * a.H * ((a.Tq + rq - 1) / rq)), q, k, v, dOut, dq, lse.Value, delta, dMask, a);
        }
        if (a.B * a.S * a.Hkv > 0)
            dc.Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>>("attention.bwd.kv." + typeof(THead).Name,
                acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(BackwardKeyKernel<THead>))
                (Config(dc, a.B * a.Hkv * ((a.S + rk - 1) / rk)), q, k, v, dOut, dk, dv, lse.Value, delta, dMask, a);
    }

    public static void Forward(DeviceContext dc, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> output, ArrayView<float>? lse, ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, AttentionDims a)
    {
        // With PTX kernels on, D = 64 and 128 take the CUDA C++ kernels (q, k, v and P rounded to bf16), the training
        // forward (lse kept) as well as the inference one: Backward then takes them too, so its p = exp(s - lse)
        // recomputes the forward's bf16 scores (the ILGPU backward's f32 scores against a bf16 lse would skew p by ~1%).
        if (dc.PtxAttention is { } ptx && (a.D == 64 || a.D == 128))
        {
            PtxForward(dc, ptx, q, k, v, output, lse, mask, segments, a);
            return;
        }
        a.HasLse = lse.HasValue ? 1 : 0;
        var dMask = UploadMasks(dc, mask, segments, ref a);
        if (a.B * a.Tq * a.H == 0) return;
        var l = lse ?? output;
        if (a.D == 64) RunForward<HeadDim64>(dc, q, k, v, output, l, dMask, a);
        else if (a.D == 128) RunForward<HeadDim128>(dc, q, k, v, output, l, dMask, a);
        else RunForward<AnyHeadDim>(dc, q, k, v, output, l, dMask, a);
    }

    /// <summary>Forward from bf16 q, k, v: the CUDA C++ kernels' _bf16in builds read them as they are where Forward would take
    /// the PTX route; elsewhere they are widened into the arena for the f32 kernels (the values any route stages).</summary>
    public static void ForwardFromBf16(DeviceContext dc, ArrayView<ushort> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<float> output, ArrayView<float>? lse,
        ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, AttentionDims a)
    {
        if (dc.PtxAttention is { } ptx && (a.D == 64 || a.D == 128))
        {
            PtxForward(dc, ptx, q, k, v, output, lse, mask, segments, a);
            return;
        }
        long qCount = (long)a.B * a.Tq * a.H * a.D, kvCount = (long)a.B * a.S * a.Hkv * a.D;
        Forward(dc, WidenBf16.Run(dc, q, qCount), WidenBf16.Run(dc, k, kvCount), WidenBf16.Run(dc, v, kvCount), output, lse, mask, segments, a);
    }

    /// <summary>Forward through the CUDA C++ kernel (Temper.Kernels.Cuda.CudaAttention: q, k, v and P rounded to bf16
    /// for tensor cores; q, k, v f32, or bf16 bits as ushort) on the accelerator's own stream, in order with the ILGPU kernels around it.</summary>
    private static void PtxForward<T>(DeviceContext dc, Temper.Kernels.Cuda.CudaAttention ptx, ArrayView<T> q, ArrayView<T> k, ArrayView<T> v,
        ArrayView<float> output, ArrayView<float>? lse, ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, AttentionDims a) where T : unmanaged
    {
        using var dq = Gemm.Borrow(dc, q);
        using var dk = Gemm.Borrow(dc, k);
        using var dv = Gemm.Borrow(dc, v);
        using var dOut = Gemm.Borrow(dc, output);
        using var dLse = lse is { } l ? Gemm.Borrow(dc, l) : null;
        using var dMask = mask.IsEmpty ? null : Gemm.Borrow(dc, dc.Arena.Upload(mask));
        using var dSeg = segments.IsEmpty ? null : Gemm.Borrow(dc, dc.Arena.Upload(segments));
        ptx.Forward(dq, dk, dv, dOut, dLse, dMask, dSeg, new(a.B, a.Tq, a.H, a.S, a.Hkv, a.D, a.KvLength, a.QueryOffset, a.Scale),
            bf16Inputs: typeof(T) == typeof(ushort));
    }

    /// <summary>dq, dk, dv (overwritten). output and lse are forward's with these args when lse is given; without it forward runs again into scratch.</summary>
    public static void Backward(DeviceContext dc, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> output, ArrayView<float>? lse,
        ArrayView<float> dOut, ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, AttentionDims a)
    {
        if (dc.PtxAttention is { } ptx && (a.D == 64 || a.D == 128)) // the route Forward took (see there)
        {
            PtxBackward(dc, ptx, q, k, v, output, lse, dOut, dq, dk, dv, mask, segments, a);
            return;
        }
        var dMask = UploadMasks(dc, mask, segments, ref a);
        if (a.D == 64) RunBackward<HeadDim64>(dc, q, k, v, output, lse, dOut, dq, dk, dv, dMask, a);
        else if (a.D == 128) RunBackward<HeadDim128>(dc, q, k, v, output, lse, dOut, dq, dk, dv, dMask, a);
        else RunBackward<AnyHeadDim>(dc, q, k, v, output, lse, dOut, dq, dk, dv, dMask, a);
    }

    /// <summary>Backward from bf16 q, k, v: the CUDA C++ kernels' _bf16in builds read them as they are where Backward would take
    /// the PTX route; elsewhere they are widened into the arena for the f32 kernels (as ForwardFromBf16).</summary>
    public static void BackwardFromBf16(DeviceContext dc, ArrayView<ushort> q, ArrayView<ushort> k, ArrayView<ushort> v, ArrayView<float> output, ArrayView<float>? lse,
        ArrayView<float> dOut, ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, AttentionDims a)
    {
        if (dc.PtxAttention is { } ptx && (a.D == 64 || a.D == 128))
        {
            PtxBackward(dc, ptx, q, k, v, output, lse, dOut, dq, dk, dv, mask, segments, a);
            return;
        }
        long qCount = (long)a.B * a.Tq * a.H * a.D, kvCount = (long)a.B * a.S * a.Hkv * a.D;
        Backward(dc, WidenBf16.Run(dc, q, qCount), WidenBf16.Run(dc, k, kvCount), WidenBf16.Run(dc, v, kvCount), output, lse, dOut, dq, dk, dv, mask, segments, a);
    }

    /// <summary>Backward through the CUDA C++ kernels (CudaAttention.Backward: q, k, v, dO, P and dS rounded to bf16) on the
    /// accelerator's stream; without lse the PTX forward runs first into scratch, as RunBackward does with its own.</summary>
    private static void PtxBackward<T>(DeviceContext dc, Temper.Kernels.Cuda.CudaAttention ptx, ArrayView<T> q, ArrayView<T> k, ArrayView<T> v,
        ArrayView<float> output, ArrayView<float>? lse, ArrayView<float> dOut, ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv,
        ReadOnlySpan<int> mask, ReadOnlySpan<int> segments, AttentionDims a) where T : unmanaged
    {
        long rows = (long)a.B * a.Tq * a.H;
        if (!lse.HasValue)
        {
            output = dc.Arena.Take<float>(rows * a.D);
            lse = dc.Arena.Take<float>(rows);
            PtxForward(dc, ptx, q, k, v, output, lse, mask, segments, a);
        }
        using var gq = Gemm.Borrow(dc, q);
        using var gk = Gemm.Borrow(dc, k);
        using var gv = Gemm.Borrow(dc, v);
        using var gOut = Gemm.Borrow(dc, output);
        using var gLse = Gemm.Borrow(dc, lse.Value);
        using var gdOut = Gemm.Borrow(dc, dOut);
        using var gdq = Gemm.Borrow(dc, dq);
        using var gdk = Gemm.Borrow(dc, dk);
        using var gdv = Gemm.Borrow(dc, dv);
        using var gDelta = Gemm.Borrow(dc, dc.Arena.Take<float>(rows));
        using var gMask = mask.IsEmpty ? null : Gemm.Borrow(dc, dc.Arena.Upload(mask));
        using var gSeg = segments.IsEmpty ? null : Gemm.Borrow(dc, dc.Arena.Upload(segments));
        ptx.Backward(gq, gk, gv, gOut, gLse, gdOut, gdq, gdk, gdv, gDelta, gMask, gSeg, new(a.B, a.Tq, a.H, a.S, a.Hkv, a.D, a.KvLength, a.QueryOffset, a.Scale),
            bf16Inputs: typeof(T) == typeof(ushort));
    }
}
