// attention_bf16_mma.cu: causal GQA attention forward (FlashAttention-2) with S, P and O in registers, on
// mma.sync m16n8k16 (cuda/ptx_ops.cuh). The contract of attention_bf16.cu's forward, argument for argument:
//   attention_bf16_mma_forward_d64, _d64_x2, _d128 (the head dim D as a constant):
//   q[B,Tq,H,D], k/v[B,S,Hkv,D] (the first KvLength rows used) -> out[B,Tq,H,D], lse[B,H,Tq] (optional),
//   all f32 in global memory. Query i of batch b sits at position QueryOffset + i and sees key j when
//   j <= that position, j < KvLength, mask[b,j] != 0 (mask [B,KvLength], optional) and segment[b,j] ==
//   segment[b,position] (segments [B,KvLength], optional); head h reads kv head h / (H/Hkv).
//   out = softmax(scale q k^T) v over the visible keys, lse = max + log(sum) (natural log); a query that sees
//   no key gets zeros and lse = -inf. q, k, v are rounded to bf16 as they are staged; P is rounded to bf16 for
//   P V; sums and softmax f32 (the rounding of attention_bf16.cu; exp2 by ex2.approx.ftz).
// Tiling: one block per (b, h, 128 queries; 256 for _q256), the last query tiles (the most keys) first; a warp owns 16 MT query
// rows (MT m16 row tiles), key tiles of KEYS up to the causal bound of the block's last query (MmaConfig):
//   _d64     MT 1, 8 warps, 64 keys: the FA2 layout of the brief, each K/V fragment feeding 2 mma.sync;
//   _d64_x2  MT 2, 4 warps, 32 keys: each ldmatrix'd K/V fragment feeds both row tiles (4 mma.sync), halving
//            the shared-memory reads per product (at MT 1 ldmatrix moves 256 bytes per m16n8k16, about what
//            the SM's 128 B/clock shared memory serves while the tensor cores run mma.sync: MT 2 is the
//            tensor-bound one on paper); 32 keys keep its S and prefetch within 255 registers;
//   _d128    MT 1, 8 warps, 32 keys (64 keys spilled: O alone is 64 registers, the Q fragments 32);
//   _d64_x2_q256  _d64_x2's warps, 8 of them: 256 queries a block, so each K/V tile staged serves twice the
//            queries (half the L2 reads and conversions of _d64_x2, for about 5% more causal waste on the diagonal;
//            and half the prefetch registers a thread).
//   _d64_x2_bf16in, _d128_bf16in, _d64_x2_q256_bf16in: the same kernels on q, k and v given as bf16 (a kernel argument
//            of unsigned short bits; out and lse f32): half the bytes of each K/V tile read from L2 and no conversion, as
//            PyTorch's SDPA reads them. Their results are the f32 kernels' bits for the same (bf16-exact) values.
// Why 128 queries a block: every block reads its K and V tiles as f32 from global memory (L2) and converts them,
// so 128 rows halve that traffic and conversion against 64 (at B4 H16 T2048 D64 a 64-row grid reads ~1 GB of
// K/V per forward); the 4-warp, 64-row variants tried spilled (4 warps prefetch twice the floats a thread).
// Per warp: the Q fragments (16 MT x D bf16) are loaded once by ldmatrix from the staged Q tile and kept; per
// key tile S = Q K^T by mma.sync (K by ldmatrix, non-transposed: K's rows are B's columns), the online softmax on
// the S accumulators (a lane holds rows g = lane / 4 and g + 8 of each row tile; the 4 lanes of a quad share a
// row: row max by __shfl_xor_sync over 1 and 2, the sum kept per lane and quad-summed at the end; the max is
// taken on raw scores and scaled once, p = exp2(s scale log2 e - m) one FFMA and one ex2; masked -> -inf, a row
// that has seen nothing keeps p = 0); P goes straight from the accumulators into A fragments (the C layout of
// two m16n8 tiles is the A layout of one m16n8k16: a = {S[2kk][0,1], S[2kk][2,3], S[2kk+1][0,1], S[2kk+1][2,3]}
// packed to bf16x2); O (D/8 m16n8 accumulators a row tile) is multiplied by alpha = exp2(m_old - m_new) in
// registers; O += P V with V through ldmatrix .trans. Epilogue: out = O / l, lse = m ln 2 + log l.
// Staging (all threads): f32 rows -> bf16 [KEYS][D + 8] tiles (rows padded by 8: an ldmatrix's 8 rows of 16
// bytes fall in distinct banks), two buffers. Tile t + 1's f32 K is loaded into registers before the barrier
// and S of tile t and stored into the other buffer after S, its V loaded then and stored after P V, so the global (L2) loads
// overlap the products with one barrier per tile (at the top: tile t is staged, every warp is done with tile
// t - 1, whose buffer is then free). The Q tile first lies from buffer 1 on, free once every warp holds its
// fragments (the first barrier). A negative scale negates Q as it is staged (exact in bf16), so the max of raw
// scores is the max of scaled ones. Per-key mask and segment flags ride along with their tile. A warp whose rows
// all precede the tile (causal) or lie past Tq skips its products but still stages.
// Registers (ptxas 11.8 -v on the PTX; no spills, no stack) and shared memory (dynamic) per block:
//   _d64     sm_90 182, sm_80 194 registers x 256 threads: 1 block (8 warps) an SM; 37,888 bytes
//   _d64_x2  sm_90 235, sm_80 240 registers x 128 threads: 2 blocks (8 warps) an SM; 28,160 bytes
//   _d128    sm_90 207, sm_80 229 registers x 256 threads: 1 block (8 warps) an SM; 52,736 bytes
//   _d64_x2_q256  sm_90 213, sm_80 218 registers x 256 threads: 1 block (8 warps) an SM; 46,592 bytes
//   _bf16in builds (half the prefetch registers): _d64_x2 220 / 225, _d128 193 / 214, _d64_x2_q256 203 / 211 (sm_90 / sm_80)
// Shared memory alone would allow 5, 8 and 4 blocks an SM on an H100 (228 KB); registers bound it. Holding _d64
// at 128 registers (2 blocks) spilled ~200 bytes; with 32 keys a tile it sat at the edge (4 bytes spilled on
// sm_90, none on sm_80; 0 and 8 with the query segments in shared memory): a candidate if occupancy matters.
// Checked on the CPU by the CUDA emulator (emu/) and on a GPU by CudaAttentionChecks (every kernel).
#include "attention_common.cuh"
#include "ptx_ops.cuh"

namespace {
constexpr float LN2 = 0.6931471805599453f;

// A kernel's shape: MT m16 row tiles a warp (16 MT query rows), WARPS warps (8 / MT unless given), so QROWS = 16 MT
// WARPS queries a block, and KEYS keys a tile.
// Byte offsets in dynamic shared memory: two buffers of one K and one V tile (bf16 [KEYS][LD] each); the Q tile
// (bf16 [QROWS][LD]) from buffer 1 on at first; then per buffer the keys' mask flags and segments (int).
template <int D, int MT, int KEYS_, int WARPS_ = 8 / MT> struct MmaConfig
{
    static constexpr int KEYS = KEYS_, WARPS = WARPS_, THREADS = 32 * WARPS, WROWS = 16 * MT, QROWS = WROWS * WARPS;
    static constexpr int LD = D + 8;
    static constexpr int KV = 2 * KEYS * LD * 2;
    static constexpr int Q = KV;
    static constexpr int FLAGS = 2 * KV > Q + QROWS * LD * 2 ? 2 * KV : Q + QROWS * LD * 2;
    static_assert(KEYS * D / 4 % THREADS == 0 && QROWS * D / 4 % THREADS == 0, "whole float4 loads a thread");
    static constexpr int KEY_OK = FLAGS, KEY_SEG = FLAGS + 2 * KEYS * 4;
    static constexpr int BYTES = KEY_SEG + 2 * KEYS * 4; // CudaAttention.MmaSharedBytes says the same
    static constexpr int LOADS = KEYS * D / 4 / THREADS; // float4 a thread per K (or V) tile
};

using D64 = MmaConfig<64, 1, 64>;    // attention_bf16_mma_forward_d64
using D64x2 = MmaConfig<64, 2, 32>;  // attention_bf16_mma_forward_d64_x2
using D128 = MmaConfig<128, 1, 32>;  // attention_bf16_mma_forward_d128
using D64x2Q256 = MmaConfig<64, 2, 32, 8>; // attention_bf16_mma_forward_d64_x2_q256
static_assert(D64::BYTES == 37888 && D64x2::BYTES == 28160 && D128::BYTES == 52736 && D64x2Q256::BYTES == 46592,
    "CudaAttention.MmaSharedBytes knows these sizes");

// 2^x by ex2.approx.ftz (one MUFU op; exp2f's non-ftz ex2 adds a denormal fix-up around it): p < 2^-126 -> 0.
__device__ __forceinline__ float exp2_ftz(float x)
{
#ifdef TEMPER_CUDA_EMU
    return exp2f(x);
#else
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#endif
}

// How q, k and v arrive: f32, rounded to bf16 (nearest even) as they are staged, or bf16 bits (the _bf16in kernels),
// staged as they are; for the same values both give the same bits in shared memory, so the same results. Regs: the 4
// elements a thread has in flight; vec: 16-byte (f32) or 8-byte (bf16) loads (attention_common.cuh's rows_aligned).
template <class T> struct Input;
template <> struct Input<float>
{
    using Regs = float4;
    static __device__ __forceinline__ Regs zero() { return make_float4(0.0f, 0.0f, 0.0f, 0.0f); }
    static __device__ __forceinline__ Regs load(const float* s, bool vec)
    {
        return vec ? *reinterpret_cast<const float4*>(s) : make_float4(s[0], s[1], s[2], s[3]);
    }
    static __device__ __forceinline__ uint2 bits(const Regs& x, bool negate)
    {
        const float sign = negate ? -1.0f : 1.0f;
        return uint2{pack_bf16(x.x * sign, x.y * sign), pack_bf16(x.z * sign, x.w * sign)};
    }
};
template <> struct Input<unsigned short>
{
    using Regs = uint2;
    static __device__ __forceinline__ Regs zero() { return uint2{0u, 0u}; }
    static __device__ __forceinline__ Regs load(const unsigned short* s, bool vec) { return load_bf16x4(s, vec); }
    // Negating flips the sign bits: what rounding -x gives.
    static __device__ __forceinline__ uint2 bits(const Regs& x, bool negate)
    {
        const uint32_t flip = negate ? 0x80008000u : 0u;
        return uint2{x.x ^ flip, x.y ^ flip};
    }
};

// x[p] = src rows (stride elements apart), 4 elements a slot, p-th of this thread's (THREADS threads); zeros for rows >= rows.
template <int D, int THREADS, class T, int N>
__device__ __forceinline__ void load_rows(typename Input<T>::Regs (&x)[N], const T* __restrict__ src, long stride, int rows, bool vec)
{
#pragma unroll
    for (int p = 0; p < N; p++)
    {
        int f = threadIdx.x + p * THREADS, r = f / (D / 4), c = 4 * (f % (D / 4));
        x[p] = Input<T>::zero();
        if (r < rows) x[p] = Input<T>::load(src + r * stride + c, vec);
    }
}

// The rows load_rows read, negated when asked, as bf16 into dst[r][c] (row stride D + 8).
template <int D, int THREADS, class T, int N>
__device__ __forceinline__ void store_rows(__nv_bfloat16* dst, const typename Input<T>::Regs (&x)[N], bool negate = false)
{
#pragma unroll
    for (int p = 0; p < N; p++)
    {
        int f = threadIdx.x + p * THREADS, r = f / (D / 4), c = 4 * (f % (D / 4));
        *reinterpret_cast<uint2*>(dst + r * (D + 8) + c) = Input<T>::bits(x[p], negate);
    }
}

// Key j0 + tid's mask flag and segment (thread tid < KEYS), for the flags of its tile.
template <int KEYS>
__device__ __forceinline__ void load_key_flags(int& ok, int& seg, const int* __restrict__ mask, const int* __restrict__ segments,
    int b, int kvLength, int j0)
{
    int tid = threadIdx.x, j = j0 + tid;
    bool in = tid < KEYS && j < kvLength;
    ok = in && (!mask || mask[(long)b * kvLength + j] != 0) ? 1 : 0;
    seg = in && segments ? segments[(long)b * kvLength + j] : 0;
}

template <int D, class C, class T>
__device__ __forceinline__ void attention_mma_forward(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, float* __restrict__ out,
    float* __restrict__ lse, const int* __restrict__ mask, const int* __restrict__ segments, int batch, int tq, int heads,
    int s, int kvHeads, int kvLength, int queryOffset, float scale, int sharedBytes)
{
    constexpr int MT = C::WROWS / 16, KEYS = C::KEYS, THREADS = C::THREADS, LD = C::LD, QROWS = C::QROWS;
    constexpr int KD = D / 16, NS = KEYS / 8, NO = D / 8;
    TEMPER_DYNAMIC_SHARED(unsigned char, smem);
    if (sharedBytes < C::BYTES) __trap(); // the launcher's size and this layout disagree
    int* keyOk = reinterpret_cast<int*>(smem + C::KEY_OK);   // [2][KEYS]
    int* keySeg = reinterpret_cast<int*>(smem + C::KEY_SEG); // [2][KEYS]

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int bhCount = batch * heads, tiles = (tq + QROWS - 1) / QROWS;
    const int tile = tiles - 1 - (int)(blockIdx.x / bhCount), bh = blockIdx.x % bhCount;
    const int b = bh / heads, h = bh % heads, kh = h / (heads / kvHeads);
    const int i0 = tile * QROWS, rows = min(QROWS, tq - i0);
    const long qRow = (long)heads * D, kRow = (long)kvHeads * D;
    const long kvOffset = ((long)b * s * kvHeads + kh) * D;
    const bool vec = rows_aligned(q) && rows_aligned(k) && rows_aligned(v);
    const bool flags = mask != nullptr || segments != nullptr;
    const int keyEnd = min(kvLength, queryOffset + i0 + rows); // past the block's last query: nothing visible
    const int keyTiles = (keyEnd + KEYS - 1) / KEYS;

    // This lane's rows: wFirst + 16 mt + g + 8 r (m-tile mt, r = 0, 1): positions and segments.
    const int wFirst = warp * C::WROWS, posFirst = queryOffset + i0 + wFirst;
    int pos[MT][2], seg[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++)
        {
            int i = wFirst + 16 * mt + g + 8 * r;
            pos[mt][r] = queryOffset + i0 + i;
            seg[mt][r] = segments && i < rows ? segments[(long)b * kvLength + pos[mt][r]] : 0;
        }

    // Stage Q (from buffer 1 on) and key tile 0 (buffer 0).
    {
        typename Input<T>::Regs x[QROWS * D / 4 / THREADS];
        load_rows<D, THREADS, T>(x, q + ((long)(b * tq + i0) * heads + h) * D, qRow, rows, vec);
        store_rows<D, THREADS, T>(reinterpret_cast<__nv_bfloat16*>(smem + C::Q), x, scale < 0.0f);
    }
    typename Input<T>::Regs kx[C::LOADS], vx[C::LOADS];
    int okx = 0, segx = 0;
    if (keyTiles > 0)
    {
        __nv_bfloat16* sK = reinterpret_cast<__nv_bfloat16*>(smem);
        load_rows<D, THREADS, T>(kx, k + kvOffset, kRow, min(KEYS, kvLength), vec);
        load_rows<D, THREADS, T>(vx, v + kvOffset, kRow, min(KEYS, kvLength), vec);
        store_rows<D, THREADS, T>(sK, kx);
        store_rows<D, THREADS, T>(sK + KEYS * LD, vx);
        if (flags && tid < KEYS)
        {
            load_key_flags<KEYS>(okx, segx, mask, segments, b, kvLength, 0);
            keyOk[tid] = okx;
            keySeg[tid] = segx;
        }
    }
    __syncthreads();
    uint32_t qf[MT][KD][4]; // A fragments of the warp's rows, 16 columns each
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
    {
        const __nv_bfloat16* sQ = reinterpret_cast<const __nv_bfloat16*>(smem + C::Q);
        const __nv_bfloat16* row = sQ + (wFirst + 16 * mt + lane % 8 + (lane / 8 % 2) * 8) * LD + (lane / 16) * 8;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) ldmatrix_x4(qf[mt][kk], row + kk * 16);
    }

    float o[MT][NO][4];
    float mRow[MT][2], lRow[MT][2]; // max in units of log2; this lane's part of the sum
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
    {
#pragma unroll
        for (int n = 0; n < NO; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
        mRow[mt][0] = mRow[mt][1] = -INFINITY;
        lRow[mt][0] = lRow[mt][1] = 0.0f;
    }
    const float scale2 = fmaxf(fabsf(scale) * LOG2E, 1e-30f); // > 0, so max(s) scale2 = max(s scale2); -inf stays -inf

    for (int jt = 0; jt < keyTiles; jt++)
    {
        const int j0 = jt * KEYS, buf = jt & 1;
        const bool next = jt + 1 < keyTiles;
        const int jn = j0 + KEYS, nextKeys = min(KEYS, kvLength - jn);
        if (next) // into registers (the previous tile's are stored): in flight across the barrier and S
        {
            load_rows<D, THREADS, T>(kx, k + kvOffset + jn * kRow, kRow, nextKeys, vec);
            if (flags) load_key_flags<KEYS>(okx, segx, mask, segments, b, kvLength, jn);
        }
        __syncthreads(); // tile jt is staged; every warp is done with tile jt - 1 (and the Q tile): buffer buf ^ 1 is free
        __nv_bfloat16* nextK = reinterpret_cast<__nv_bfloat16*>(smem + (buf ^ 1) * C::KV);
        const __nv_bfloat16* sK = reinterpret_cast<const __nv_bfloat16*>(smem + buf * C::KV);
        const __nv_bfloat16* sV = sK + KEYS * LD;
        const bool skip = j0 > posFirst + C::WROWS - 1 || wFirst >= rows; // no row of this warp sees a key of the tile

        // S = Q K^T: n-tile pair np covers keys 16 np .. 16 np + 15; each K fragment serves the MT row tiles.
        float sc[MT][NS][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int n = 0; n < NS; n++) sc[mt][n][0] = sc[mt][n][1] = sc[mt][n][2] = sc[mt][n][3] = 0.0f;
        if (!skip)
        {
            const __nv_bfloat16* kRowPtr = sK + ((lane / 16) * 8 + lane % 8) * LD + (lane / 8 % 2) * 8;
#pragma unroll
            for (int kk = 0; kk < KD; kk++)
#pragma unroll
                for (int np = 0; np < NS / 2; np++)
                {
                    uint32_t kb[4];
                    ldmatrix_x4(kb, kRowPtr + np * 16 * LD + kk * 16);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++)
                    {
                        mma_bf16_16816(sc[mt][2 * np], qf[mt][kk], kb);
                        mma_bf16_16816(sc[mt][2 * np + 1], qf[mt][kk], kb + 2);
                    }
                }
        }
        if (next)
        {
            store_rows<D, THREADS, T>(nextK, kx);
            load_rows<D, THREADS, T>(vx, v + kvOffset + jn * kRow, kRow, nextKeys, vec);
        }

        if (!skip)
        {
            // Hidden keys -> -inf, only in tiles where some key may be hidden from some row of the warp.
            if (flags || j0 + KEYS > kvLength || j0 + KEYS - 1 > posFirst)
            {
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int n = 0; n < NS; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                        {
                            int c = n * 8 + 2 * t + (e & 1), j = j0 + c, r = e >> 1;
                            bool visible = j <= pos[mt][r] && j < kvLength;
                            if (flags) visible = visible && keyOk[buf * KEYS + c] != 0 && keySeg[buf * KEYS + c] == seg[mt][r];
                            if (!visible) sc[mt][n][e] = -INFINITY;
                        }
            }

            // Online softmax, rows r = 0 (g) and 1 (g + 8) of each m-tile; the quad's 4 lanes hold a row's columns.
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
            {
                float alpha[2], mUse[2];
#pragma unroll
                for (int r = 0; r < 2; r++)
                {
                    float x = -INFINITY;
#pragma unroll
                    for (int n = 0; n < NS; n++) x = fmaxf(x, fmaxf(sc[mt][n][2 * r], sc[mt][n][2 * r + 1]));
                    x = fmaxf(x, __shfl_xor_sync(FULL, x, 1));
                    x = fmaxf(x, __shfl_xor_sync(FULL, x, 2));
                    const float mNew = fmaxf(mRow[mt][r], x * scale2);
                    alpha[r] = mNew == -INFINITY ? 1.0f : exp2_ftz(mRow[mt][r] - mNew);
                    mUse[r] = mNew == -INFINITY ? 0.0f : mNew; // a row that has seen nothing yet: p = 0
                    mRow[mt][r] = mNew;
                }
                float sum[2] = {0.0f, 0.0f};
#pragma unroll
                for (int n = 0; n < NS; n++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                    {
                        sc[mt][n][e] = exp2_ftz(fmaf(sc[mt][n][e], scale2, -mUse[e >> 1]));
                        sum[e >> 1] += sc[mt][n][e];
                    }
#pragma unroll
                for (int r = 0; r < 2; r++) lRow[mt][r] = lRow[mt][r] * alpha[r] + sum[r];
#pragma unroll
                for (int n = 0; n < NO; n++)
                {
                    o[mt][n][0] *= alpha[0];
                    o[mt][n][1] *= alpha[0];
                    o[mt][n][2] *= alpha[1];
                    o[mt][n][3] *= alpha[1];
                }
            }

            // O += P V: keys 16 kk .. 16 kk + 15; d-tile pair dp covers columns 16 dp .. 16 dp + 15.
            const __nv_bfloat16* vRowPtr = sV + (lane / 8 % 2 * 8 + lane % 8) * LD + (lane / 16) * 8;
#pragma unroll
            for (int kk = 0; kk < KEYS / 16; kk++)
            {
                uint32_t pa[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                {
                    pa[mt][0] = pack_bf16(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                    pa[mt][1] = pack_bf16(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                    pa[mt][2] = pack_bf16(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                    pa[mt][3] = pack_bf16(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
                }
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++)
                {
                    uint32_t vb[4];
                    ldmatrix_x4_trans(vb, vRowPtr + kk * 16 * LD + dp * 16);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++)
                    {
                        mma_bf16_16816(o[mt][2 * dp], pa[mt], vb);
                        mma_bf16_16816(o[mt][2 * dp + 1], pa[mt], vb + 2);
                    }
                }
            }
        }
        if (next)
        {
            store_rows<D, THREADS, T>(nextK + KEYS * LD, vx);
            if (flags && tid < KEYS)
            {
                keyOk[(buf ^ 1) * KEYS + tid] = okx;
                keySeg[(buf ^ 1) * KEYS + tid] = segx;
            }
        }
    }

    // Epilogue: out = O / l (0 for a query that saw nothing), lse = m ln 2 + log l (-inf then).
    const bool pairs = ((uintptr_t)out & 7) == 0;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++)
        {
            float l = lRow[mt][r];
            l += __shfl_xor_sync(FULL, l, 1);
            l += __shfl_xor_sync(FULL, l, 2);
            const int i = wFirst + 16 * mt + g + 8 * r;
            if (i >= rows) continue;
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            float* dst = out + ((long)(b * tq + i0 + i) * heads + h) * D + 2 * t;
#pragma unroll
            for (int n = 0; n < NO; n++)
            {
                float x0 = o[mt][n][2 * r] * inv, x1 = o[mt][n][2 * r + 1] * inv;
                if (pairs) *reinterpret_cast<float2*>(dst + n * 8) = make_float2(x0, x1);
                else dst[n * 8] = x0, dst[n * 8 + 1] = x1;
            }
            if (lse && t == 0) lse[((long)b * heads + h) * tq + i0 + i] = l > 0.0f ? mRow[mt][r] * LN2 + logf(l) : -INFINITY;
        }
}
} // namespace

// The kernels' arguments, q, k and v of type T (float, or unsigned short: bf16 bits for the _bf16in kernels).
#define TEMPER_ATTENTION_MMA_PARAMS(T)                                                                                 \
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, float* __restrict__ out,                \
        float* __restrict__ lse, const int* __restrict__ mask, const int* __restrict__ segments, int batch, int tq,    \
        int heads, int s, int kvHeads, int kvLength, int queryOffset, float scale, int sharedBytes
#define TEMPER_ATTENTION_MMA_ARGS q, k, v, out, lse, mask, segments, batch, tq, heads, s, kvHeads, kvLength, queryOffset, scale, sharedBytes

extern "C" __global__ void __launch_bounds__(256, 1) attention_bf16_mma_forward_d64(TEMPER_ATTENTION_MMA_PARAMS(float))
{
    attention_mma_forward<64, D64, float>(TEMPER_ATTENTION_MMA_ARGS);
}

extern "C" __global__ void __launch_bounds__(128, 2) attention_bf16_mma_forward_d64_x2(TEMPER_ATTENTION_MMA_PARAMS(float))
{
    attention_mma_forward<64, D64x2, float>(TEMPER_ATTENTION_MMA_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 1) attention_bf16_mma_forward_d128(TEMPER_ATTENTION_MMA_PARAMS(float))
{
    attention_mma_forward<128, D128, float>(TEMPER_ATTENTION_MMA_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 1) attention_bf16_mma_forward_d64_x2_q256(TEMPER_ATTENTION_MMA_PARAMS(float))
{
    attention_mma_forward<64, D64x2Q256, float>(TEMPER_ATTENTION_MMA_ARGS);
}

extern "C" __global__ void __launch_bounds__(128, 2) attention_bf16_mma_forward_d64_x2_bf16in(TEMPER_ATTENTION_MMA_PARAMS(unsigned short))
{
    attention_mma_forward<64, D64x2, unsigned short>(TEMPER_ATTENTION_MMA_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 1) attention_bf16_mma_forward_d128_bf16in(TEMPER_ATTENTION_MMA_PARAMS(unsigned short))
{
    attention_mma_forward<128, D128, unsigned short>(TEMPER_ATTENTION_MMA_ARGS);
}

extern "C" __global__ void __launch_bounds__(256, 1) attention_bf16_mma_forward_d64_x2_q256_bf16in(TEMPER_ATTENTION_MMA_PARAMS(unsigned short))
{
    attention_mma_forward<64, D64x2Q256, unsigned short>(TEMPER_ATTENTION_MMA_ARGS);
}
