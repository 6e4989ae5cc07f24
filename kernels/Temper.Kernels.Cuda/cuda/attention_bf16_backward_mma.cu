// attention_bf16_backward_mma.cu: the attention backward's two big kernels for D = 64 with the products' operands
// and results in registers, on mma.sync m16n8k16 (cuda/ptx_ops.cuh), where attention_bf16_backward.cu's WMMA
// kernels pass every product through a shared-memory f32 tile. The contract of those kernels, argument for
// argument (its delta kernel runs first, as before):
//   attention_bf16_mma_backward_dq_d64    one block of 4 warps per (b, h, 64 queries), a warp 16 query rows;
//       per key tile its rows see: S = Q K^T, p = exp2(s scale log2 e - lse log2 e) where visible (else 0),
//       dP = dO V^T, dS = p (dP - delta) as bf16, dQ += dS K; dq = scale dQ (0 for a query that sees no key).
//   attention_bf16_mma_backward_dkdv_d64  one block of 4 warps per (b, kv head, 64 keys), a warp 16 keys, over the
//       query heads of the kv head and the 64-query tiles that can see the keys: S^T = K Q^T, p as above,
//       dV += P^T dO (P as bf16), dP^T = V dO^T, dS^T as bf16, dK += dS^T Q; dk = scale dK, dv = dV; rows past
//       KvLength (and keys no query sees) get 0. Every one of the S rows is written.
// Rounding as there: q, k, v and dO rounded to bf16 as they are staged, P and dS to bf16 for their products, p and
// dS computed in f32 (exp2f, as the WMMA kernels), sums f32.
// Per warp: its 16 rows of the resident operand as A fragments, loaded once by ldmatrix (dq: Q and dO; dk/dv: K
// and V); the products against the staged tile's 64 rows as 8 m16n8 accumulators (S or S^T, and dP or dP^T), whose
// C layout turns into the A fragments of the next product (two m16n8 tiles are one m16n8k16 A: the forward's P V
// trick), with B from the tile by ldmatrix (non-transposed where its rows are B's columns, .trans where they are
// B's k). A lane holds rows g = lane / 4 and g + 8 and columns 8 n + 2 (lane % 4) + {0, 1}. Accumulators: dq 32
// floats, dk and dv 64. Tiles are staged by attention_common.cuh's stage_rows (f32 -> bf16, rows padded to D + 8)
// between two barriers, as in the WMMA kernels; a warp whose rows all precede the tile (causal) skips its products.
// Shared memory (dynamic): Q, dO, K, V tiles bf16 [64][72], then per query position, segment, lse, delta and per key
// mask flag and segment: 38,400 bytes (CudaAttention.MmaBackwardSharedBytes).
// ..._bf16in: both on q, k and v given as bf16 bits, staged as they are (the f32 kernels' bits for the same values).
// Checked on the CPU by the CUDA emulator and on a GPU by CudaAttentionBackwardChecks (both kernel sets);
// opt-in (TEMPER_ATTENTION_BACKWARD_MMA=1) until a GPU has run them.
#include "attention_common.cuh"
#include "attention_backward_common.cuh"
#include "ptx_ops.cuh"

namespace {
constexpr int D = 64, LD = D + 8, KD = D / 16, NT = 64 / 8, NO = D / 8;
constexpr int Q_AT = 0, DO_AT = Q_AT + BQ * LD * 2, K_AT = DO_AT + BQ * LD * 2, V_AT = K_AT + BKV * LD * 2;
constexpr int Q_POS = V_AT + BKV * LD * 2, Q_SEG = Q_POS + BQ * 4, ROW_LSE = Q_SEG + BQ * 4, ROW_DELTA = ROW_LSE + BQ * 4;
constexpr int KEY_OK = ROW_DELTA + BQ * 4, KEY_SEG = KEY_OK + BKV * 4, BYTES = KEY_SEG + BKV * 4;
static_assert(BYTES == 38400, "CudaAttention.MmaBackwardSharedBytes knows this size");

struct Smem
{
    __nv_bfloat16 *sQ, *sDO, *sK, *sV;
    int *qPos, *qSeg;
    float *rowLse, *rowDelta;
    int *keyOk, *keySeg;
};

__device__ __forceinline__ Smem smem_of(unsigned char* smem)
{
    return {reinterpret_cast<__nv_bfloat16*>(smem + Q_AT), reinterpret_cast<__nv_bfloat16*>(smem + DO_AT),
        reinterpret_cast<__nv_bfloat16*>(smem + K_AT), reinterpret_cast<__nv_bfloat16*>(smem + V_AT),
        reinterpret_cast<int*>(smem + Q_POS), reinterpret_cast<int*>(smem + Q_SEG), reinterpret_cast<float*>(smem + ROW_LSE),
        reinterpret_cast<float*>(smem + ROW_DELTA), reinterpret_cast<int*>(smem + KEY_OK), reinterpret_cast<int*>(smem + KEY_SEG)};
}

// The A fragments of rows row0 .. row0 + 15 of a bf16 [.][LD] tile, all D columns (16 a fragment).
__device__ __forceinline__ void load_rows_a(uint32_t f[KD][4], const __nv_bfloat16* tile, int row0)
{
    const int lane = threadIdx.x % 32;
    const __nv_bfloat16* row = tile + (row0 + lane % 8 + (lane / 8 % 2) * 8) * LD + (lane / 16) * 8;
#pragma unroll
    for (int kk = 0; kk < KD; kk++) ldmatrix_x4(f[kk], row + kk * 16);
}

// acc (16 x 64) = A T^T: the 64 columns are the rows of a bf16 [64][LD] tile, summed over D (S = Q K^T's shape).
__device__ __forceinline__ void times_rows_t(float acc[NT][4], const uint32_t a[KD][4], const __nv_bfloat16* tile)
{
    const int lane = threadIdx.x % 32;
    const __nv_bfloat16* rows = tile + ((lane / 16) * 8 + lane % 8) * LD + (lane / 8 % 2) * 8;
#pragma unroll
    for (int n = 0; n < NT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++)
#pragma unroll
        for (int np = 0; np < NT / 2; np++)
        {
            uint32_t b[4];
            ldmatrix_x4(b, rows + np * 16 * LD + kk * 16);
            mma_bf16_16816(acc[2 * np], a[kk], b);
            mma_bf16_16816(acc[2 * np + 1], a[kk], b + 2);
        }
}

// acc (16 x D) += P T for P (16 x 64) in C layout (rounded to bf16 here) and T the 64 rows of a bf16 [64][LD] tile.
__device__ __forceinline__ void add_times_rows(float acc[NO][4], const float p[NT][4], const __nv_bfloat16* tile)
{
    const int lane = threadIdx.x % 32;
    const __nv_bfloat16* rows = tile + (lane / 8 % 2 * 8 + lane % 8) * LD + (lane / 16) * 8;
#pragma unroll
    for (int kk = 0; kk < 64 / 16; kk++)
    {
        const uint32_t pa[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
            pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
        for (int dp = 0; dp < D / 16; dp++)
        {
            uint32_t b[4];
            ldmatrix_x4_trans(b, rows + kk * 16 * LD + dp * 16);
            mma_bf16_16816(acc[2 * dp], pa, b);
            mma_bf16_16816(acc[2 * dp + 1], pa, b + 2);
        }
    }
}

// Rows row0 + g (+ 8) of dst ([.][rowStride] f32), those below rows, = factor acc (C layout, D columns).
__device__ __forceinline__ void store_acc(float* __restrict__ dst, long rowStride, int row0, int rows, const float acc[NO][4], float factor)
{
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const bool pairs = ((uintptr_t)dst & 7) == 0 && rowStride % 2 == 0;
#pragma unroll
    for (int r = 0; r < 2; r++)
    {
        const int i = row0 + g + 8 * r;
        if (i >= rows) continue;
        float* o = dst + i * rowStride + 2 * t;
#pragma unroll
        for (int n = 0; n < NO; n++)
        {
            float x0 = factor * acc[n][2 * r], x1 = factor * acc[n][2 * r + 1];
            if (pairs) *reinterpret_cast<float2*>(o + 8 * n) = make_float2(x0, x1);
            else o[8 * n] = x0, o[8 * n + 1] = x1;
        }
    }
}

__device__ __forceinline__ void zero(float acc[NO][4])
{
#pragma unroll
    for (int n = 0; n < NO; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
}
} // namespace

#define MMA_DQ_PARAMS(T)                                                                                                            \
    const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v, const float *__restrict__ dOut,                     \
        const float *__restrict__ lse, const float *__restrict__ delta, float *__restrict__ dq, const int *__restrict__ mask,      \
        const int *__restrict__ segments, int batch, int tq, int heads, int s, int kvHeads, int kvLength, int queryOffset, float scale, \
        int sharedBytes

template <class T>
__device__ __forceinline__ void mma_backward_dq(MMA_DQ_PARAMS(T))
{
    TEMPER_DYNAMIC_SHARED(unsigned char, smem);
    if (sharedBytes < BYTES) __trap(); // the launcher's size and this layout disagree
    const auto [sQ, sDO, sK, sV, qPos, qSeg, rowLse, rowDelta, keyOk, keySeg] = smem_of(smem);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int bhCount = batch * heads, tiles = (tq + BQ - 1) / BQ;
    const int tile = tiles - 1 - (int)(blockIdx.x / bhCount), bh = blockIdx.x % bhCount; // the most keys first
    const int b = bh / heads, h = bh % heads, kh = h / (heads / kvHeads);
    const int i0 = tile * BQ, rows = min(BQ, tq - i0);
    const long qRow = (long)heads * D, kRow = (long)kvHeads * D, qOffset = ((long)(b * tq + i0) * heads + h) * D;
    const long kvOffset = ((long)b * s * kvHeads + kh) * D;
    const bool vec = rows_aligned(q) && rows_aligned(k) && rows_aligned(v) && rows_aligned(dOut);

    stage_query_tile<D>(sQ, sDO, qPos, qSeg, rowLse, rowDelta, q, dOut, lse, delta, segments, qOffset, qRow, rows, b, h, heads, tq, i0, queryOffset, kvLength, vec);
    __syncthreads();
    uint32_t qf[KD][4], df[KD][4]; // the warp's 16 rows of Q and dO
    load_rows_a(qf, sQ, warp * 16);
    load_rows_a(df, sDO, warp * 16);
    int pos[2], seg[2];
    float lse2[2], dl[2];
#pragma unroll
    for (int r = 0; r < 2; r++)
    {
        const int i = warp * 16 + g + 8 * r;
        pos[r] = qPos[i], seg[r] = qSeg[i], lse2[r] = rowLse[i], dl[r] = rowDelta[i];
    }
    // The warp's last query position (-1 when it has no rows): key tiles past it are seen by none of its rows.
    const int warpLast = warp * 16 < rows ? queryOffset + i0 + min(warp * 16 + 15, rows - 1) : -1;

    float dqa[NO][4]; // dQ / scale
    zero(dqa);
    const float scale2 = scale * LOG2E;
    const int keyEnd = min(kvLength, queryOffset + i0 + rows);
    for (int j0 = 0; j0 < keyEnd; j0 += BKV)
    {
        __syncthreads(); // the previous tile's readers are done
        stage_key_tile<D>(sK, sV, keyOk, keySeg, k, v, kvOffset, kRow, j0, kvLength, mask, segments, b, vec);
        __syncthreads();
        if (j0 > warpLast) continue; // warp-uniform; no block barrier before the next tile's

        float sp[NT][4]; // S, then p, then dS
        times_rows_t(sp, qf, sK);
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++)
            {
                const int c = 8 * n + 2 * t + (e & 1), r = e >> 1;
                const bool visible = (keyOk[c] != 0) & (j0 + c <= pos[r]) & (keySeg[c] == seg[r]);
                sp[n][e] = visible ? exp2f(sp[n][e] * scale2 - lse2[r]) : 0.0f; // a select: lse -inf rows give 0, not NaN
            }
        float dp[NT][4];
        times_rows_t(dp, df, sV); // dP = dO V^T
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) sp[n][e] *= dp[n][e] - dl[e >> 1];
        add_times_rows(dqa, sp, sK); // dQ += dS K
    }
    store_acc(dq + qOffset, qRow, warp * 16, rows, dqa, scale);
}

#define MMA_DKDV_PARAMS(T)                                                                                                          \
    const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v, const float *__restrict__ dOut,                     \
        const float *__restrict__ lse, const float *__restrict__ delta, float *__restrict__ dk, float *__restrict__ dv,             \
        const int *__restrict__ mask, const int *__restrict__ segments, int batch, int tq, int heads, int s, int kvHeads, int kvLength, \
        int queryOffset, float scale, int sharedBytes

template <class T>
__device__ __forceinline__ void mma_backward_dkdv(MMA_DKDV_PARAMS(T))
{
    TEMPER_DYNAMIC_SHARED(unsigned char, smem);
    if (sharedBytes < BYTES) __trap();
    const auto [sQ, sDO, sK, sV, qPos, qSeg, rowLse, rowDelta, keyOk, keySeg] = smem_of(smem);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int bkCount = batch * kvHeads, group = heads / kvHeads;
    const int tile = (int)(blockIdx.x / bkCount), bk = blockIdx.x % bkCount; // the first keys (seen by the most queries) first
    const int b = bk / kvHeads, kh = bk % kvHeads;
    const int j0 = tile * BKV, rowsOut = min(BKV, s - j0), keys = max(0, min(BKV, kvLength - j0));
    const long qRow = (long)heads * D, kRow = (long)kvHeads * D, kvOffset = ((long)b * s * kvHeads + kh) * D, kOffset = kvOffset + j0 * kRow;
    const bool vec = rows_aligned(q) && rows_aligned(k) && rows_aligned(v) && rows_aligned(dOut);

    stage_key_tile<D>(sK, sV, keyOk, keySeg, k, v, kvOffset, kRow, j0, kvLength, mask, segments, b, vec); // zero rows and flags past KvLength
    __syncthreads();
    uint32_t kf[KD][4], vf[KD][4]; // the warp's 16 keys of K and V
    load_rows_a(kf, sK, warp * 16);
    load_rows_a(vf, sV, warp * 16);
    bool ok[2];
    int kpos[2], kseg[2];
#pragma unroll
    for (int r = 0; r < 2; r++)
    {
        const int j = warp * 16 + g + 8 * r;
        ok[r] = keyOk[j] != 0, kpos[r] = j0 + j, kseg[r] = keySeg[j];
    }
    const int warpFirst = j0 + warp * 16; // the warp's first key position
    const bool warpHasKeys = warp * 16 < keys;

    float dK[NO][4], dV[NO][4]; // dK / scale
    zero(dK);
    zero(dV);
    const float scale2 = scale * LOG2E;
    // Query i sees key j only when QueryOffset + i >= j: the queries before j0 - QueryOffset see none of the tile.
    const int firstQuery = keys > 0 ? max(0, j0 - queryOffset) : tq;
    for (int hg = 0; hg < group; hg++)
    {
        const int h = kh * group + hg;
        for (int i0 = firstQuery / BQ * BQ; i0 < tq; i0 += BQ)
        {
            const int rows = min(BQ, tq - i0);
            const long qOffset = ((long)(b * tq + i0) * heads + h) * D;
            __syncthreads(); // the previous tile's readers are done (and, the first time, the key fragments are loaded)
            stage_query_tile<D>(sQ, sDO, qPos, qSeg, rowLse, rowDelta, q, dOut, lse, delta, segments, qOffset, qRow, rows, b, h, heads, tq, i0, queryOffset, kvLength, vec);
            __syncthreads();
            if (!warpHasKeys || queryOffset + i0 + rows - 1 < warpFirst) continue; // warp-uniform: no query of the tile sees its keys

            float sp[NT][4]; // S^T (keys x queries), then p, then dS^T
            times_rows_t(sp, kf, sQ);
#pragma unroll
            for (int n = 0; n < NT; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    const int c = 8 * n + 2 * t + (e & 1), r = e >> 1;
                    const bool visible = ok[r] & (kpos[r] <= qPos[c]) & (kseg[r] == qSeg[c]);
                    sp[n][e] = visible ? exp2f(sp[n][e] * scale2 - rowLse[c]) : 0.0f;
                }
            add_times_rows(dV, sp, sDO); // dV += P^T dO
            float dp[NT][4];
            times_rows_t(dp, vf, sDO); // dP^T = V dO^T
#pragma unroll
            for (int n = 0; n < NT; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) sp[n][e] *= dp[n][e] - rowDelta[8 * n + 2 * t + (e & 1)];
            add_times_rows(dK, sp, sQ); // dK += dS^T Q
        }
    }
    store_acc(dk + kOffset, kRow, warp * 16, rowsOut, dK, scale);
    store_acc(dv + kOffset, kRow, warp * 16, rowsOut, dV, 1.0f);
}

#define MMA_DQ_ARGS q, k, v, dOut, lse, delta, dq, mask, segments, batch, tq, heads, s, kvHeads, kvLength, queryOffset, scale, sharedBytes
#define MMA_DKDV_ARGS q, k, v, dOut, lse, delta, dk, dv, mask, segments, batch, tq, heads, s, kvHeads, kvLength, queryOffset, scale, sharedBytes

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_mma_backward_dq_d64(MMA_DQ_PARAMS(float))
{
    mma_backward_dq<float>(MMA_DQ_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_mma_backward_dkdv_d64(MMA_DKDV_PARAMS(float))
{
    mma_backward_dkdv<float>(MMA_DKDV_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_mma_backward_dq_d64_bf16in(MMA_DQ_PARAMS(unsigned short))
{
    mma_backward_dq<unsigned short>(MMA_DQ_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_mma_backward_dkdv_d64_bf16in(MMA_DKDV_PARAMS(unsigned short))
{
    mma_backward_dkdv<unsigned short>(MMA_DKDV_ARGS);
}
