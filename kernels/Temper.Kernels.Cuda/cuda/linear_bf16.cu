// linear_bf16.cu: the Linear products with bf16 or NF4 weights on tensor cores, bf16 compute mode.
//   linear_bf16_nt / linear_nf4_nt (forward):        y[N,M] = alpha x[N,K] W[M,K]^T + bias[M] (optional) + y (when accumulate)
//   linear_bf16_nn / linear_nf4_nn (input gradient): y[N,K] = alpha x[N,M] W[M,K] + y (when accumulate)
// x is f32 (rounded to bf16 as it is staged), W is bf16, sums are f32: what PyTorch's bf16 autocast
// computes. An NF4 weight (QLoRA's frozen base: packed codes, first element in the high nibble, and the
// f32 absmax of each 64-element block of the flattened weight, decoded beforehand) is dequantised as
// it is staged, lut[code] * absmax in f32 rounded to bf16, as bitsandbytes dequantises for a bf16
// compute dtype: the full weight never exists in memory. Tensor cores through WMMA (m16n16k16,
// bf16 -> f32), sm_80 and later.
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
static_assert(B_LOADS == 2, "an NF4 thread stages 16 consecutive weights as two 8-wide chunks");
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

// The weight operand: bf16 W, or NF4 codes with their decoded block absmax and the 16-value code book.
struct Weights
{
    const __nv_bfloat16* w;
    const uint8_t* codes;
    const float* absmax;
    const float* lut;
};

// One slice of x and W in registers on its way to shared memory.
struct Staged
{
    float4 a[A_LOADS];
    uint4 b[B_LOADS];
};

// Where chunk p (8 consecutive weights) of thread tid's W share sits in the slice: bf16 W takes two chunks
// in rows 64 (NT) or 16 (NN) apart; NF4 takes one run of 16 (NT: row tid / 2, column 16 (tid % 2); NN:
// depth row tid / 8, column 16 (tid % 8)) so its codes are one 8-byte load and one absmax.
template <bool NN, bool Q4> __device__ __forceinline__ void chunk(int tid, int p, int& r, int& c)
{
    if (Q4) { r = NN ? tid / 8 : tid / 2; c = (NN ? 16 * (tid % 8) : 16 * (tid % 2)) + 8 * p; }
    else { r = NN ? tid / 16 + 16 * p : tid / 4 + 64 * p; c = NN ? 8 * (tid % 16) : 8 * (tid % 4); }
}

// Thread tid's share of slice k0: x rows r = tid / 8 + 32 p, four floats at column 4 (tid % 8); W as chunk()
// places it. Vector loads where the row length and address allow, element loads at the edges.
template <bool NN, bool Q4>
__device__ __forceinline__ void load_slice(Staged& s, const float* __restrict__ x, const Weights& wt, const float* lut,
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
    // W's rows: NN reads W[depth, cols] by depth row, NT reads W[cols, depth] by output column.
    const int ld = NN ? cols : depth, rows = NN ? depth : cols;
    if (Q4)
    {
        int r, c;
        chunk<NN, true>(tid, 0, r, c);
        int gr = (NN ? k0 : col0) + r, gc = (NN ? col0 : k0) + c;
        long f = (long)gr * ld + gc; // flattened index of the first of 16
        __nv_bfloat16 v[16];
        if (bvec && gr < rows && gc < ld)
        {
            uint2 packed = *reinterpret_cast<const uint2*>(wt.codes + f / 2);
            float a = wt.absmax[f / 64];
            uint32_t words[2] = {packed.x, packed.y};
#pragma unroll
            for (int e = 0; e < 16; e++)
            {
                uint32_t byte = words[e / 8] >> (8 * (e % 8 / 2)) & 0xFF;
                v[e] = __float2bfloat16(lut[e % 2 == 0 ? byte >> 4 : byte & 15] * a);
            }
        }
        else
        {
#pragma unroll
            for (int e = 0; e < 16; e++)
            {
                long fe = f + e;
                float value = 0.0f;
                if (gr < rows && gc + e < ld)
                {
                    uint32_t byte = wt.codes[fe / 2];
                    value = lut[fe % 2 == 0 ? byte >> 4 : byte & 15] * wt.absmax[fe / 64];
                }
                v[e] = __float2bfloat16(value);
            }
        }
        memcpy(&s.b[0], v, 16);
        memcpy(&s.b[1], v + 8, 16);
    }
    else
#pragma unroll
    for (int p = 0; p < B_LOADS; p++)
    {
        int r, c;
        chunk<NN, false>(tid, p, r, c);
        int gr = (NN ? k0 : col0) + r, gc = (NN ? col0 : k0) + c;
        const __nv_bfloat16* src = wt.w + (long)gr * ld + gc;
        if (bvec && gr < rows && gc < ld) s.b[p] = *reinterpret_cast<const uint4*>(src);
        else
        {
            __nv_bfloat16 v[8];
#pragma unroll
            for (int e = 0; e < 8; e++) v[e] = gr < rows && gc + e < ld ? src[e] : __float2bfloat16(0.0f);
            memcpy(&s.b[p], v, 16);
        }
    }
}

template <bool NN, bool Q4>
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
        int r, c;
        chunk<NN, Q4>(tid, p, r, c);
        *reinterpret_cast<uint4*>(sb + r * LDB + c) = s.b[p]; // 16-byte aligned: LDB * 2 and c * 2 are multiples of 16
    }
}
} // namespace

// depth: the summed dimension; cols: y's columns. NN selects W[depth, cols] (else W[cols, depth]).
template <bool NN, bool Q4>
__device__ __forceinline__ void linear_bf16(
    const float* __restrict__ x, const Weights wt, const float* __restrict__ bias,
    float* __restrict__ y, int n, int depth, int cols, float alpha, int accumulate, LowRank lr)
{
    using S = Stage<NN>;
    constexpr int LDB = S::LDB, LDR = MAX_RANK + 1;
    static_assert(2 * S::ELEMS * 2 >= (SCRATCH_FLOATS + 2 * 128 * LDR) * 4, "the epilogue scratch and low-rank tiles fit in the stages");
    __shared__ __align__(128) __nv_bfloat16 smem[2 * S::ELEMS];
    __shared__ float lut[16];
    using LayoutB = typename std::conditional<NN, wmma::row_major, wmma::col_major>::type;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int wm = warp / WARPS_N, wn = warp % WARPS_N;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const bool avec = depth % 4 == 0 && aligned16(x);
    // Vector loads of W: bf16 rows of a multiple of 8 (16 bytes); NF4 rows of a multiple of 16 (8 code bytes).
    const bool bvec = Q4 ? (NN ? cols : depth) % 16 == 0 && ((uintptr_t)wt.codes & 7) == 0 : (NN ? cols : depth) % 8 == 0 && aligned16(wt.w);
    if (Q4 && tid < 16) lut[tid] = wt.lut[tid];
    if (Q4) __syncthreads();

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FM][FN];
#pragma unroll
    for (int i = 0; i < FM; i++)
#pragma unroll
        for (int j = 0; j < FN; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    Staged staged;
    const int slices = (depth + BK - 1) / BK;
    if (slices > 0)
    {
        load_slice<NN, Q4>(staged, x, wt, lut, n, depth, cols, row0, col0, 0, avec, bvec);
        store_slice<NN, Q4>(staged, smem, smem + S::A_ELEMS);
    }
    __syncthreads();
    for (int s = 0; s < slices; s++)
    {
        __nv_bfloat16* sa = smem + (s % 2) * S::ELEMS;
        __nv_bfloat16* sb = sa + S::A_ELEMS;
        if (s + 1 < slices) load_slice<NN, Q4>(staged, x, wt, lut, n, depth, cols, row0, col0, (s + 1) * BK, avec, bvec);
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
            store_slice<NN, Q4>(staged, na, na + S::A_ELEMS);
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
    linear_bf16<false, false>(x, Weights{w, nullptr, nullptr, nullptr}, bias, y, n, k, m, alpha, accumulate, LowRank{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) linear_bf16_nn(
    const float* __restrict__ x, const __nv_bfloat16* __restrict__ w, float* __restrict__ y,
    int n, int k, int m, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    linear_bf16<true, false>(x, Weights{w, nullptr, nullptr, nullptr}, nullptr, y, n, m, k, alpha, accumulate, LowRank{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) linear_nf4_nt(
    const float* __restrict__ x, const uint8_t* __restrict__ codes, const float* __restrict__ absmax, const float* __restrict__ lut,
    const float* __restrict__ bias, float* __restrict__ y, int n, int k, int m, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    linear_bf16<false, true>(x, Weights{nullptr, codes, absmax, lut}, bias, y, n, k, m, alpha, accumulate, LowRank{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}

extern "C" __global__ void __launch_bounds__(THREADS, 2) linear_nf4_nn(
    const float* __restrict__ x, const uint8_t* __restrict__ codes, const float* __restrict__ absmax, const float* __restrict__ lut,
    float* __restrict__ y, int n, int k, int m, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    linear_bf16<true, true>(x, Weights{nullptr, codes, absmax, lut}, nullptr, y, n, m, k, alpha, accumulate, LowRank{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}
