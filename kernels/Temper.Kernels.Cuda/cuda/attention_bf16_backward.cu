// attention_bf16_backward.cu: the backward of attention_bf16.cu's causal GQA attention (FlashAttention-2) on
// tensor cores, bf16 compute mode. The shapes and visibility rules of the forward: q, dOut, out, dq
// [B,Tq,H,D]; k, v, dk, dv [B,S,Hkv,D] (the first KvLength rows used); lse, delta [B,H,Tq]; mask and
// segments [B,KvLength] int, optional; all f32 but the ints. Three kernels, no atomics, launched in this
// order by CudaAttention.Backward:
//   attention_bf16_backward_delta          delta = rowsum(bf16(dO) * out), one warp per query row.
//   attention_bf16_backward_dq_d64/_d128   one block of 4 warps per (b, h, 64 queries), the forward's tiling:
//       per key tile the rows see, S = Q K^T (exactly the forward's products), p = exp2(s scale log2 e -
//       lse log2 e) where visible (else 0), dP = dO V^T, dS = p (dP - delta) as bf16, dQ += dS K;
//       dq = scale dQ (0 for a query that sees no key).
//   attention_bf16_backward_dkdv_d64/_d128 one block of 4 warps per (b, kv head, 64 keys), each warp 16 keys,
//       over the query heads of the kv head and the 64-query tiles that can see the keys: S^T = K Q^T (the
//       forward's products transposed: equal but for the tensor core's order of summing a fragment), p as
//       above, dV += P^T dO (P as bf16), dP^T = V dO^T, dS^T as bf16, dK += dS^T Q; dk = scale dK, dv = dV;
//       rows past KvLength (and keys no query sees) get 0. Every one of the S rows is written.
//   ..._bf16in: the dq and dk/dv kernels on q, k and v given as bf16 bits (dOut, out, lse f32), staged as they are: the
//       bits of the f32 kernels for the same (bf16-exact) values.
// Rounding is the forward's: q, k, v and dO rounded to bf16 as they are staged into shared memory, P and dS
// rounded to bf16 for their products (WMMA m16n16k16, f32 sums), p and dS themselves computed in f32.
// Shared memory (dynamic, Layout below: 63.5 KB for D = 64, 95.5 KB for D = 128, the same for both kernels):
// Q, dO, K and V tiles as bf16 [64][D + 8], per warp a 16 x 64 f32 product tile and a 16 x 64 bf16 P/dS tile,
// and the per-row lse, delta, positions, segments and key flags. WMMA's register layout is opaque, so the
// elementwise steps pass the products through the f32 tile (two lanes a row). A warp takes its 64 columns
// (keys in dq, queries in dk/dv) N at a time, N = 32 in dq and 16 in dk/dv (whose dK and dV accumulators hold
// 2 D/16 fragments): fewer live registers, the same sums in the same order.
// Registers (ptxas 11.8, sm_80 / sm_90), no spills: dq D = 64 168 / 168, D = 128 216 / 222; dk/dv D = 64
// 168 / 168, D = 128 248 / 252; delta 32. With shared memory: 3 blocks of 4 warps per SM for D = 64 and 2
// for D = 128 on an H100 (2 and 1 on an A100).
// The semantics of kernels/Temper.Kernels.Ilgpu/Ops/Attention.cs's backward (its scalar reference:
// kernels/Temper.Kernels.Cpu/Reference/AttentionReference.cs). Checked on the CPU by the CUDA emulator (emu/)
// and on a GPU by CudaAttentionBackwardChecks.
#include "attention_common.cuh"
#include "attention_backward_common.cuh"

namespace {
// Byte offsets in dynamic shared memory; every WMMA pointer stays 32-byte aligned.
template <int D> struct Layout
{
    static constexpr int LD = D + 8; // bf16 row stride of the Q, dO, K, V tiles
    static constexpr int Q = 0;
    static constexpr int DO = Q + BQ * LD * 2;
    static constexpr int K = DO + BQ * LD * 2;
    static constexpr int V = K + BKV * LD * 2;
    static constexpr int S = V + BKV * LD * 2;         // f32 [WARPS][16][LDS]
    static constexpr int P = S + WARPS * 16 * LDS * 4; // bf16 [WARPS][16][LDP]
    static constexpr int ROW_LSE = P + WARPS * 16 * LDP * 2, ROW_DELTA = ROW_LSE + BQ * 4;
    static constexpr int Q_POS = ROW_DELTA + BQ * 4, Q_SEG = Q_POS + BQ * 4;
    static constexpr int KEY_OK = Q_SEG + BQ * 4, KEY_SEG = KEY_OK + BKV * 4;
    static constexpr int BYTES = KEY_SEG + BKV * 4; // CudaAttention.BackwardSharedBytes says the same
};

static_assert(Layout<64>::BYTES == 65024 && Layout<128>::BYTES == 97792, "CudaAttention.BackwardSharedBytes knows these sizes");

// Both kernels' views of dynamic shared memory (Layout): the Q, dO, K, V tiles, this warp's f32 product tile
// and bf16 P/dS tile, the per-row lse (log2 e units) and delta, positions, segments and key flags.
template <int D> struct Tiles
{
    __nv_bfloat16 *sQ, *sDO, *sK, *sV;
    float *rowLse, *rowDelta;
    int *qPos, *qSeg, *keyOk, *keySeg;
    float* myS;
    __nv_bfloat16* myP;
};

template <int D> __device__ __forceinline__ Tiles<D> tiles_of(unsigned char* smem, int warp)
{
    using L = Layout<D>;
    return {reinterpret_cast<__nv_bfloat16*>(smem + L::Q), reinterpret_cast<__nv_bfloat16*>(smem + L::DO),
        reinterpret_cast<__nv_bfloat16*>(smem + L::K), reinterpret_cast<__nv_bfloat16*>(smem + L::V),
        reinterpret_cast<float*>(smem + L::ROW_LSE), reinterpret_cast<float*>(smem + L::ROW_DELTA),
        reinterpret_cast<int*>(smem + L::Q_POS), reinterpret_cast<int*>(smem + L::Q_SEG),
        reinterpret_cast<int*>(smem + L::KEY_OK), reinterpret_cast<int*>(smem + L::KEY_SEG),
        reinterpret_cast<float*>(smem + L::S) + warp * 16 * LDS, reinterpret_cast<__nv_bfloat16*>(smem + L::P) + warp * 16 * LDP};
}

// acc (16 x D) += T B for T the warp's 16 x N bf16 tile (row stride LDP) and B N rows of a bf16 [.][LD] tile.
template <int D, int N>
__device__ __forceinline__ void accumulate_tile_times_rows(FragAcc* acc, const __nv_bfloat16* t, const __nv_bfloat16* b)
{
    constexpr int LD = D + 8;
#pragma unroll
    for (int kk = 0; kk < N / 16; kk++)
    {
        FragA fa;
        wmma::load_matrix_sync(fa, t + kk * 16, LDP);
#pragma unroll
        for (int n = 0; n < D / 16; n++)
        {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
            wmma::load_matrix_sync(fb, b + kk * 16 * LD + n * 16, LD);
            wmma::mma_sync(acc[n], fa, fb, acc[n]);
        }
    }
}

// dst row (first + row) of [.][rowStride] f32, for the warp's rows < rows = factor acc, through the warp's f32 tile.
template <int D>
__device__ __forceinline__ void store_rows(float* __restrict__ dst, long rowStride, int first, int rows, FragAcc* acc, float factor, float* tile)
{
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int n0 = 0; n0 < D / 16; n0 += KF)
    {
#pragma unroll
        for (int n = 0; n < KF; n++) wmma::store_matrix_sync(tile + n * 16, acc[n0 + n], LDS, wmma::mem_row_major);
        __syncwarp();
#pragma unroll
        for (int row = 0; row < 16; row++)
        {
            if (first + row >= rows) break;
            float* o = dst + (first + row) * rowStride + n0 * 16;
            o[lane] = tile[row * LDS + lane] * factor;
            o[lane + 32] = tile[row * LDS + lane + 32] * factor;
        }
        __syncwarp();
    }
}
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) attention_bf16_backward_delta(
    const float* __restrict__ out, const float* __restrict__ dOut, float* __restrict__ delta, int batch, int tq, int heads, int d)
{
    const long row = (long)blockIdx.x * WARPS + threadIdx.x / 32; // of [B,Tq,H], one a warp
    const int lane = threadIdx.x % 32;
    if (row >= (long)batch * tq * heads) return; // the whole warp
    const float* o = out + row * d;
    const float* g = dOut + row * d;
    float sum = 0.0f;
    for (int c = lane; c < d; c += 32) sum += __bfloat162float(__float2bfloat16(g[c])) * o[c]; // dO as dP = dO V^T sees it
#pragma unroll
    for (int x = 16; x > 0; x /= 2) sum += __shfl_xor_sync(FULL, sum, x);
    const int h = (int)(row % heads);
    const long bi = row / heads, i = bi % tq, b = bi / tq;
    if (lane == 0) delta[(b * heads + h) * tq + i] = sum;
}

template <int D, int N, class T>
__device__ __forceinline__ void attention_backward_dq(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const float* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ delta, float* __restrict__ dq, const int* __restrict__ mask,
    const int* __restrict__ segments, int batch, int tq, int heads, int s, int kvHeads, int kvLength, int queryOffset, float scale, int sharedBytes)
{
    using L = Layout<D>;
    constexpr int LD = L::LD, DF = D / 16;
    TEMPER_DYNAMIC_SHARED(unsigned char, smem);
    if (sharedBytes < L::BYTES) __trap(); // the launcher's size and this layout disagree
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int r = lane / 2, half = lane % 2, wr = warp * WROWS + r; // this lane's row (two lanes a row)
    const auto [sQ, sDO, sK, sV, rowLse, rowDelta, qPos, qSeg, keyOk, keySeg, myS, myP] = tiles_of<D>(smem, warp);

    const int bhCount = batch * heads, tiles = (tq + BQ - 1) / BQ;
    const int tile = tiles - 1 - (int)(blockIdx.x / bhCount), bh = blockIdx.x % bhCount; // the most keys first
    const int b = bh / heads, h = bh % heads, kh = h / (heads / kvHeads);
    const int i0 = tile * BQ, rows = min(BQ, tq - i0);
    const long qRow = (long)heads * D, kRow = (long)kvHeads * D, qOffset = ((long)(b * tq + i0) * heads + h) * D;
    const long kvOffset = ((long)b * s * kvHeads + kh) * D;
    const bool vec = rows_aligned(q) && rows_aligned(k) && rows_aligned(v) && rows_aligned(dOut);

    stage_query_tile<D>(sQ, sDO, qPos, qSeg, rowLse, rowDelta, q, dOut, lse, delta, segments, qOffset, qRow, rows, b, h, heads, tq, i0, queryOffset, kvLength, vec);

    FragAcc acc[DF]; // dQ / scale for the warp's 16 rows
#pragma unroll
    for (int n = 0; n < DF; n++) wmma::fill_fragment(acc[n], 0.0f);
    const float scale2 = scale * LOG2E;
    const int keyEnd = min(kvLength, queryOffset + i0 + rows);

    for (int j0 = 0; j0 < keyEnd; j0 += BKV)
    {
        __syncthreads(); // the previous tile's readers are done (and, the first time, the row info is written)
        stage_key_tile<D>(sK, sV, keyOk, keySeg, k, v, kvOffset, kRow, j0, kvLength, mask, segments, b, vec);
        __syncthreads();

        const int pos = qPos[wr], seg = qSeg[wr];
        if (!warp_sees_tile(keyOk, keySeg, j0, pos, seg, half)) continue; // no block barrier before the next tile's

        // N keys at a time (fewer live registers): S, p, dP, dS, dQ += dS K.
#pragma unroll 1
        for (int c0 = 0; c0 < BKV; c0 += N)
        {
            rows_times_rows_t<D, N>(myS, sQ + warp * WROWS * LD, sK + c0 * LD); // S
            __syncwarp();
            float p[N / 2];
            const float lse2 = rowLse[wr];
#pragma unroll
            for (int t = 0; t < N / 2; t++)
            {
                int c = half + 2 * t, j = c0 + c;
                bool visible = (keyOk[j] != 0) & (j0 + j <= pos) & (keySeg[j] == seg);
                p[t] = visible ? exp2f(myS[r * LDS + c] * scale2 - lse2) : 0.0f; // a select: lse -inf rows give 0, not NaN
            }
            __syncwarp(); // S is read before dP takes its tile
            rows_times_rows_t<D, N>(myS, sDO + warp * WROWS * LD, sV + c0 * LD); // dP
            __syncwarp();
            const float dl = rowDelta[wr];
#pragma unroll
            for (int t = 0; t < N / 2; t++)
            {
                int c = half + 2 * t;
                myP[r * LDP + c] = __float2bfloat16(p[t] * (myS[r * LDS + c] - dl));
            }
            __syncwarp();
            accumulate_tile_times_rows<D, N>(acc, myP, sK + c0 * LD); // dQ += dS K
            __syncwarp(); // dS is read before the next pass writes it
        }
    }
    store_rows<D>(dq + qOffset, qRow, warp * WROWS, rows, acc, scale, myS);
}

template <int D, int N, class T>
__device__ __forceinline__ void attention_backward_dkdv(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const float* __restrict__ dOut,
    const float* __restrict__ lse, const float* __restrict__ delta, float* __restrict__ dk, float* __restrict__ dv, const int* __restrict__ mask,
    const int* __restrict__ segments, int batch, int tq, int heads, int s, int kvHeads, int kvLength, int queryOffset, float scale, int sharedBytes)
{
    using L = Layout<D>;
    constexpr int LD = L::LD, DF = D / 16;
    TEMPER_DYNAMIC_SHARED(unsigned char, smem);
    if (sharedBytes < L::BYTES) __trap();
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int r = lane / 2, half = lane % 2, wk = warp * WROWS + r; // this lane's key row (two lanes a row)
    const auto [sQ, sDO, sK, sV, rowLse, rowDelta, qPos, qSeg, keyOk, keySeg, myS, myP] = tiles_of<D>(smem, warp);

    const int bkCount = batch * kvHeads, group = heads / kvHeads;
    const int tile = (int)(blockIdx.x / bkCount), bk = blockIdx.x % bkCount; // the first keys (seen by the most queries) first
    const int b = bk / kvHeads, kh = bk % kvHeads;
    const int j0 = tile * BKV, rowsOut = min(BKV, s - j0), keys = max(0, min(BKV, kvLength - j0));
    const long qRow = (long)heads * D, kRow = (long)kvHeads * D, kvOffset = ((long)b * s * kvHeads + kh) * D, kOffset = kvOffset + j0 * kRow;
    const bool vec = rows_aligned(q) && rows_aligned(k) && rows_aligned(v) && rows_aligned(dOut);

    stage_key_tile<D>(sK, sV, keyOk, keySeg, k, v, kvOffset, kRow, j0, kvLength, mask, segments, b, vec); // zero rows and flags past KvLength

    FragAcc dK[DF], dV[DF]; // the warp's 16 keys; dK / scale
#pragma unroll
    for (int n = 0; n < DF; n++)
    {
        wmma::fill_fragment(dK[n], 0.0f);
        wmma::fill_fragment(dV[n], 0.0f);
    }
    const float scale2 = scale * LOG2E;
    // Query i sees key j only when QueryOffset + i >= j: the queries before j0 - QueryOffset see none of the tile.
    const int firstQuery = keys > 0 ? max(0, j0 - queryOffset) : tq;

    for (int g = 0; g < group; g++)
    {
        const int h = kh * group + g;
        for (int i0 = firstQuery / BQ * BQ; i0 < tq; i0 += BQ)
        {
            const int rows = min(BQ, tq - i0);
            const long qOffset = ((long)(b * tq + i0) * heads + h) * D;
            __syncthreads(); // the previous tile's readers are done (and, the first time, the key info is written)
            stage_query_tile<D>(sQ, sDO, qPos, qSeg, rowLse, rowDelta, q, dOut, lse, delta, segments, qOffset, qRow, rows, b, h, heads, tq, i0, queryOffset, kvLength, vec);
            __syncthreads();

            const bool ok = keyOk[wk] != 0;
            const int pos = j0 + wk, seg = keySeg[wk];
            bool seen = false;
            for (int c = half; c < BQ && !seen; c += 2) seen = ok & (pos <= qPos[c]) & (seg == qSeg[c]);
            if (!warp_any(seen)) continue; // warp-uniform

            // N queries at a time (fewer live registers): S^T, p, dV += P^T dO, dP^T, dS^T, dK += dS^T Q.
#pragma unroll 1
            for (int c0 = 0; c0 < BQ; c0 += N)
            {
                rows_times_rows_t<D, N>(myS, sK + warp * WROWS * LD, sQ + c0 * LD); // S^T
                __syncwarp();
                float p[N / 2];
#pragma unroll
                for (int t = 0; t < N / 2; t++)
                {
                    int c = half + 2 * t, i = c0 + c;
                    bool visible = ok & (pos <= qPos[i]) & (seg == qSeg[i]);
                    p[t] = visible ? exp2f(myS[r * LDS + c] * scale2 - rowLse[i]) : 0.0f;
                    myP[r * LDP + c] = __float2bfloat16(p[t]);
                }
                __syncwarp(); // P^T is written and S^T read
                accumulate_tile_times_rows<D, N>(dV, myP, sDO + c0 * LD); // dV += P^T dO
                rows_times_rows_t<D, N>(myS, sV + warp * WROWS * LD, sDO + c0 * LD); // dP^T
                __syncwarp(); // dP^T is stored and P^T read by every lane
#pragma unroll
                for (int t = 0; t < N / 2; t++)
                {
                    int c = half + 2 * t;
                    myP[r * LDP + c] = __float2bfloat16(p[t] * (myS[r * LDS + c] - rowDelta[c0 + c]));
                }
                __syncwarp();
                accumulate_tile_times_rows<D, N>(dK, myP, sQ + c0 * LD); // dK += dS^T Q
                __syncwarp(); // dS^T is read before the next pass writes the warp's tiles
            }
        }
    }
    store_rows<D>(dk + kOffset, kRow, warp * WROWS, rowsOut, dK, scale, myS);
    store_rows<D>(dv + kOffset, kRow, warp * WROWS, rowsOut, dV, 1.0f, myS);
}

// The kernels' arguments, q, k and v of type T (float, or unsigned short: bf16 bits for the _bf16in kernels).
#define DQ_PARAMS(T)                                                                                                               \
    const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v, const float *__restrict__ dOut,                     \
        const float *__restrict__ lse, const float *__restrict__ delta, float *__restrict__ dq, const int *__restrict__ mask,      \
        const int *__restrict__ segments, int batch, int tq, int heads, int s, int kvHeads, int kvLength, int queryOffset, float scale, \
        int sharedBytes
#define DQ_ARGS q, k, v, dOut, lse, delta, dq, mask, segments, batch, tq, heads, s, kvHeads, kvLength, queryOffset, scale, sharedBytes
#define DKDV_PARAMS(T)                                                                                                             \
    const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v, const float *__restrict__ dOut,                     \
        const float *__restrict__ lse, const float *__restrict__ delta, float *__restrict__ dk, float *__restrict__ dv,             \
        const int *__restrict__ mask, const int *__restrict__ segments, int batch, int tq, int heads, int s, int kvHeads, int kvLength, \
        int queryOffset, float scale, int sharedBytes
#define DKDV_ARGS q, k, v, dOut, lse, delta, dk, dv, mask, segments, batch, tq, heads, s, kvHeads, kvLength, queryOffset, scale, sharedBytes

extern "C" __global__ void __launch_bounds__(THREADS, 3) attention_bf16_backward_dq_d64(DQ_PARAMS(float))
{
    attention_backward_dq<64, 32, float>(DQ_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_backward_dq_d128(DQ_PARAMS(float))
{
    attention_backward_dq<128, 32, float>(DQ_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 3) attention_bf16_backward_dkdv_d64(DKDV_PARAMS(float))
{
    attention_backward_dkdv<64, 16, float>(DKDV_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_backward_dkdv_d128(DKDV_PARAMS(float))
{
    attention_backward_dkdv<128, 16, float>(DKDV_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 3) attention_bf16_backward_dq_d64_bf16in(DQ_PARAMS(unsigned short))
{
    attention_backward_dq<64, 32, unsigned short>(DQ_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_backward_dq_d128_bf16in(DQ_PARAMS(unsigned short))
{
    attention_backward_dq<128, 32, unsigned short>(DQ_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 3) attention_bf16_backward_dkdv_d64_bf16in(DKDV_PARAMS(unsigned short))
{
    attention_backward_dkdv<64, 16, unsigned short>(DKDV_ARGS);
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_backward_dkdv_d128_bf16in(DKDV_PARAMS(unsigned short))
{
    attention_backward_dkdv<128, 16, unsigned short>(DKDV_ARGS);
}
