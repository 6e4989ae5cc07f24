// attention_common.cuh: what attention_bf16.cu (forward) and attention_bf16_backward.cu share: the tile
// sizes (64 queries by 64 keys, 4 warps of 16 rows), the f32 product and bf16 P row strides, the staging of
// f32 rows into bf16 tiles (zero rows past the last, so no garbage reaches a product), a warp vote, and the
// WMMA fragment types. Included inside each file's anonymous namespace setup (each kernel file is its own
// translation unit), after <cuda_bf16.h> and <mma.h>.
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

__device__ __forceinline__ bool warp_any(bool v)
{
    int a = v ? 1 : 0;
#pragma unroll
    for (int o = 16; o > 0; o /= 2) a |= __shfl_xor_sync(FULL, a, o);
    return a != 0;
}

// dst[r][c] = bf16(src[r * stride + c]) for r < rows, 0 for rows <= r < 64 (no garbage reaches a product).
template <int D>
__device__ __forceinline__ void stage_rows(__nv_bfloat16* dst, const float* __restrict__ src, long stride, int rows, bool vec)
{
    constexpr int LD = D + 8, PER_ROW = D / 4, CHUNKS = 64 * PER_ROW / THREADS;
#pragma unroll 8
    for (int p = 0; p < CHUNKS; p++)
    {
        int f = threadIdx.x + p * THREADS, r = f / PER_ROW, c = 4 * (f % PER_ROW);
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
}

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragAcc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;
} // namespace
