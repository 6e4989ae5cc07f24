// attention_common.cuh: what attention_bf16.cu (forward) and attention_bf16_backward.cu share: the tile
// sizes (64 queries by 64 keys, 4 warps of 16 rows), the f32 product and bf16 P row strides, the staging of
// f32 rows into bf16 tiles (zero rows past the last, so no garbage reaches a product), a warp vote, and the
// WMMA fragment types. Included inside each file's anonymous namespace setup (each kernel file is its own
// translation unit), after <cuda_bf16.h> and <mma.h>; and the staging of a key tile with its mask and
// segment flags and the warp's "does any row see this tile" vote (the forward and the dq kernel); and the
// product S = Q K^T, one code for the forward and the backward's recomputation, so they sum alike; and pack_bf16 (the
// mma.sync kernels' operand packing).
#pragma once
#include <cuda_bf16.h>
#include <mma.h>
#include <stdint.h>

using namespace nvcuda;

#ifndef TEMPER_CUDA_EMU
#define TEMPER_DYNAMIC_SHARED(type, name)                                                                             \
    extern __shared__ __align__(128) unsigned char temper_dynamic_shared[];                                          \
    type* name = reinterpret_cast<type*>(temper_dynamic_shared)
#endif

namespace {
constexpr int BQ = 64, BKV = 64, WARPS = 4, THREADS = 32 * WARPS, WROWS = BQ / WARPS;
constexpr int LDS = BKV + 4; // f32 product row stride (WMMA wants a multiple of 4)
constexpr int LDP = BKV + 8; // bf16 P (and dS) row stride (a multiple of 8)
constexpr int KF = BKV / 16; // fragments across a 64-wide tile
constexpr float LOG2E = 1.4426950408889634f;
constexpr unsigned FULL = 0xffffffffu;

__device__ __forceinline__ bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

// Two floats as one register of two bf16 (round to nearest even), lo in the low half: an mma.sync operand.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return bits;
}

__device__ __forceinline__ bool warp_any(bool v)
{
    int a = v ? 1 : 0;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) a |= __shfl_xor_sync(FULL, a, o);
    return a != 0;
}

// Whether a source's rows allow vector loads: 16 bytes of f32, or 8 bytes of bf16 bits (the _bf16in kernels' q, k, v),
// every row then so aligned (D % 4 == 0).
__device__ __forceinline__ bool rows_aligned(const float* p) { return aligned16(p); }
__device__ __forceinline__ bool rows_aligned(const unsigned short* p) { return ((uintptr_t)p & 7) == 0; }

// 4 consecutive bf16 (bits) as one uint2, the first in the low half: one 8-byte load where vec (rows_aligned), else four.
__device__ __forceinline__ uint2 load_bf16x4(const unsigned short* __restrict__ s, bool vec)
{
    if (vec) return *reinterpret_cast<const uint2*>(s);
    return uint2{s[0] | (uint32_t)s[1] << 16, s[2] | (uint32_t)s[3] << 16};
}

// dst[r][c] = bf16(src[r * stride + c]) for r < rows, 0 for rows <= r < 64 (no garbage reaches a product); src f32 (rounded
// to nearest even) or bf16 bits (staged as they are: the same bits for bf16-exact values).
template <int D, class T>
__device__ __forceinline__ void stage_rows(__nv_bfloat16* dst, const T* __restrict__ src, long stride, int rows, bool vec)
{
    constexpr int LD = D + 8, PER_ROW = D / 4, CHUNKS = 64 * PER_ROW / THREADS;
#pragma unroll 8
    for (int p = 0; p < CHUNKS; p++)
    {
        int f = threadIdx.x + p * THREADS, r = f / PER_ROW, c = 4 * (f % PER_ROW);
        if constexpr (sizeof(T) == 4)
        {
            float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (r < rows)
            {
                const float* s = src + r * stride + c;
                x = vec ? *reinterpret_cast<const float4*>(s) : make_float4(s[0], s[1], s[2], s[3]);
            }
            __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(dst + r * LD + c);
            d[0] = __floats2bfloat162_rn(x.x, x.y);
            d[1] = __floats2bfloat162_rn(x.z, x.w);
        }
        else
        {
            *reinterpret_cast<uint2*>(dst + r * LD + c) = r < rows ? load_bf16x4(src + r * stride + c, vec) : uint2{0u, 0u};
        }
    }
}

// Key tile j0 of one (batch, kv head) into shared memory: K and V rows as bf16 (zero rows past kvLength)
// and, per key, whether the mask admits it (keyOk) and its segment (keySeg). The block calls it between
// barriers.
template <int D, class T>
__device__ __forceinline__ void stage_key_tile(__nv_bfloat16* sK, __nv_bfloat16* sV, int* keyOk, int* keySeg, const T* __restrict__ k,
    const T* __restrict__ v, long kvOffset, long kRow, int j0, int kvLength, const int* __restrict__ mask, const int* __restrict__ segments,
    int b, bool vec)
{
    const int keys = min(BKV, kvLength - j0);
    stage_rows<D>(sK, k + kvOffset + j0 * kRow, kRow, keys, vec);
    stage_rows<D>(sV, v + kvOffset + j0 * kRow, kRow, keys, vec);
    const int tid = threadIdx.x;
    if (tid < BKV)
    {
        int j = j0 + tid;
        bool in = tid < keys;
        keyOk[tid] = in && (!mask || mask[(long)b * kvLength + j] != 0) ? 1 : 0;
        keySeg[tid] = in && segments ? segments[(long)b * kvLength + j] : 0;
    }
}

// Whether any row of the warp sees a key of the staged tile j0 (two lanes a row, half = lane % 2; the row's
// position pos and segment seg): warp-uniform, so a warp may skip the tile without a block barrier.
__device__ __forceinline__ bool warp_sees_tile(const int* keyOk, const int* keySeg, int j0, int pos, int seg, int half)
{
    bool sees = false;
    for (int c = half; c < BKV && !sees; c += 2) sees = (keyOk[c] != 0) & (j0 + c <= pos) & (keySeg[c] == seg);
    return warp_any(sees);
}

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// out (16 x N, row stride LDS) = A B^T for A = 16 rows of a bf16 [.][LD] tile and B^T's N columns the rows
// of another (read as a column-major B): S = Q K^T in the forward and in the backward's recomputation.
template <int D, int N>
__device__ __forceinline__ void rows_times_rows_t(float* out, const __nv_bfloat16* a, const __nv_bfloat16* b)
{
    constexpr int LD = D + 8;
    FragAcc sc[N / 16];
#pragma unroll
    for (int j = 0; j < N / 16; j++) wmma::fill_fragment(sc[j], 0.0f);
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++)
    {
        FragA fa;
        wmma::load_matrix_sync(fa, a + kk * 16, LD);
#pragma unroll
        for (int j = 0; j < N / 16; j++)
        {
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
            wmma::load_matrix_sync(fb, b + j * 16 * LD + kk * 16, LD);
            wmma::mma_sync(sc[j], fa, fb, sc[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < N / 16; j++) wmma::store_matrix_sync(out + j * 16, sc[j], LDS, wmma::mem_row_major);
}
} // namespace
