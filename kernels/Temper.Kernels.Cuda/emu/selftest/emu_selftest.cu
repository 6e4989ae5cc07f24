// emu_selftest.cu: kernels that exercise the CUDA emulator itself (built into libtemper_cuda_emu.so only,
// never into PTX): EmulatorChecks in Temper.Cuda.Tests runs them to show the emulator's barriers,
// shuffles, shared and dynamic shared memory behave as the GPU's do, and that a barrier only some
// threads reach is reported.
#include "cuda_emu.h"

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
