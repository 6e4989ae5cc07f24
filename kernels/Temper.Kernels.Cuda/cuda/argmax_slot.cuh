// argmax_slot.cuh: the 64-bit slot an argmax over logits is reduced into with atomicMax (gemv_bf16.cu's LM
// head writes it; the decode kernels read it). A slot packs one (value, index) pair so that the larger
// slot is the larger value and, between equal values, the smaller index:
//   high 32 bits: the f32 value's bits made order-preserving as an unsigned integer (negative: all bits
//                 flipped; positive: the sign bit set), so -inf < ... < -0 < +0 < ... < +inf; any NaN is 0,
//                 below every number;
//   low 32 bits:  0xFFFFFFFF - index.
// The caller zeroes a slot before the reduction; a slot left at 0 decodes to index -1 (nothing written).
// The same encoding on the host: CudaGemv.ArgmaxPack / CudaGemv.ArgmaxIndex.
#pragma once

__device__ __forceinline__ unsigned long long argmax_pack(float value, int index)
{
    unsigned bits = __float_as_uint(value);
    unsigned key = value != value ? 0u : (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
    return (unsigned long long)key << 32 | (0xFFFFFFFFu - (unsigned)index);
}

__device__ __forceinline__ int argmax_index(unsigned long long slot) { return (int)(0xFFFFFFFFu - (unsigned)slot); }
