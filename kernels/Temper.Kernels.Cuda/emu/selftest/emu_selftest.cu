// emu_selftest.cu: kernels that exercise the CUDA emulator itself (built into libtemper_cuda_emu.so only,
// never into PTX): EmulatorChecks in Temper.Cuda.Tests runs them to show the emulator's barriers,
// shuffles, shared and dynamic shared memory behave as the GPU's do, and that a barrier only some
// threads reach is reported, wgmma_ops.cuh's emulated wgmma computes a plain product, and tma_ops.cuh's
// emulated TMA copy lands the swizzled, zero-filled box only when its mbarrier counts it, and that a launch asked to
// overlap the kernel before it fails when a thread returned without waiting for that kernel.
#include "cuda_emu.h"
#include "grid_dependency.cuh"

// sums[block] = sum of x over the block's slice of n: a warp shuffle reduction, then a shared-memory one.
extern "C" __global__ void emu_selftest_block_sum(const float* x, float* sums, int n)
{
    __shared__ float warp_sums[32];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? x[i] : 0.0f;
    for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0)
    {
        float s = 0;
        for (unsigned w = 0; w < blockDim.x / 32; w++) s += warp_sums[w];
        sums[blockIdx.x] = s;
    }
}

// dst[i] = src[n - 1 - i] through dynamic shared memory, one block.
extern "C" __global__ void emu_selftest_shared_reverse(const float* src, float* dst, int n)
{
    TEMPER_DYNAMIC_SHARED(float, staged);
    for (int i = threadIdx.x; i < n; i += blockDim.x) staged[i] = src[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = staged[n - 1 - i];
}

// A race the run order shows (TEMPER_EMU_SCHEDULE): thread 0 publishes a value through shared memory and
// every thread reads it with no barrier between, and block b reads what block b - 1 wrote. In index
// order every read comes after its write; in reverse order none does.
extern "C" __global__ void emu_selftest_racy_publish(float* seen, float* chain)
{
    __shared__ float value;
    if (threadIdx.x == 0) value = 42.0f;
    seen[blockIdx.x * blockDim.x + threadIdx.x] = value;
    if (threadIdx.x == 0) chain[blockIdx.x] = blockIdx.x == 0 ? 1.0f : chain[blockIdx.x - 1] + 1.0f;
}

// A bug the emulator must report (launch one warp): half the lanes wait at __syncthreads, the other half
// at __syncwarp, so neither barrier is ever complete.
extern "C" __global__ void emu_selftest_divergent_barrier(float* x)
{
    if (threadIdx.x < blockDim.x / 2)
    {
        __syncthreads();
        x[threadIdx.x] = 1.0f;
    }
    else
    {
        __syncwarp();
    }
}

// One warpgroup (128 threads) runs wgmma_ops.cuh's m64n128k16 over K = 64: a [64][64] and b [128][64] bf16
// (K-major) staged in dynamic shared memory (24 KB) in the 128B-swizzled layout (16-byte chunk c of row r at
// chunk c ^ (r % 8)), y[64][128] = a b^T from the accumulator fragments. The first k16 step passes
// scale-d = 0, so the NaN the accumulators start with must not reach y. plant: 1 stages the chunks
// unswizzled, 2 gives the descriptors a 512-byte stride between 8-row groups (bugs the check must see).
#include "wgmma_ops.cuh"
extern "C" __global__ void emu_selftest_wgmma(const uint16_t* a, const uint16_t* b, float* y, int plant)
{
    TEMPER_DYNAMIC_SHARED(unsigned char, smem);
    unsigned char* sa = smem;
    unsigned char* sb = smem + 64 * 128;
    for (int c = threadIdx.x; c < (64 + 128) * 8; c += blockDim.x)
    {
        int r = c / 8, q = c % 8, slot = plant == 1 ? q : q ^ (r % 8);
        const uint16_t* src = r < 64 ? a + r * 64 + 8 * q : b + (r - 64) * 64 + 8 * q;
        std::memcpy(smem + r * 128 + 16 * slot, src, 16);
    }
    fence_proxy_async();
    __syncthreads();
    float d[64];
    for (int i = 0; i < 64; i++) d[i] = NAN;
    uint32_t sbo = plant == 2 ? 512 : 1024;
    wgmma_fence();
    for (int kk = 0; kk < 4; kk++) wgmma_m64n128k16(d, wgmma_desc(sa + 32 * kk, sbo, 1), wgmma_desc(sb + 32 * kk, sbo, 1), kk > 0);
    wgmma_commit();
    wgmma_wait<0>();
    int w = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    for (int i = 0; i < 64; i++) y[(16 * w + g + 8 * ((i / 2) % 2)) * 128 + 8 * (i / 4) + 2 * t + i % 2] = d[i];
}

// One TMA copy (tma_ops.cuh) counted by one mbarrier, 64 threads: thread 0 inits the barrier (1 arrival),
// thread 32 arms it with `expect` bytes and copies the map's box at (c0, c1) to dynamic shared offset 0;
// warp 0 waits with `parity`, then writes the 2048 shared bytes as they landed (swizzled, zero past the
// tensor) to out. With expect = the box's bytes and parity 0 that is the box; a wrong expect_tx or parity
// must deadlock or fail the launch (EmulatorChecks).
#include "tma_ops.cuh"
extern "C" __global__ void emu_selftest_tma(const __grid_constant__ TensorMap map, unsigned char* out, int c0, int c1, int expect, int parity)
{
    TEMPER_DYNAMIC_SHARED(unsigned char, smem); // 2048 bytes of box, then the barrier
    uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 2048);
    if (threadIdx.x == 0)
    {
        mbar_init(bar, 1);
        fence_mbarrier_init();
    }
    __syncthreads();
    if (threadIdx.x == 32)
    {
        mbar_arrive_expect_tx(bar, (uint32_t)expect);
        tma_load_2d(smem, &map, c0, c1, bar);
    }
    if (threadIdx.x >= 32) return;
    mbar_wait(bar, (uint32_t)parity);
    for (int i = threadIdx.x; i < 2048; i += 32) out[i] = smem[i];
}

// dst[i] = src[i] after the wait for the kernels before (grid_dependency.cuh), which thread `skip` (-1: none) leaves out.
extern "C" __global__ void emu_selftest_wait_then_copy(const float* src, float* dst, int n, int skip)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i != skip) wait_for_prior_grids();
    allow_dependent_grids();
    if (i < n) dst[i] = src[i];
}
