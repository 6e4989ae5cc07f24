// bf16_bits.cuh: bf16 as the top 16 bits of an f32, for kernels that store or read bf16 on the integer bits.
//   bf16_bits_rne(f): f rounded to bf16, nearest even, NaN kept quiet (BFloat16.FromSingle's rounding);
//   bf16_widen(b):   the f32 whose top half is b.
// Rounding on the integer bits, not with __float2bfloat16: see gemm_bf16.cu's convert_f32_bf16 for the byte stores
// that the intrinsic plus memcpy became on an H100.
#pragma once
#include <stdint.h>

__device__ __forceinline__ uint32_t bf16_bits_rne(float f)
{
    uint32_t u = __float_as_uint(f);
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

__device__ __forceinline__ float bf16_widen(uint32_t b) { return __uint_as_float(b << 16); }
