// nf4.cu: NF4 (QLoRA's 4-bit NormalFloat) decoding on the GPU.
//   nf4_absmax:     absmax[b] = f32(f32(dyn[q[b]] * scales[b / 256]) + offset), b < blocks: the double-quantised
//                   absmax of each 64-element block (q: 8-bit codes of bitsandbytes' dynamic map dyn[256],
//                   scales: one f32 per 256 blocks), two roundings as bitsandbytes and the CPU reference do
//                   (__fmul_rn / __fadd_rn: no contraction into an FMA).
//   nf4_dequantize: out[i] = lut[code(i)] * absmax(i / 64) for i < n, f32; code(i) is the high nibble of byte
//                   i / 2 for even i, the low one for odd i; the absmax decoded in the kernel from q and scales.
//   nf4_to_bf16:    out[i] bf16 = bf16(lut[code(i)] * absmax[i / 64]) from the decoded f32 absmax, rounded to nearest
//                   even: the values linear_bf16.cu's NF4 kernels stage, for CudaLinear's dequantise-then-GEMM route
//                   (one 16-byte store of 8 weights a thread).
// Dequantisation is bandwidth-bound (0.5 + 1/64 bytes read, 4 written per weight): one thread per 8
// consecutive weights (one 4-byte code load, one absmax, two 16-byte stores), so a warp reads 128
// contiguous bytes of codes and writes 1 KB contiguously; dyn and lut sit in shared memory. Element loads
// and stores at the end of the weight or where an address is not aligned.
// Scalar reference: engine/Temper.Core/Quantization/Nf4Weight.cs (DecodeAbsmax, Dequantize).
#include <stdint.h>
#include "bf16_bits.cuh"

namespace {
constexpr int THREADS = 256;

__device__ __forceinline__ float absmax_of(const uint8_t* q, const float* scales, const float* dyn, float offset, long b)
{
    return __fadd_rn(__fmul_rn(dyn[q[b]], scales[b >> 8]), offset);
}
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) nf4_absmax(
    const uint8_t* __restrict__ q, const float* __restrict__ scales, const float* __restrict__ dyn, float offset,
    float* __restrict__ absmax, int blocks)
{
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b < blocks) absmax[b] = absmax_of(q, scales, dyn, offset, b);
}

extern "C" __global__ void __launch_bounds__(THREADS) nf4_dequantize(
    const uint8_t* __restrict__ codes, const uint8_t* __restrict__ q, const float* __restrict__ scales,
    const float* __restrict__ dyn, float offset, const float* __restrict__ lut, float* __restrict__ out, long n)
{
    __shared__ float sdyn[256];
    __shared__ float slut[16];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) sdyn[i] = dyn[i];
    if (threadIdx.x < 16) slut[threadIdx.x] = lut[threadIdx.x];
    __syncthreads();
    long e = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 8; // first of this thread's 8 weights
    if (e >= n) return;
    float a = absmax_of(q, scales, sdyn, offset, e / 64);
    bool whole = e + 8 <= n && ((uintptr_t)(codes + e / 2) & 3) == 0 && ((uintptr_t)(out + e) & 15) == 0;
    if (whole)
    {
        uint32_t packed = *reinterpret_cast<const uint32_t*>(codes + e / 2);
        float v[8];
#pragma unroll
        for (int j = 0; j < 8; j++)
        {
            uint32_t byte = packed >> (8 * (j / 2)) & 0xFF;
            v[j] = slut[j % 2 == 0 ? byte >> 4 : byte & 15] * a;
        }
        reinterpret_cast<float4*>(out + e)[0] = make_float4(v[0], v[1], v[2], v[3]);
        reinterpret_cast<float4*>(out + e)[1] = make_float4(v[4], v[5], v[6], v[7]);
        return;
    }
    for (long i = e; i < e + 8 && i < n; i++)
    {
        uint32_t byte = codes[i / 2];
        out[i] = slut[i % 2 == 0 ? byte >> 4 : byte & 15] * a;
    }
}

extern "C" __global__ void __launch_bounds__(THREADS) nf4_to_bf16(
    const uint8_t* __restrict__ codes, const float* __restrict__ absmax, const float* __restrict__ lut, unsigned short* __restrict__ out, long n)
{
    __shared__ float slut[16];
    if (threadIdx.x < 16) slut[threadIdx.x] = lut[threadIdx.x];
    __syncthreads();
    long e = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 8; // first of this thread's 8 weights (one absmax block)
    if (e >= n) return;
    const float a = absmax[e / 64];
    if (e + 8 <= n && ((uintptr_t)(codes + e / 2) & 3) == 0 && ((uintptr_t)(out + e) & 15) == 0)
    {
        uint32_t packed = *reinterpret_cast<const uint32_t*>(codes + e / 2), w[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
        {
            uint32_t byte = packed >> (8 * j) & 0xFF;
            w[j] = bf16_bits_rne(slut[byte >> 4] * a) | bf16_bits_rne(slut[byte & 15] * a) << 16;
        }
        *reinterpret_cast<uint4*>(out + e) = make_uint4(w[0], w[1], w[2], w[3]);
        return;
    }
    for (long i = e; i < e + 8 && i < n; i++)
    {
        uint32_t byte = codes[i / 2];
        out[i] = (unsigned short)bf16_bits_rne(slut[i % 2 == 0 ? byte >> 4 : byte & 15] * a);
    }
}
