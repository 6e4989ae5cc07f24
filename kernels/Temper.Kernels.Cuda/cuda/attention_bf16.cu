// attention_bf16.cu: causal GQA attention forward (FlashAttention-2) on tensor cores, bf16 compute mode.
//   attention_bf16_forward_d64, attention_bf16_forward_d128 (the head dim D as a constant):
//   q[B,Tq,H,D], k/v[B,S,Hkv,D] (the first KvLength rows used) -> out[B,Tq,H,D], lse[B,H,Tq] (optional),
//   all f32 in global memory. Query i of batch b sits at position QueryOffset + i and sees key j when
//   j <= that position, j < KvLength, mask[b,j] != 0 (mask [B,KvLength], optional) and segment[b,j] ==
//   segment[b,position] (segments [B,KvLength], optional: packed rows); head h reads kv head h / (H/Hkv).
//   out = softmax(scale q k^T) v over the visible keys, lse = max + log(sum) (natural log); a query that
//   sees no key gets zeros and lse = -inf. The semantics of kernels/Temper.Kernels.Ilgpu/Ops/Attention.cs
//   (its scalar reference: kernels/Temper.Kernels.Cpu/Reference/AttentionReference.cs).
// q, k, v are rounded to bf16 as they are staged into shared memory; the products run on tensor cores
// (WMMA m16n16k16, bf16 -> f32 sums); the softmax is f32; P is rounded to bf16 for P V (FlashAttention's
// own choice: out differs from an f32 P by ~2^-9 relative per weight).
// Tiling: one block of 4 warps per (b, h, 64 queries); the last query tiles (the most keys) start first.
// Shared memory (dynamic, Layout below: 54.75 KB for D = 64, 78.75 KB for D = 128, so the launcher opts in to
// more than 48 KB) holds the Q tile and one K and V tile of 64 keys as bf16 [64][D + 8] (rows padded by
// 8 against bank conflicts), and per warp a 16 x 64 f32 score tile and its 16 x 64 bf16 P. Per key tile
// up to the causal bound of the block's last query: all threads stage K and V (16-byte loads where the
// pointers allow); each warp owns 16 query rows and skips the tile when none of them sees a key of it
// (causal bound, mask, other segments), else S = Q K^T (4 x D/16 WMMA products) into its score tile,
// then the online softmax, two lanes per row (exp2 of scores pre-scaled by scale log2 e; masked -> -inf):
// running max m and sum l in registers, P = exp2(s - m) as bf16, alpha = exp2(m_old - m) per row. The
// output O (16 x D per warp) stays in D/16 accumulator fragments; when some row's alpha != 1 they pass
// through the score tile 64 columns at a time to be multiplied by alpha row by row (WMMA's register
// layout is opaque), then O += P V (4 x D/16 products). Epilogue: O through the score tile again,
// out = O / l, lse = m ln 2 + log l.
// Registers (ptxas 11.8, sm_80 and sm_90): D = 64 168 (3 blocks of 4 warps per SM), D = 128 254 (2 blocks),
// no spills; shared memory allows 4 and 2 blocks per SM on an H100.
// Checked on the CPU by the CUDA emulator (emu/) and on a GPU by CudaAttentionChecks.
#include "attention_common.cuh"

namespace {
constexpr float LN2 = 0.6931471805599453f;

// Byte offsets in dynamic shared memory; every WMMA pointer stays 32-byte aligned.
template <int D> struct Layout
{
    static constexpr int LD = D + 8; // bf16 row stride of the Q, K, V tiles
    static constexpr int Q = 0;
    static constexpr int K = Q + BQ * LD * 2;
    static constexpr int V = K + BKV * LD * 2;
    static constexpr int S = V + BKV * LD * 2;         // f32 [WARPS][16][LDS]
    static constexpr int P = S + WARPS * 16 * LDS * 4; // bf16 [WARPS][16][LDP]
    static constexpr int ALPHA = P + WARPS * 16 * LDP * 2;
    static constexpr int ROW_M = ALPHA + BQ * 4, ROW_L = ROW_M + BQ * 4;
    static constexpr int Q_POS = ROW_L + BQ * 4, Q_SEG = Q_POS + BQ * 4;
    static constexpr int KEY_OK = Q_SEG + BQ * 4, KEY_SEG = KEY_OK + BKV * 4;
    static constexpr int BYTES = KEY_SEG + BKV * 4; // CudaAttention.SharedBytes says the same
};

static_assert(Layout<64>::BYTES == 56064 && Layout<128>::BYTES == 80640, "CudaAttention.SharedBytes knows these sizes");
} // namespace

template <int D>
__device__ __forceinline__ void attention_forward(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, float* __restrict__ out,
    float* __restrict__ lse, const int* __restrict__ mask, const int* __restrict__ segments, int batch, int tq, int heads,
    int s, int kvHeads, int kvLength, int queryOffset, float scale, int sharedBytes)
{
    using L = Layout<D>;
    constexpr int LD = L::LD, DF = D / 16;
    TEMPER_DYNAMIC_SHARED(unsigned char, smem);
    if (sharedBytes < L::BYTES) __trap(); // the launcher's size and this layout disagree
    __nv_bfloat16* sQ = reinterpret_cast<__nv_bfloat16*>(smem + L::Q);
    __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem + L::K);
    __nv_bfloat16* sV = reinterpret_cast<__nv_bfloat16*>(smem + L::V);
    float* alphas = reinterpret_cast<float*>(smem + L::ALPHA);
    float* rowM = reinterpret_cast<float*>(smem + L::ROW_M);
    float* rowL = reinterpret_cast<float*>(smem + L::ROW_L);
    int* qPos = reinterpret_cast<int*>(smem + L::Q_POS);
    int* qSeg = reinterpret_cast<int*>(smem + L::Q_SEG);
    int* keyOk = reinterpret_cast<int*>(smem + L::KEY_OK);
    int* keySeg = reinterpret_cast<int*>(smem + L::KEY_SEG);

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int r = lane / 2, half = lane % 2, wr = warp * WROWS + r; // this lane's row (two lanes a row)
    float* myS = reinterpret_cast<float*>(smem + L::S) + warp * 16 * LDS;
    __nv_bfloat16* myP = reinterpret_cast<__nv_bfloat16*>(smem + L::P) + warp * 16 * LDP;

    const int bhCount = batch * heads, tiles = (tq + BQ - 1) / BQ;
    const int tile = tiles - 1 - (int)(blockIdx.x / bhCount), bh = blockIdx.x % bhCount;
    const int b = bh / heads, h = bh % heads, kh = h / (heads / kvHeads);
    const int i0 = tile * BQ, rows = min(BQ, tq - i0);
    const long qRow = (long)heads * D, kRow = (long)kvHeads * D;
    const long kvOffset = ((long)b * s * kvHeads + kh) * D;
    const bool vec = aligned16(q) && aligned16(k) && aligned16(v); // rows are then 16-byte aligned (D % 4 == 0)

    stage_rows<D>(sQ, q + ((long)(b * tq + i0) * heads + h) * D, qRow, rows, vec);
    if (tid < BQ)
    {
        int p = queryOffset + i0 + tid;
        bool in = tid < rows;
        qPos[tid] = in ? p : -1;
        qSeg[tid] = in && segments ? segments[(long)b * kvLength + p] : 0;
    }

    FragAcc acc[DF];
#pragma unroll
    for (int n = 0; n < DF; n++) wmma::fill_fragment(acc[n], 0.0f);
    float m = -INFINITY, l = 0.0f; // this lane's row, in units of log2
    const float scale2 = scale * LOG2E;
    const int keyEnd = min(kvLength, queryOffset + i0 + rows); // past the block's last query: nothing visible

    for (int j0 = 0; j0 < keyEnd; j0 += BKV)
    {
        __syncthreads(); // the previous tile's readers are done (and, the first time, qPos and qSeg are written)
        stage_key_tile<D>(sK, sV, keyOk, keySeg, k, v, kvOffset, kRow, j0, kvLength, mask, segments, b, vec);
        __syncthreads();

        const int pos = qPos[wr], seg = qSeg[wr];
        if (!warp_sees_tile(keyOk, keySeg, j0, pos, seg, half)) continue; // no block barrier before the next tile's

        // S = Q K^T for the warp's 16 rows (K^T read as a column-major B).
        rows_times_rows_t<D, BKV>(myS, sQ + warp * WROWS * LD, sK);
        __syncwarp();

        // Online softmax: this lane's columns half, half + 2, ... of row r.
        float x[BKV / 2];
        float tileMax = -INFINITY;
#pragma unroll
        for (int t = 0; t < BKV / 2; t++)
        {
            int c = half + 2 * t;
            bool visible = (keyOk[c] != 0) & (j0 + c <= pos) & (keySeg[c] == seg);
            x[t] = visible ? myS[r * LDS + c] * scale2 : -INFINITY;
            tileMax = fmaxf(tileMax, x[t]);
        }
        tileMax = fmaxf(tileMax, __shfl_xor_sync(FULL, tileMax, 1));
        const float mNew = fmaxf(m, tileMax);
        const float mUse = mNew == -INFINITY ? 0.0f : mNew; // a row that has seen nothing yet: p = 0, O = 0
        const float alpha = m == mNew ? 1.0f : exp2f(m - mUse);
        float sum = 0.0f;
#pragma unroll
        for (int t = 0; t < BKV / 2; t++)
        {
            float p = exp2f(x[t] - mUse);
            myP[r * LDP + half + 2 * t] = __float2bfloat16(p);
            sum += p;
        }
        sum += __shfl_xor_sync(FULL, sum, 1);
        l = l * alpha + sum;
        m = mNew;
        if (half == 0) alphas[wr] = alpha;
        const bool rescale = warp_any(alpha != 1.0f);
        __syncwarp(); // P and alphas are written (and the score tile read) by every lane

        // O *= alpha per row, through the (now free) score tile, 64 columns at a time.
        if (rescale)
        {
#pragma unroll
            for (int n0 = 0; n0 < DF; n0 += KF)
            {
#pragma unroll
                for (int n = 0; n < KF; n++) wmma::store_matrix_sync(myS + n * 16, acc[n0 + n], LDS, wmma::mem_row_major);
                __syncwarp();
#pragma unroll
                for (int row = 0; row < 16; row++)
                {
                    float a = alphas[warp * WROWS + row];
                    myS[row * LDS + lane] *= a;
                    myS[row * LDS + lane + 32] *= a;
                }
                __syncwarp();
#pragma unroll
                for (int n = 0; n < KF; n++) wmma::load_matrix_sync(acc[n0 + n], myS + n * 16, LDS, wmma::mem_row_major);
                __syncwarp();
            }
        }

        // O += P V.
#pragma unroll
        for (int kk = 0; kk < KF; kk++)
        {
            FragA pa;
            wmma::load_matrix_sync(pa, myP + kk * 16, LDP);
#pragma unroll
            for (int n = 0; n < DF; n++)
            {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> vb;
                wmma::load_matrix_sync(vb, sV + kk * 16 * LD + n * 16, LD);
                wmma::mma_sync(acc[n], pa, vb, acc[n]);
            }
        }
        __syncwarp(); // P is read before the next tile's softmax writes it
    }

    // Epilogue: out = O / l (0 for a query that saw nothing), lse = m ln 2 + log l (-inf then).
    if (half == 0)
    {
        rowM[wr] = m;
        rowL[wr] = l;
    }
    __syncwarp();
#pragma unroll
    for (int n0 = 0; n0 < DF; n0 += KF)
    {
#pragma unroll
        for (int n = 0; n < KF; n++) wmma::store_matrix_sync(myS + n * 16, acc[n0 + n], LDS, wmma::mem_row_major);
        __syncwarp();
#pragma unroll
        for (int row = 0; row < 16; row++)
        {
            int i = warp * WROWS + row;
            if (i >= rows) break;
            float sumRow = rowL[i], inv = sumRow > 0.0f ? 1.0f / sumRow : 0.0f;
            float* o = out + ((long)(b * tq + i0 + i) * heads + h) * D + n0 * 16;
            o[lane] = myS[row * LDS + lane] * inv;
            o[lane + 32] = myS[row * LDS + lane + 32] * inv;
        }
        __syncwarp();
    }
    if (lse && half == 0 && wr < rows) lse[((long)b * heads + h) * tq + i0 + wr] = l > 0.0f ? m * LN2 + logf(l) : -INFINITY;
}

extern "C" __global__ void __launch_bounds__(THREADS, 3) attention_bf16_forward_d64(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, float* __restrict__ out,
    float* __restrict__ lse, const int* __restrict__ mask, const int* __restrict__ segments, int batch, int tq, int heads,
    int s, int kvHeads, int kvLength, int queryOffset, float scale, int sharedBytes)
{
    attention_forward<64>(q, k, v, out, lse, mask, segments, batch, tq, heads, s, kvHeads, kvLength, queryOffset, scale, sharedBytes);
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) attention_bf16_forward_d128(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, float* __restrict__ out,
    float* __restrict__ lse, const int* __restrict__ mask, const int* __restrict__ segments, int batch, int tq, int heads,
    int s, int kvHeads, int kvLength, int queryOffset, float scale, int sharedBytes)
{
    attention_forward<128>(q, k, v, out, lse, mask, segments, batch, tq, heads, s, kvHeads, kvLength, queryOffset, scale, sharedBytes);
}
