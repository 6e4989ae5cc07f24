// linear_bf16.cu: the Linear forward on tensor cores, bf16 compute mode.
//   y[N,M] = alpha * x[N,K] W[M,K]^T + bias[M] (bias optional) + y (when accumulate)
// x is f32 (rounded to bf16 as it is staged), W is bf16, sums are f32: what PyTorch's bf16 autocast
// computes. Tensor cores through WMMA (m16n16k16, bf16 -> f32), sm_80 and later.
// Tiling: one block of 8 warps per 128 x 128 tile of y; per 32-deep slice the block stages x[128,32]
// and W[128,32] as bf16 in shared memory (rows padded by 8 so fragment loads spread over the banks),
// and warp (wm, wn) in a 2 x 4 grid multiplies a 64 x 32 piece as 4 x 2 fragments. The epilogue goes
// through a per-warp 16 x 16 f32 scratch so partial tiles, alpha, bias and accumulation are handled
// element by element. Simple first (no cp.async pipeline, no ldmatrix by hand): issue 7 tunes it.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/LinearReference.cs (with x and W in bf16).
#include <cuda_bf16.h>
#include <mma.h>

using namespace nvcuda;

namespace {
constexpr int BM = 128, BN = 128, BK = 32, PAD = 8, LDS = BK + PAD;
constexpr int WARPS_M = 2, WARPS_N = 4, WM = BM / WARPS_M, WN = BN / WARPS_N;
constexpr int FM = WM / 16, FN = WN / 16, THREADS = 32 * WARPS_M * WARPS_N;
}

extern "C" __global__ void __launch_bounds__(THREADS) linear_bf16_nt(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int n, int k, int m, float alpha, int accumulate)
{
    __shared__ __align__(32) __nv_bfloat16 sa[BM * LDS];
    __shared__ __align__(32) __nv_bfloat16 sb[BN * LDS];
    __shared__ __align__(32) float scratch[WARPS_M * WARPS_N][16 * 16];

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    for (int k0 = 0; k0 < k; k0 += BK)
    {
        // Consecutive threads take consecutive columns of a row: 128-byte (x) and 64-byte (W) runs.
        for (int e = tid; e < BM * BK; e += THREADS)
        {
            int r = e / BK, c = e % BK, gr = row0 + r, gc = k0 + c;
            sa[r * LDS + c] = __float2bfloat16(gr < n && gc < k ? x[(long)gr * k + gc] : 0.0f);
        }
        for (int e = tid; e < BN * BK; e += THREADS)
        {
            int r = e / BK, c = e % BK, gr = col0 + r, gc = k0 + c;
            sb[r * LDS + c] = gr < m && gc < k ? w[(long)gr * k + gc] : __float2bfloat16(0.0f);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16)
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[FM];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b[FN];
#pragma unroll
            for (int i = 0; i < FM; i++) wmma::load_matrix_sync(a[i], sa + (wm * WM + i * 16) * LDS + kk, LDS);
#pragma unroll
            for (int j = 0; j < FN; j++) wmma::load_matrix_sync(b[j], sb + (wn * WN + j * 16) * LDS + kk, LDS);
#pragma unroll
            for (int i = 0; i < FM; i++)
#pragma unroll
                for (int j = 0; j < FN; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    float* s = scratch[warp];
#pragma unroll
    for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++)
        {
            wmma::store_matrix_sync(s, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32)
            {
                int gr = row0 + wm * WM + i * 16 + e / 16, gc = col0 + wn * WN + j * 16 + e % 16;
                if (gr >= n || gc >= m) continue;
                float v = alpha * s[e];
                if (bias) v += bias[gc];
                long o = (long)gr * m + gc;
                if (accumulate) v += y[o];
                y[o] = v;
            }
            __syncwarp();
        }
}
