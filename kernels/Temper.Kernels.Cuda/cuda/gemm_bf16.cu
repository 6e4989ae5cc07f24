// gemm_bf16.cu: the Linear products with bf16 operands on tensor cores through mma.sync, the sm_80 GEMM:
//   convert_f32_bf16:  out[n] bf16 = in[n] f32, rounded to nearest even (the activations, once per product)
//   gemm_bf16_nt:      y[N,M] = alpha x[N,K] W[M,K]^T + bias[M] (optional) + s L R^T (optional LoRA term,
//                      as in linear_bf16.cu) + y (when accumulate); x and W bf16, sums f32  (forward)
//   gemm_bf16_nn:      y[N,K] = alpha x[N,M] W[M,K] + s L R^T + y                            (input gradient)
// Needs the summed and the W row lengths to be multiples of 8 and 16-byte aligned operands (CudaLinear
// falls back to linear_bf16.cu otherwise).
// Tiling: one block of 4 warps per 128 x 128 tile of y, each warp a 64 x 64 piece as 4 x 8 mma.m16n8k16
// (128 f32 accumulators per thread). 32-deep slices of x and W arrive by cp.async in a 3-stage ring in
// dynamic shared memory (rows padded to 40 bf16 = 80 bytes, so ldmatrix's eight 16-byte rows fall in
// distinct banks), slice s + 2 in flight while the tensor cores work on slice s; rows past N or M and
// the zero tail of K are zero-filled by cp.async itself. Fragments come from shared memory by ldmatrix.x4
// (x: rows 16i.., k-halves; NT's W: rows 8j.. in pairs; NN's W [32 deep][128 cols], padded to 136, by
// ldmatrix.x4.trans). The epilogue applies alpha, bias, the LoRA term (its L
// and R tiles staged in the freed ring) and accumulation element by element from the accumulators.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/LinearReference.cs (x and W in bf16).
// Checked on the CPU by the CUDA emulator (ptx_ops.cuh's PTX ISA definitions) and on a GPU by CudaLinearChecks.
#include <cuda_bf16.h>
#include <stdint.h>
#include "bf16_bits.cuh"
#include "ptx_ops.cuh"

#ifndef TEMPER_CUDA_EMU
#define TEMPER_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

namespace {
constexpr int BM = 128, BN = 128, BK = 32, LDS = BK + 8, STAGES = 3, THREADS = 128;
constexpr int WM = 64, WN = 64, MI = WM / 16, NI = WN / 8;
constexpr int MAX_RANK = 16, LDR = MAX_RANK + 1;

// One ring stage: x [BM][LDS], then W (NT: [BN cols][LDS]; NN: [BK deep][LDB]).
template <bool NN> struct Ring
{
    static constexpr int LDB = NN ? BN + 8 : LDS;
    static constexpr int STAGE_ELEMS = BM * LDS + (NN ? BK * LDB : BN * LDS);
    static_assert(STAGES * STAGE_ELEMS * 2 >= 2 * 128 * LDR * 4, "the LoRA tiles fit in the freed ring");
};
}

// Slice k0 into a stage: 16-byte chunks, 4 per thread per operand. depth: the summed length; cols: y's.
template <bool NN>
__device__ __forceinline__ void load_slice(__nv_bfloat16* stage, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
    int n, int depth, int cols, int row0, int col0, int k0)
{
    constexpr int LDB = Ring<NN>::LDB;
    const int tid = threadIdx.x;
    __nv_bfloat16* sb = stage + BM * LDS;
#pragma unroll
    for (int p = 0; p < BM * BK / 8 / THREADS; p++)
    {
        int c = tid + p * THREADS, r = c / 4, q = 8 * (c % 4);
        int gr = row0 + r, gk = k0 + q;
        bool full = gr < n && gk < depth;
        cp_async_16(stage + r * LDS + q, full ? x + (long)gr * depth + gk : x, full);
        if (NN)
        {
            int d = c / 16, cc = 8 * (c % 16), gd = k0 + d, gc = col0 + cc;
            bool wfull = gd < depth && gc < cols;
            cp_async_16(sb + d * LDB + cc, wfull ? w + (long)gd * cols + gc : w, wfull);
        }
        else
        {
            int gc = col0 + r;
            bool wfull = gc < cols && gk < depth;
            cp_async_16(sb + r * LDB + q, wfull ? w + (long)gc * depth + gk : w, wfull);
        }
    }
}

// Four elements a thread, stored as one 8-byte word. The first version built an __nv_bfloat16[4] with
// __float2bfloat16 and memcpy'd it out, which nvcc 11.8 made eight byte stores of the cvt.rn.bf16.f32
// results; on an H100 (driver 580) the low byte of nearly every element came out wrong (1.0 -> 0x3F01,
// -1.0 -> 0xBF00), so every pipelined product was off by a normalised MSE of ~0.17 while the emulator,
// which runs this source on the CPU, was exact. CudaConvertChecks compares the bits on the GPU.
extern "C" __global__ void __launch_bounds__(THREADS) convert_f32_bf16(const float* __restrict__ in, __nv_bfloat16* __restrict__ out, long n)
{
    long i = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    unsigned short* bits = reinterpret_cast<unsigned short*>(out);
    if (i + 4 <= n && ((uintptr_t)(in + i) & 15) == 0 && ((uintptr_t)(out + i) & 7) == 0)
    {
        float4 v = *reinterpret_cast<const float4*>(in + i);
        uint2 packed;
        packed.x = bf16_bits_rne(v.x) | bf16_bits_rne(v.y) << 16;
        packed.y = bf16_bits_rne(v.z) | bf16_bits_rne(v.w) << 16;
        *reinterpret_cast<uint2*>(bits + i) = packed;
        return;
    }
    for (long j = i; j < i + 4 && j < n; j++) bits[j] = (unsigned short)bf16_bits_rne(in[j]);
}

template <bool NN>
__device__ __forceinline__ void gemm_bf16(
    const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
    int n, int depth, int cols, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    constexpr int LDB = Ring<NN>::LDB, STAGE_ELEMS = Ring<NN>::STAGE_ELEMS;
    TEMPER_DYNAMIC_SHARED(__nv_bfloat16, ring);
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = warp / 2, wn = warp % 2;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int slices = (depth + BK - 1) / BK;

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    // Prologue: slices 0 .. STAGES-2 in flight (an empty group where there is no slice, so the count of
    // groups in flight stays uniform).
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++)
    {
        if (s < slices) load_slice<NN>(ring + s * STAGE_ELEMS, x, w, n, depth, cols, row0, col0, s * BK);
        cp_async_commit();
    }
    for (int s = 0; s < slices; s++)
    {
        cp_async_wait<STAGES - 2>(); // slice s has landed (for this thread)
        __syncthreads();             // ... for every thread; and stage (s - 1) % STAGES is no longer read
        int next = s + STAGES - 1;
        if (next < slices) load_slice<NN>(ring + (next % STAGES) * STAGE_ELEMS, x, w, n, depth, cols, row0, col0, next * BK);
        cp_async_commit();
        const __nv_bfloat16* sa = ring + (s % STAGES) * STAGE_ELEMS;
        const __nv_bfloat16* sb = sa + BM * LDS;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16)
        {
            uint32_t a[MI][4], b[NI][2];
#pragma unroll
            for (int i = 0; i < MI; i++)
                ldmatrix_x4(a[i], sa + (wm * WM + i * 16 + lane % 16) * LDS + kk + 8 * (lane / 16));
#pragma unroll
            for (int j = 0; j < NI; j += 2)
            {
                uint32_t r[4];
                // matrices: (cols 8j.., k 0-7), (8j.., k 8-15), (8j+8.., k 0-7), (8j+8.., k 8-15)
                if (NN) ldmatrix_x4_trans(r, sb + (kk + lane % 8 + 8 * ((lane / 8) % 2)) * LDB + wn * WN + j * 8 + 8 * (lane / 16));
                else ldmatrix_x4(r, sb + (wn * WN + j * 8 + lane % 8 + 8 * (lane / 16)) * LDB + kk + 8 * ((lane / 8) % 2));
                b[j][0] = r[0];
                b[j][1] = r[1];
                b[j + 1][0] = r[2];
                b[j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int j = 0; j < NI; j++) mma_bf16_16816(acc[i][j], a[i], b[j]);
        }
    }
    cp_async_wait<0>();
    __syncthreads(); // the ring is free

    float* ls = reinterpret_cast<float*>(ring); // [128 rows][LDR]
    float* rs = ls + 128 * LDR;                 // [128 cols][LDR]
    if (lora_l)
    {
        for (int e = tid; e < 128 * rank; e += THREADS)
        {
            int i = e / rank, q = e % rank, gr = row0 + i, gc = col0 + i;
            ls[i * LDR + q] = gr < n ? lora_l[(long)gr * rank + q] : 0.0f;
            rs[i * LDR + q] = gc < cols ? lora_r[(long)gc * rcol + (long)q * rrank] : 0.0f;
        }
        __syncthreads();
    }
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
            {
                int lr = wm * WM + i * 16 + g + 8 * (e / 2), lc = wn * WN + j * 8 + 2 * t + e % 2;
                int gr = row0 + lr, gc = col0 + lc;
                if (gr >= n || gc >= cols) continue;
                float v = alpha * acc[i][j][e];
                if (lora_l)
                {
                    float s = 0.0f;
                    for (int q = 0; q < rank; q++) s += ls[lr * LDR + q] * rs[lc * LDR + q];
                    v += lora_scale * s;
                }
                if (bias) v += bias[gc];
                long o = (long)gr * cols + gc;
                if (accumulate) v += y[o];
                y[o] = v;
            }
}

extern "C" __global__ void __launch_bounds__(THREADS) gemm_bf16_nt(
    const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
    int n, int k, int m, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    gemm_bf16<false>(x, w, bias, y, n, k, m, alpha, accumulate, lora_l, lora_r, rank, rcol, rrank, lora_scale);
}

extern "C" __global__ void __launch_bounds__(THREADS) gemm_bf16_nn(
    const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, float* __restrict__ y,
    int n, int k, int m, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    gemm_bf16<true>(x, w, nullptr, y, n, m, k, alpha, accumulate, lora_l, lora_r, rank, rcol, rrank, lora_scale);
}
