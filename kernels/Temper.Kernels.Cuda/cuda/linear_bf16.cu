// linear_bf16.cu: the Linear products with bf16 weights on tensor cores, bf16 compute mode.
//   linear_bf16_nt (forward):        y[N,M] = alpha x[N,K] W[M,K]^T + bias[M] (optional) + y (when accumulate)
//   linear_bf16_nn (input gradient): y[N,K] = alpha x[N,M] W[M,K] + y (when accumulate)
// x is f32 (rounded to bf16 as it is staged), W is bf16, sums are f32: what PyTorch's bf16 autocast
// computes. Tensor cores through WMMA (m16n16k16, bf16 -> f32), sm_80 and later.
// Tiling: one block of 8 warps per 128 x 128 tile of y, 32-deep slices. Software pipeline: while the
// tensor cores work on slice s from shared memory, each thread's registers already hold slice s + 1
// loaded from global memory (16-byte vector loads where the row length and address allow, element loads
// at the edges), stored to the other of two shared-memory stages after the products, one barrier per
// slice. Shared memory holds x[128,32] and the W slice as bf16 in W's own layout (NT: [128 cols][32
// deep], read as a column-major B; NN: [32 deep][128 cols], a row-major B), rows padded by 8 so
// fragment loads spread over the banks; warp (wm, wn) in a 2 x 4 grid multiplies a 64 x 32 piece as
// 4 x 2 fragments. The epilogue goes through a per-warp 16 x 16 f32 scratch (reusing the stages) so
// partial tiles, alpha, bias and accumulation are handled element by element.
// Low-rank term (LoRA, optional): y += s L[N,r] R^T where R's element (column j, rank q) sits at
// R[j * rcol + q * rrank], so the forward passes L = xa = x A^T, R = B[M,r] (rcol r, rrank 1), s = scale,
// and the input gradient L = dxa = scale dy B, R = A[r,K] (rcol 1, rrank K), s = 1: PEFT's LoRA products
// in f32, added in the epilogue instead of a separate product that reads and writes all of y again. The
// tile's 128 rows of L and 128 columns of R are staged in shared memory after the main loop (r <= 16).
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/LinearReference.cs (with x and W in bf16).
// Checked on the CPU by the CUDA emulator (emu/) and on a GPU by CudaLinearChecks.
#include <cuda_bf16.h>
#include <mma.h>
#include <stdint.h>
#include <type_traits>

using namespace nvcuda;

namespace {
constexpr int BM = 128, BN = 128, BK = 32, PAD = 8, LDA = BK + PAD;
constexpr int WARPS_M = 2, WARPS_N = 4, WM = BM / WARPS_M, WN = BN / WARPS_N;
constexpr int FM = WM / 16, FN = WN / 16, THREADS = 32 * WARPS_M * WARPS_N;
constexpr int A_LOADS = BM * BK / 4 / THREADS; // float4 per thread per slice (4)
constexpr int B_LOADS = BN * BK / 8 / THREADS; // 8 x bf16 per thread per slice (2)
constexpr int MAX_RANK = 16, SCRATCH_FLOATS = WARPS_M * WARPS_N * 256;

// The optional low-rank term of the epilogue (l == nullptr: none).
struct LowRank
{
    const float* l;
    const float* r;
    int rank;
    int rcol, rrank;
    float scale;
};

template <bool NN> struct Stage
{
    static constexpr int LDB = NN ? BN + PAD : LDA;
    static constexpr int A_ELEMS = BM * LDA;
    static constexpr int B_ELEMS = NN ? BK * LDB : BN * LDB;
    static constexpr int ELEMS = A_ELEMS + B_ELEMS;
};

__device__ __forceinline__ bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

// One slice of x and W in registers on its way to shared memory.
struct Staged
{
    float4 a[A_LOADS];
    uint4 b[B_LOADS];
};

// Thread tid's share of slice k0: x rows r = tid / 8 + 32 p, four floats at column 4 (tid % 8); W chunks of
// eight bf16 (NT: row tid / 4 + 64 p, column 8 (tid % 4); NN: depth row tid / 16 + 16 p, column 8 (tid % 16)).
template <bool NN>
__device__ __forceinline__ void load_slice(Staged& s, const float* __restrict__ x, const __nv_bfloat16* __restrict__ w,
    int n, int depth, int cols, int row0, int col0, int k0, bool avec, bool bvec)
{
    const int tid = threadIdx.x;
#pragma unroll
    for (int p = 0; p < A_LOADS; p++)
    {
        int r = tid / 8 + 32 * p, c = 4 * (tid % 8), gr = row0 + r, gc = k0 + c;
        const float* src = x + (long)gr * depth + gc;
        if (avec && gr < n && gc < depth) s.a[p] = *reinterpret_cast<const float4*>(src);
        else
        {
            float v[4];
#pragma unroll
            for (int e = 0; e < 4; e++) v[e] = gr < n && gc + e < depth ? src[e] : 0.0f;
            s.a[p] = make_float4(v[0], v[1], v[2], v[3]);
        }
    }
#pragma unroll
    for (int p = 0; p < B_LOADS; p++)
    {
        int r, c, gr, gc, ld, rows, width;
        if (NN) { r = tid / 16 + 16 * p; c = 8 * (tid % 16); gr = k0 + r; gc = col0 + c; ld = cols; rows = depth; width = cols; }
        else { r = tid / 4 + 64 * p; c = 8 * (tid % 4); gr = col0 + r; gc = k0 + c; ld = depth; rows = cols; width = depth; }
        const __nv_bfloat16* src = w + (long)gr * ld + gc;
        if (bvec && gr < rows && gc < width) s.b[p] = *reinterpret_cast<const uint4*>(src);
        else
        {
            __nv_bfloat16 v[8];
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = gr < rows && gc + e < width ? src[e] : __float2bfloat16(0.0f);
            uint4 u;
            memcpy(&u, v, 16);
            s.b[p] = u;
        }
    }
}

template <bool NN>
__device__ __forceinline__ void store_slice(const Staged& s, __nv_bfloat16* sa, __nv_bfloat16* sb)
{
    constexpr int LDB = Stage<NN>::LDB;
    const int tid = threadIdx.x;
#pragma unroll
    for (int p = 0; p < A_LOADS; p++)
    {
        int r = tid / 8 + 32 * p, c = 4 * (tid % 8);
        __nv_bfloat16* d = sa + r * LDA + c;
        d[0] = __float2bfloat16(s.a[p].x);
        d[1] = __float2bfloat16(s.a[p].y);
        d[2] = __float2bfloat16(s.a[p].z);
        d[3] = __float2bfloat16(s.a[p].w);
    }
#pragma unroll
    for (int p = 0; p < B_LOADS; p++)
    {
        int r = NN ? tid / 16 + 16 * p : tid / 4 + 64 * p, c = NN ? 8 * (tid % 16) : 8 * (tid % 4);
        *reinterpret_cast<uint4*>(sb + r * LDB + c) = s.b[p]; // 16-byte aligned: LDB * 2 and c * 2 are multiples of 16
    }
}
} // namespace

// depth: the summed dimension; cols: y's columns. NN selects W[depth, cols] (else W[cols, depth]).
template <bool NN>
__device__ __forceinline__ void linear_bf16(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int n, int depth, int cols, float alpha, int accumulate, LowRank lr)
{
    using S = Stage<NN>;
    constexpr int LDB = S::LDB, LDR = MAX_RANK + 1;
    static_assert(2 * S::ELEMS * 2 >= (SCRATCH_FLOATS + 2 * 128 * LDR) * 4, "the epilogue scratch and low-rank tiles fit in the stages");
    __shared__ __align__(128) __nv_bfloat16 smem[2 * S::ELEMS];
    using LayoutB = typename std::conditional<NN, wmma::row_major, wmma::col_major>::type;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool avec = depth % 4 == 0 && aligned16(x);
    const bool bvec = (NN ? cols : depth) % 8 == 0 && aligned16(w);

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    Staged staged;
    const int slices = (depth + BK - 1) / BK;
    if (slices > 0)
    {
        load_slice<NN>(staged, x, w, n, depth, cols, row0, col0, 0, avec, bvec);
        store_slice<NN>(staged, smem, smem + S::A_ELEMS);
    }
    __syncthreads();
    for (int s = 0; s < slices; s++)
    {
        __nv_bfloat16* sa = smem + (s % 2) * S::ELEMS;
        __nv_bfloat16* sb = sa + S::A_ELEMS;
        if (s + 1 < slices) load_slice<NN>(staged, x, w, n, depth, cols, row0, col0, (s + 1) * BK, avec, bvec);
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16)
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[FM];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> b[FN];
#pragma unroll
            for (int i = 0; i < FM; i++) wmma::load_matrix_sync(a[i], sa + (wm * WM + i * 16) * LDA + kk, LDA);
#pragma unroll
            for (int j = 0; j < FN; j++)
                wmma::load_matrix_sync(b[j], NN ? sb + kk * LDB + wn * WN + j * 16 : sb + (wn * WN + j * 16) * LDB + kk, LDB);
#pragma unroll
            for (int i = 0; i < FM; i++)
#pragma unroll
                for (int j = 0; j < FN; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        // The other stage was last read in slice s - 1, before the barrier that ended it.
        if (s + 1 < slices)
        {
            __nv_bfloat16* na = smem + ((s + 1) % 2) * S::ELEMS;
            store_slice<NN>(staged, na, na + S::A_ELEMS);
        }
        __syncthreads();
    }

    // The stages are free after the last barrier: per-warp scratch, then the low-rank tiles.
    float* scratch = reinterpret_cast<float*>(smem) + warp * 256;
    float* ls = reinterpret_cast<float*>(smem) + SCRATCH_FLOATS; // [128 rows][LDR]
    float* rs = ls + 128 * LDR;                                  // [128 cols][LDR]
    if (lr.l)
    {
        for (int e = tid; e < 128 * lr.rank; e += THREADS)
        {
            int i = e / lr.rank, q = e % lr.rank, gr = row0 + i, gc = col0 + i;
            ls[i * LDR + q] = gr < n ? lr.l[(long)gr * lr.rank + q] : 0.0f;
            rs[i * LDR + q] = gc < cols ? lr.r[(long)gc * lr.rcol + (long)q * lr.rrank] : 0.0f;
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++)
        {
            wmma::store_matrix_sync(scratch, acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            for (int e = lane; e < 256; e += 32)
            {
                int gr = row0 + wm * WM + i * 16 + e / 16, gc = col0 + wn * WN + j * 16 + e % 16;
                if (gr >= n || gc >= cols) continue;
                float v = alpha * scratch[e];
                if (lr.l)
                {
                    const float* lrow = ls + (gr - row0) * LDR;
                    const float* rrow = rs + (gc - col0) * LDR;
                    float t = 0.0f;
                    for (int q = 0; q < lr.rank; q++) t += lrow[q] * rrow[q];
                    v += lr.scale * t;
                }
                if (bias) v += bias[gc];
                long o = (long)gr * cols + gc;
                if (accumulate) v += y[o];
                y[o] = v;
            }
            __syncwarp();
        }
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) linear_bf16_nt(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias,
    float* __restrict__ y, int n, int k, int m, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    linear_bf16<false>(x, w, bias, y, n, k, m, alpha, accumulate, LowRank{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) linear_bf16_nn(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, float* __restrict__ y,
    int n, int k, int m, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    linear_bf16<true>(x, w, nullptr, y, n, m, k, alpha, accumulate, LowRank{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}
