// gemm_bf16_sm90.cu: the forward Linear product on Hopper tensor cores through wgmma (sm_90a only):
//   gemm_bf16_sm90_nt:      y[N,M] = alpha x[N,K] W[M,K]^T + bias[M] (optional) + s L R^T (optional LoRA term) + y (when accumulate);
//                           x and W bf16 (x converted once per product by gemm_bf16.cu's convert_f32_bf16), sums f32.
//   gemm_bf16_sm90_nt_wide: the same on 128 x 256 tiles (each warpgroup two m64n128k16 per k16 step).
// Which tile is faster on an H100 is for the GPU to tell (bench/gpu/lease.sh gemm-sm90).
// Needs K a multiple of 8 and 16-byte aligned operands (CudaGemmSm90 checks).
// Tiling: one block of 2 warpgroups (256 threads) per 128 x BN tile of y (BN 128 or 256), warpgroup g the
// rows 64g..64g+63 as BN / 128 wgmma.m64n128k16 (BN / 2 f32 accumulators per thread). 64-deep slices of x
// and W (128 and BN rows x 128 bytes) arrive by cp.async in a 4-stage ring in dynamic shared memory
// (1024-byte aligned; 129 KB, wide 193 KB), stored in the 128B-swizzled K-major layout wgmma reads through
// descriptors (16-byte chunk c of row r at chunk c ^ (r % 8); 8-row groups 1024 bytes apart); rows past N
// or M and the zero tail of K are zero-filled by cp.async. Each slice: wait for its copies,
// fence.proxy.async (the copies become visible to wgmma), a barrier, the copy of slice s + 2 issued, then
// the wgmmas of 4 k16 steps (descriptor start + 32 bytes each), committed as one group; wgmma_wait<1>
// leaves that group running while the next slice is set up, and the barrier at the next slice's top means
// the stage slice s + 2 overwrites was last read by slice s - 2's wgmmas, which every warpgroup has
// retired by then.
// gemm_bf16_sm90_tma_nt / _tma_nt_wide: the same product with the slices loaded by TMA (tma_ops.cuh) in a
// warp-specialised block of 384 threads: warpgroup 2's first thread produces (per slice: wait for the
// stage's `empty` mbarrier, arrive.expect_tx on its `full` one with the stage's bytes, two
// cp.async.bulk.tensor.2d copies of 128B-swizzled boxes, x [128 x 64] and W [BN x 64], zero-filled past N,
// M and K, by the tensor maps CudaGemmSm90 encodes); warpgroups 0 and 1 consume (wait for `full` with the
// round's parity, the same wgmmas, wgmma_wait<1>, then each warp's lane 0 arrives on the previous
// slice's `empty`: 8 arrivals free a stage; the wide kernel as one m64n256k16 per k16 step, its fragment
// the two m64n128k16's side by side). 6 stages of 128 x 128 (4 of 128 x 256); setmaxnreg gives the
// producer 40 registers and the consumers 232. Persistent: at most one block per SM, each taking every
// gridDim.x-th tile in bands of 8 row tiles (grouped_tile, for L2 reuse), its ring running on across
// tiles so the next tile's loads overlap this one's epilogue.
// Epilogue: alpha, the optional LoRA term s L R^T (as gemm_bf16.cu's: L [N,rank] f32, R's element (column j,
// rank q) at R[j rcol + q rrank]; read from global memory, rank by rank into the alpha-scaled accumulators
// in place, so it costs no registers or shared memory the main loop needs), bias and accumulation element
// by element from the accumulator fragments. CudaLinear sends LoRA terms here only where opted in
// (TEMPER_GEMM_SM90_LORA=1) until a GPU has checked it.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/LinearReference.cs (x and W in bf16).
// Checked on the CPU by the CUDA emulator (wgmma_ops.cuh's PTX ISA reading) in CudaGemmSm90Checks; only an
// H100 runs the real instructions (TEMPER_GEMM_SM90=1, wide or tma opts CudaLinear in).
// ptx-target: sm_90a
#include <cuda_bf16.h>
#include <stdint.h>
#include "ptx_ops.cuh"
#include "wgmma_ops.cuh"
#include "tma_ops.cuh"

#ifndef TEMPER_CUDA_EMU
#define TEMPER_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

namespace {
constexpr int BM = 128, BK = 64, STAGES = 4, THREADS = 256;
constexpr int TILE_BYTES = BM * BK * 2; // the x tile; the W tile follows it in each stage
template <int BN> constexpr int STAGE_BYTES = TILE_BYTES + BN * BK * 2;
static_assert(TILE_BYTES % 1024 == 0, "tiles start on 1024-byte swizzle atoms");
}

// Slice k0 into a stage: 8 chunks of 16 bytes per row, 4 per thread of x and BN / 32 of W, swizzled.
template <int BN>
__device__ __forceinline__ void load_slice_sw128(unsigned char* stage, const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
    int n, int depth, int cols, int row0, int col0, int k0)
{
#pragma unroll
    for (int p = 0; p < BM * 8 / THREADS; p++)
    {
        int c = threadIdx.x + p * THREADS, r = c / 8, q = c % 8;
        int offset = r * 128 + 16 * (q ^ (r % 8)), gk = k0 + 8 * q, gr = row0 + r;
        bool full = gr < n && gk < depth;
        cp_async_16(stage + offset, full ? x + (long)gr * depth + gk : x, full);
    }
#pragma unroll
    for (int p = 0; p < BN * 8 / THREADS; p++)
    {
        int c = threadIdx.x + p * THREADS, r = c / 8, q = c % 8;
        int offset = r * 128 + 16 * (q ^ (r % 8)), gk = k0 + 8 * q, gc = col0 + r;
        bool full = gc < cols && gk < depth;
        cp_async_16(stage + TILE_BYTES + offset, full ? w + (long)gc * depth + gk : w, full);
    }
}

// Epilogue of a consumer thread (warpgroup tid / 128 of the tile's rows): y = alpha acc (+ bias) (+ y), the
// fragment's column pairs (2t, 2t + 1) as one 8-byte access where both lie in y and M is even (aligned).
template <int BN>
__device__ __forceinline__ void store_tile(const float* acc, const float* __restrict__ bias, float* __restrict__ y, int n, int cols,
    float alpha, int accumulate, int row0, int col0)
{
    const int tid = threadIdx.x, group = tid / 128, warp = (tid % 128) / 32, g = tid % 32 / 4, t = tid % 4;
#pragma unroll
    for (int i = 0; i < BN / 2; i += 2)
    {
        int gr = row0 + 64 * group + 16 * warp + g + 8 * ((i % 64 / 2) % 2), gc = col0 + 128 * (i / 64) + 8 * (i % 64 / 4) + 2 * t;
        if (gr >= n || gc >= cols) continue;
        long o = (long)gr * cols + gc;
        if (gc + 1 < cols && cols % 2 == 0)
        {
            float2 v = make_float2(alpha * acc[i], alpha * acc[i + 1]);
            if (bias) v.x += bias[gc], v.y += bias[gc + 1];
            if (accumulate)
            {
                float2 old = *reinterpret_cast<const float2*>(y + o);
                v.x += old.x, v.y += old.y;
            }
            *reinterpret_cast<float2*>(y + o) = v;
            continue;
        }
        for (int e = 0; e < 2 && gc + e < cols; e++)
        {
            float v = alpha * acc[i + e];
            if (bias) v += bias[gc + e];
            if (accumulate) v += y[o + e];
            y[o + e] = v;
        }
    }
}

// The optional LoRA term of the epilogue (l null: none).
struct LoraTerm
{
    const float* __restrict__ l;
    const float* __restrict__ r;
    int rank, rcol, rrank;
    float scale;
};

// acc = alpha acc + scale L R^T for a consumer thread's fragment (rows ra and ra + 8 of its warp's 16, the
// columns store_tile names); rows past N and columns past M read nothing. Then store_tile with alpha 1.
template <int BN>
__device__ __forceinline__ void add_lora(float* acc, const LoraTerm& lora, float alpha, int n, int cols, int row0, int col0)
{
    const int tid = threadIdx.x, group = tid / 128, warp = (tid % 128) / 32, g = tid % 32 / 4, t = tid % 4;
    const int ra = row0 + 64 * group + 16 * warp + g, rb = ra + 8;
#pragma unroll
    for (int i = 0; i < BN / 2; i++) acc[i] *= alpha;
    for (int q = 0; q < lora.rank; q++)
    {
        float la = ra < n ? lora.scale * lora.l[(long)ra * lora.rank + q] : 0.0f;
        float lb = rb < n ? lora.scale * lora.l[(long)rb * lora.rank + q] : 0.0f;
#pragma unroll
        for (int i = 0; i < BN / 2; i++)
        {
            int gc = col0 + 128 * (i / 64) + 8 * (i % 64 / 4) + 2 * t + i % 2;
            float rv = gc < cols ? lora.r[(long)gc * lora.rcol + (long)q * lora.rrank] : 0.0f;
            acc[i] += ((i / 2) % 2 ? lb : la) * rv;
        }
    }
}

// The epilogue: the LoRA term where there is one, then alpha (unless already applied), bias, accumulation.
template <int BN>
__device__ __forceinline__ void finish_tile(float* acc, const LoraTerm& lora, const float* __restrict__ bias, float* __restrict__ y, int n, int cols,
    float alpha, int accumulate, int row0, int col0)
{
    if (lora.l)
    {
        add_lora<BN>(acc, lora, alpha, n, cols, row0, col0);
        alpha = 1.0f;
    }
    store_tile<BN>(acc, bias, y, n, cols, alpha, accumulate, row0, col0);
}

template <int BN>
__device__ __forceinline__ void gemm_sm90(
    const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
    int n, int depth, int cols, float alpha, int accumulate, const LoraTerm& lora)
{
    constexpr int ACC = BN / 2, STAGE = STAGE_BYTES<BN>;
    TEMPER_DYNAMIC_SHARED(unsigned char, raw); // STAGES * STAGE + 1024 bytes
    unsigned char* ring = raw + ((1024 - (static_cast<uint32_t>(__cvta_generic_to_shared(raw)) & 1023)) & 1023);
    const int tid = threadIdx.x, group = tid / 128;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int slices = (depth + BK - 1) / BK;

    float acc[ACC];
#pragma unroll
    for (int i = 0; i < ACC; i++) acc[i] = 0.0f;

    // Prologue: slices 0 .. STAGES-3 in flight (an empty group where there is no slice).
#pragma unroll
    for (int s = 0; s < STAGES - 2; s++)
    {
        if (s < slices) load_slice_sw128<BN>(ring + s * STAGE, x, w, n, depth, cols, row0, col0, s * BK);
        cp_async_commit();
    }
    for (int s = 0; s < slices; s++)
    {
        cp_async_wait<STAGES - 3>(); // slice s has landed (this thread's copies)
        fence_proxy_async();         // ... and is visible to wgmma
        __syncthreads();             // ... for every thread's copies; slice s - 2's wgmmas are retired
        int next = s + STAGES - 2;
        if (next < slices) load_slice_sw128<BN>(ring + (next % STAGES) * STAGE, x, w, n, depth, cols, row0, col0, next * BK);
        cp_async_commit();
        const unsigned char* stage = ring + (s % STAGES) * STAGE;
#pragma unroll
        for (int i = 0; i < ACC; i++) wgmma_hold(acc[i]);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++)
#pragma unroll
            for (int h = 0; h < BN / 128; h++) // columns 128h.. of the tile: W rows 128h.., 16 KB on
                wgmma_m64n128k16(acc + 64 * h, wgmma_desc(stage + group * 64 * 128 + 32 * kk, 1024, 1),
                    wgmma_desc(stage + TILE_BYTES + h * 128 * 128 + 32 * kk, 1024, 1), 1);
        wgmma_commit();
#pragma unroll
        for (int i = 0; i < ACC; i++) wgmma_hold(acc[i]);
        wgmma_wait<1>();
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < ACC; i++) wgmma_hold(acc[i]);
    cp_async_wait<0>();

    finish_tile<BN>(acc, lora, bias, y, n, cols, alpha, accumulate, row0, col0);
}

extern "C" __global__ void __launch_bounds__(THREADS) gemm_bf16_sm90_nt(
    const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
    int n, int depth, int cols, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    gemm_sm90<128>(x, w, bias, y, n, depth, cols, alpha, accumulate, LoraTerm{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}

extern "C" __global__ void __launch_bounds__(THREADS) gemm_bf16_sm90_nt_wide(
    const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
    int n, int depth, int cols, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    gemm_sm90<256>(x, w, bias, y, n, depth, cols, alpha, accumulate, LoraTerm{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}

// The TMA variant: warpgroups 0 and 1 consume (wgmma, as above), warpgroup 2 produces: its first thread
// waits for a stage's empty barrier, arms the stage's full barrier with the stage's bytes (expect_tx) and
// issues the two tensor copies (x's 128-row box, W's BN-row box, 64 elements deep, 128B-swizzled, zero
// past the tensors' edges) that complete it.
namespace {
constexpr int TMA_THREADS = 384, CONSUMER_WARPS = 8;
template <int BN> constexpr int TMA_STAGES = BN == 256 ? 4 : 6; // 193 KB of ring either way
}

// Tile t (of row_tiles x col_tiles) -> its (row tile, column tile): bands of GROUP row tiles, each walked
// column by column with the band's row tiles adjacent, so the tiles in flight at once share x's rows and
// W's columns in L2 (rather than every block of a wave needing the same x rows and all of W).
__device__ __forceinline__ int2 grouped_tile(int t, int row_tiles, int col_tiles)
{
    constexpr int GROUP = 8;
    const int band = t / (GROUP * col_tiles), first = band * GROUP, rows = min(row_tiles - first, GROUP), in_band = t % (GROUP * col_tiles);
    return make_int2(first + in_band % rows, in_band / rows);
}

// Persistent: block b takes tiles b, b + gridDim.x, ... (CudaGemmSm90 launches one block per SM at most).
// Slices are counted across the block's tiles (it), so the ring and its barriers' phases run on from one
// tile to the next: the producer loads the next tile's first slices while the consumers store this one.
template <int BN>
__device__ __forceinline__ void gemm_sm90_tma(const TensorMap& map_x, const TensorMap& map_w, const float* __restrict__ bias, float* __restrict__ y,
    int n, int depth, int cols, float alpha, int accumulate, const LoraTerm& lora)
{
    constexpr int ACC = BN / 2, STAGE = STAGE_BYTES<BN>, S = TMA_STAGES<BN>;
    TEMPER_DYNAMIC_SHARED(unsigned char, raw); // S * STAGE + 16 S (barriers) + 1024 bytes
    unsigned char* ring = raw + ((1024 - (static_cast<uint32_t>(__cvta_generic_to_shared(raw)) & 1023)) & 1023);
    uint64_t* full = reinterpret_cast<uint64_t*>(ring + S * STAGE); // a stage's copies landed
    uint64_t* empty = full + S;                                      // every consumer warp retired its wgmmas on a stage
    const int tid = threadIdx.x, group = tid / 128;
    const int row_tiles = (n + BM - 1) / BM, col_tiles = (cols + BN - 1) / BN, tiles = row_tiles * col_tiles;
    const int slices = (depth + BK - 1) / BK;
    if (tid == 0)
    {
        for (int s = 0; s < S; s++)
        {
            mbar_init(full + s, 1);
            mbar_init(empty + s, CONSUMER_WARPS);
        }
        fence_mbarrier_init();
    }
    __syncthreads();

    if (group == 2)
    {
        setmaxnreg_dec<40>();
        if (tid == 256)
            for (int t = blockIdx.x, it = 0; t < tiles; t += gridDim.x)
            {
                const int2 at = grouped_tile(t, row_tiles, col_tiles);
                for (int s = 0; s < slices; s++, it++)
                {
                    int stage = it % S;
                    mbar_wait(empty + stage, ((it / S) & 1) ^ 1); // the first round passes: no one has used the stage
                    mbar_arrive_expect_tx(full + stage, STAGE);
                    tma_load_2d(ring + stage * STAGE, &map_x, s * BK, at.x * BM, full + stage);
                    tma_load_2d(ring + stage * STAGE + TILE_BYTES, &map_w, s * BK, at.y * BN, full + stage);
                }
            }
        return;
    }
    setmaxnreg_inc<232>();

    float acc[ACC];
    for (int t = blockIdx.x, it = 0; t < tiles; t += gridDim.x)
    {
        const int2 at = grouped_tile(t, row_tiles, col_tiles);
#pragma unroll
        for (int i = 0; i < ACC; i++) acc[i] = 0.0f;
        for (int s = 0; s < slices; s++, it++)
        {
            int stage = it % S;
            mbar_wait(full + stage, (it / S) & 1);
            const unsigned char* tile = ring + stage * STAGE;
#pragma unroll
            for (int i = 0; i < ACC; i++) wgmma_hold(acc[i]);
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < BK / 16; kk++)
            {
                uint64_t a = wgmma_desc(tile + group * 64 * 128 + 32 * kk, 1024, 1), b = wgmma_desc(tile + TILE_BYTES + 32 * kk, 1024, 1);
                if constexpr (BN == 256)
                    wgmma_m64n256k16(acc, a, b, 1); // W's 256 rows in one instruction: the A tile read once per k16
                else
                    wgmma_m64n128k16(acc, a, b, 1);
            }
            wgmma_commit();
#pragma unroll
            for (int i = 0; i < ACC; i++) wgmma_hold(acc[i]);
            wgmma_wait<1>(); // the previous slice's wgmmas retired (the whole warp's): its stage may be refilled
            if (s > 0 && tid % 32 == 0) mbar_arrive(empty + (it - 1) % S);
        }
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < ACC; i++) wgmma_hold(acc[i]);
        if (slices > 0 && tid % 32 == 0) mbar_arrive(empty + (it - 1) % S); // the tile's last slice
        finish_tile<BN>(acc, lora, bias, y, n, cols, alpha, accumulate, at.x * BM, at.y * BN);
    }
}

extern "C" __global__ void __launch_bounds__(TMA_THREADS, 1) gemm_bf16_sm90_tma_nt(const __grid_constant__ TensorMap map_x,
    const __grid_constant__ TensorMap map_w, const float* __restrict__ bias, float* __restrict__ y, int n, int depth, int cols, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    gemm_sm90_tma<128>(map_x, map_w, bias, y, n, depth, cols, alpha, accumulate, LoraTerm{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}

extern "C" __global__ void __launch_bounds__(TMA_THREADS, 1) gemm_bf16_sm90_tma_nt_wide(const __grid_constant__ TensorMap map_x,
    const __grid_constant__ TensorMap map_w, const float* __restrict__ bias, float* __restrict__ y, int n, int depth, int cols, float alpha, int accumulate,
    const float* __restrict__ lora_l, const float* __restrict__ lora_r, int rank, int rcol, int rrank, float lora_scale)
{
    gemm_sm90_tma<256>(map_x, map_w, bias, y, n, depth, cols, alpha, accumulate, LoraTerm{lora_l, lora_r, rank, rcol, rrank, lora_scale});
}
