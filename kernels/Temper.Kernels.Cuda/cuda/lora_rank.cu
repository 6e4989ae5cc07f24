// lora_rank.cu: the LoRA products with a rank-r side (r <= 16), f32, exact f32 sums (no tensor cores): they move
// a whole activation matrix for few FLOPs, so they are bound by its bytes.
//   lora_rows_times_rank:    out[i,q] = alpha sum_j X[i,j] W(q,j) (+ out[i,q] when accumulate), X [n,c] row-major,
//                            W(q,j) = w[q * rank_stride + j * col_stride]. xa = x A^T (A [r,K]: strides K, 1) and
//                            dxa = scale dy B (B [M,r]: strides 1, r).
//   lora_columns_partial:    partial[s][j][q] = sum over rows i of split s of Y[i,j] L[i,q], Y [n,c], L [n,r];
//   lora_columns_reduce:     out(j,q) = alpha sum_s partial[s][j][q] (+ out(j,q)), out(j,q) = out[j * col_stride +
//                            q * rank_stride]. dA = dxa^T x (out [r,K]: strides 1, K) and dB = scale dy^T xa ([M,r]:
//                            strides r, 1). Splits are summed in order: the same result run after run.
//   lora_rank_times_rows:    out[i,j] = alpha sum_q L[i,q] W(q,j) (+ out[i,j] when accumulate), L [n,r], out [n,c],
//                            W(q,j) = w[q * rank_stride + j * col_stride]: the forward's y += scale xa B^T (B [M,r]:
//                            strides 1, r) and the backward's dx += dxa A (A [r,K]: strides K, 1).
// rows: blocks of 8 warps, 32 rows a block (4 a warp); W staged in shared memory 256 columns at a time, [r][256];
// each lane reads 8 columns of its rows per chunk (coalesced), keeps 4 x 16 sums, and the warp adds them by shuffles.
// columns: blocks of 256 threads, a column each, over the rows of their split; L's rows staged [64][16] in shared.
// rank_times_rows: blocks of 256 threads, a column each with its r weights in registers, over 32 rows whose L rows
// are staged [32][16] in shared; every element of out is read (when accumulating) and written once, coalesced.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/LinearReference.cs (the same products as plain GEMMs);
// the ILGPU ops: Ops/LoraLinear.cs through Gemm.NT, NN and TN.
#include <stdint.h>

namespace {
constexpr int MAX_RANK = 16, THREADS = 256, WARPS = THREADS / 32;
constexpr int ROWS_PER_WARP = 4, ROWS_PER_BLOCK = WARPS * ROWS_PER_WARP, CHUNK = 256;
constexpr int LROWS = 64;
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) lora_rows_times_rank(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
    int n, int c, int rank, long rank_stride, long col_stride, float alpha, int accumulate)
{
    __shared__ float ws[MAX_RANK][CHUNK + 1]; // + 1: the staging below writes down a column when rank_stride is 1
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int row0 = blockIdx.x * ROWS_PER_BLOCK + warp * ROWS_PER_WARP;
    float acc[ROWS_PER_WARP][MAX_RANK];
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++)
#pragma unroll
        for (int q = 0; q < MAX_RANK; q++) acc[r][q] = 0.f;
    for (int j0 = 0; j0 < c; j0 += CHUNK)
    {
        __syncthreads(); // the last chunk's reads are done
        for (int e = threadIdx.x; e < MAX_RANK * CHUNK; e += THREADS)
        {
            // Consecutive threads read consecutive addresses: along j where col_stride is 1 (A), along q otherwise (B).
            int q = rank_stride == 1 ? e % MAX_RANK : e / CHUNK, jl = rank_stride == 1 ? e / MAX_RANK : e % CHUNK, j = j0 + jl;
            ws[q][jl] = q < rank && j < c ? w[q * rank_stride + j * col_stride] : 0.f;
        }
        __syncthreads();
#pragma unroll 2
        for (int t = 0; t < CHUNK / 32; t++)
        {
            int jl = lane + 32 * t, j = j0 + jl;
            float wv[MAX_RANK];
#pragma unroll
            for (int q = 0; q < MAX_RANK; q++) wv[q] = ws[q][jl];
#pragma unroll
            for (int r = 0; r < ROWS_PER_WARP; r++)
            {
                int row = row0 + r;
                float v = row < n && j < c ? x[(long)row * c + j] : 0.f;
#pragma unroll
                for (int q = 0; q < MAX_RANK; q++) acc[r][q] += v * wv[q];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++)
#pragma unroll
        for (int q = 0; q < MAX_RANK; q++)
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) acc[r][q] += __shfl_xor_sync(0xffffffffu, acc[r][q], o);
#pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++)
    {
        int row = row0 + r;
        if (row >= n) continue;
#pragma unroll
        for (int q = 0; q < MAX_RANK; q++)
            if (lane == q && q < rank)
            {
                float* o = out + (long)row * rank + q;
                *o = alpha * acc[r][q] + (accumulate ? *o : 0.f);
            }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS) lora_columns_partial(
    const float* __restrict__ y, const float* __restrict__ l, float* __restrict__ partial, int n, int c, int rank, int rows_per_split)
{
    __shared__ float ls[LROWS][MAX_RANK];
    const int j = blockIdx.x * THREADS + threadIdx.x, split = blockIdx.y;
    const int i0 = split * rows_per_split, i1 = min(n, i0 + rows_per_split);
    float acc[MAX_RANK];
#pragma unroll
    for (int q = 0; q < MAX_RANK; q++) acc[q] = 0.f;
    for (int b = i0; b < i1; b += LROWS)
    {
        __syncthreads();
        for (int e = threadIdx.x; e < LROWS * MAX_RANK; e += THREADS)
        {
            int i = b + e / MAX_RANK, q = e % MAX_RANK;
            ls[e / MAX_RANK][q] = i < i1 && q < rank ? l[(long)i * rank + q] : 0.f;
        }
        __syncthreads();
        if (j < c)
        {
            int count = min(LROWS, i1 - b);
            for (int t = 0; t < count; t++)
            {
                float v = y[(long)(b + t) * c + j];
#pragma unroll
                for (int q = 0; q < MAX_RANK; q++) acc[q] += v * ls[t][q];
            }
        }
    }
    if (j < c)
#pragma unroll
        for (int q = 0; q < MAX_RANK; q++)
            if (q < rank) partial[((long)split * c + j) * rank + q] = acc[q];
}

extern "C" __global__ void __launch_bounds__(THREADS) lora_columns_reduce(
    const float* __restrict__ partial, float* __restrict__ out, int c, int rank, int splits,
    long col_stride, long rank_stride, float alpha, int accumulate)
{
    long e = (long)blockIdx.x * THREADS + threadIdx.x;
    if (e >= (long)c * rank) return;
    int j = (int)(e / rank), q = (int)(e % rank);
    float s = 0.f;
    for (int t = 0; t < splits; t++) s += partial[(long)t * c * rank + e];
    float* o = out + j * col_stride + q * rank_stride;
    *o = alpha * s + (accumulate ? *o : 0.f);
}

extern "C" __global__ void __launch_bounds__(THREADS) lora_rank_times_rows(
    const float* __restrict__ l, const float* __restrict__ w, float* __restrict__ out,
    int n, int c, int rank, long rank_stride, long col_stride, float alpha, int accumulate)
{
    __shared__ float ls[ROWS_PER_BLOCK][MAX_RANK];
    const int j = blockIdx.x * THREADS + threadIdx.x, i0 = blockIdx.y * ROWS_PER_BLOCK;
    for (int e = threadIdx.x; e < ROWS_PER_BLOCK * MAX_RANK; e += THREADS)
    {
        int i = i0 + e / MAX_RANK, q = e % MAX_RANK;
        ls[e / MAX_RANK][q] = i < n && q < rank ? l[(long)i * rank + q] : 0.f;
    }
    __syncthreads();
    if (j >= c) return;
    float wj[MAX_RANK];
#pragma unroll
    for (int q = 0; q < MAX_RANK; q++) wj[q] = q < rank ? w[q * rank_stride + j * col_stride] : 0.f;
    int rows = min(ROWS_PER_BLOCK, n - i0);
    for (int t = 0; t < rows; t++)
    {
        float s = 0.f;
#pragma unroll
        for (int q = 0; q < MAX_RANK; q++) s += ls[t][q] * wj[q];
        float* o = out + (long)(i0 + t) * c + j;
        *o = alpha * s + (accumulate ? *o : 0.f);
    }
}
