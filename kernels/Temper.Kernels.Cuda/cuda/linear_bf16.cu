// linear_bf16.cu: the Linear products with bf16 weights on tensor cores, bf16 compute mode.
//   linear_bf16_nt (forward):        y[N,M] = alpha x[N,K] W[M,K]^T + bias[M] (optional) + y (when accumulate)
//   linear_bf16_nn (input gradient): y[N,K] = alpha x[N,M] W[M,K] + y (when accumulate)
// x is f32 (rounded to bf16 as it is staged), W is bf16, sums are f32: what PyTorch's bf16 autocast
// computes. Tensor cores through WMMA (m16n16k16, bf16 -> f32), sm_80 and later.
// Tiling: one block of 8 warps per 128 x 128 tile of y; per 32-deep slice the block stages x[128,32]
// and the W slice as bf16 in shared memory in W's own layout (NT: [128 cols][32 deep], read as a
// column-major B; NN: [32 deep][128 cols], a row-major B), rows padded by 8 so fragment loads spread
// over the banks,
// and warp (wm, wn) in a 2 x 4 grid multiplies a 64 x 32 piece as 4 x 2 fragments. The epilogue goes
// through a per-warp 16 x 16 f32 scratch so partial tiles, alpha, bias and accumulation are handled
// element by element. Simple first (no cp.async pipeline, no ldmatrix by hand): issue 7 tunes it.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/LinearReference.cs (with x and W in bf16).
#include <cuda_bf16.h>
#include <mma.h>
#include <type_traits>

using namespace nvcuda;

namespace {
constexpr int BM = 128, BN = 128, BK = 32, PAD = 8, LDS = BK + PAD;
constexpr int WARPS_M = 2, WARPS_N = 4, WM = BM / WARPS_M, WN = BN / WARPS_N;
constexpr int FM = WM / 16, FN = WN / 16, THREADS = 32 * WARPS_M * WARPS_N;
}

// depth: the summed dimension; cols: y's columns. NN selects W[depth, cols] (else W[cols, depth]).
template <bool NN>
__device__ __forceinline__ void linear_bf16(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int n, int depth, int cols, float alpha, int accumulate)
{
    constexpr int LDB = NN ? BN + PAD : LDS;
    __shared__ __align__(32) __nv_bfloat16 sa[BM * LDS];
    __shared__ __align__(32) __nv_bfloat16 sb[NN ? BK * LDB : BN * LDB];
    __shared__ __align__(32) float scratch[WARPS_M * WARPS_N][16 * 16];
    using LayoutB = typename std::conditional<NN, wmma::row_major, wmma::col_major>::type;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    for (int k0 = 0; k0 < depth; k0 += BK)
    {
        // Consecutive threads take consecutive elements of a row of x and of W (coalesced).
        for (int e = tid; e < BM * BK; e += THREADS)
        {
            int r = e / BK, c = e % BK, gr = row0 + r, gc = k0 + c;
            sa[r * LDS + c] = __float2bfloat16(gr < n && gc < depth ? x[(long)gr * depth + gc] : 0.0f);
        }
        for (int e = tid; e < BN * BK; e += THREADS)
        {
            if (NN)
            {
                int q = e / BN, c = e % BN, gq = k0 + q, gc = col0 + c;
                sb[q * LDB + c] = gq < depth && gc < cols ? w[(long)gq * cols + gc] : __float2bfloat16(0.0f);
            }
            else
            {
                int r = e / BK, c = e % BK, gr = col0 + r, gc = k0 + c;
                sb[r * LDB + c] = gr < cols && gc < depth ? w[(long)gr * depth + gc] : __float2bfloat16(0.0f);
            }
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16)
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[FM];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> b[FN];
#pragma unroll
            for (int i = 0; i < FM; i++) wmma::load_matrix_sync(a[i], sa + (wm * WM + i * 16) * LDS + kk, LDS);
#pragma unroll
            for (int j = 0; j < FN; j++)
                wmma::load_matrix_sync(b[j], NN ? sb + kk * LDB + wn * WN + j * 16 : sb + (wn * WN + j * 16) * LDB + kk, LDB);
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
                if (gr >= n || gc >= cols) continue;
                float v = alpha * s[e];
                if (bias) v += bias[gc];
                long o = (long)gr * cols + gc;
                if (accumulate) v += y[o];
                y[o] = v;
            }
            __syncwarp();
        }
}

extern "C" __global__ void __launch_bounds__(THREADS) linear_bf16_nt(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int n, int k, int m, float alpha, int accumulate)
{
    linear_bf16<false>(x, w, bias, y, n, k, m, alpha, accumulate);
}

extern "C" __global__ void __launch_bounds__(THREADS) linear_bf16_nn(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, float* __restrict__ y,
    int n, int k, int m, float alpha, int accumulate)
{
    linear_bf16<true>(x, w, nullptr, y, n, m, k, alpha, accumulate);
}
