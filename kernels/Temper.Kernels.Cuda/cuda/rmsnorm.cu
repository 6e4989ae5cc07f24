// rmsnorm.cu: RMSNorm (HF LlamaRMSNorm, f32) over the rows of x[N,C], forward and backward.
//   rmsnorm_forward:        rstd[n] = 1 / sqrt(mean(x[n]^2) + eps) (rstd optional: null skips it),
//                           y[n] = w[C] * (x[n] * rstd[n]); y may alias x.
//   rmsnorm_add_forward:    sum = a + b (a residual add), then rmsnorm_forward of sum, in one pass over the rows; the bits
//                           of the add then the norm; sum may alias a or b, y any of them.
//   rmsnorm_backward_rows:  with xhat = x rstd and g = dy w: dx = rstd (g - xhat mean(g xhat)), overwritten, or
//                           added to dx (accumulate != 0: a residual stream's gradient); dx may alias dy or x
//                           when it is overwritten.
//   rmsnorm_backward_weight: dw[C] += sum_n dy[n] xhat[n]; no atomics: a block of 32 columns x 8 row lanes,
//                           each lane sums its rows in order, then the 8 partials are added in lane order, so
//                           the result is the same run after run (the ILGPU op's contract: deterministic).
// One block of 256 threads per row; each thread handles the same elements in both passes over the row (so
// the aliasing above is safe), 16-byte loads (float4) when C % 4 == 0 and every row pointer is 16-byte
// aligned, single floats otherwise. Row sums: warp shuffles, then the 8 warp sums through shared memory.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/RmsNormReference.cs; the ILGPU op: Ops/RmsNorm.cs.
#include <stdint.h>

namespace {
constexpr int THREADS = 256;
constexpr int WARPS = THREADS / 32;
constexpr int WEIGHT_COLS = 32, WEIGHT_LANES = 8;

// The sum of v over the block, returned to every thread (two __syncthreads; warp_sums is reused per call).
__device__ __forceinline__ float block_sum(float v, float* warp_sums)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) total += warp_sums[w];
    __syncthreads(); // before a later call overwrites warp_sums
    return total;
}

__device__ __forceinline__ bool vectorised(int c, const void* a, const void* b, const void* d, const void* e)
{
    return (c & 3) == 0 && ((((uintptr_t)a) | ((uintptr_t)b) | ((uintptr_t)d) | ((uintptr_t)e)) & 15) == 0;
}

// x's row, or with ADD sum = a + b's (written to sum, then read back by the same threads): rstd and y as rmsnorm_forward.
// The same threads take the same elements and sum them in the same order either way, so the fused form gives the bits
// of the add then the norm.
template <bool ADD>
__device__ __forceinline__ void forward(const float* x, const float* b, float* sum, const float* __restrict__ w, float* y, float* __restrict__ rstd, int c, float eps)
{
    __shared__ float warp_sums[WARPS];
    long o = (long)blockIdx.x * c;
    const float* xr = x + o;
    const float* br = ADD ? b + o : nullptr;
    float* sr = ADD ? sum + o : nullptr;
    float* yr = y + o;
    bool vec = vectorised(c, x, w, y, ADD ? (const void*)((uintptr_t)b | (uintptr_t)sum) : nullptr); // c % 4 == 0 and aligned bases: every row aligned
    float part = 0.f;
    if (vec)
    {
        for (int j = threadIdx.x * 4; j < c; j += THREADS * 4)
        {
            float4 v = *reinterpret_cast<const float4*>(xr + j);
            if (ADD)
            {
                float4 u = *reinterpret_cast<const float4*>(br + j);
                v = make_float4(v.x + u.x, v.y + u.y, v.z + u.z, v.w + u.w);
                *reinterpret_cast<float4*>(sr + j) = v;
            }
            part += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    }
    else
    {
        for (int j = threadIdx.x; j < c; j += THREADS)
        {
            float v = xr[j];
            if (ADD) sr[j] = v = v + br[j];
            part += v * v;
        }
    }
    float r = 1.f / sqrtf(block_sum(part, warp_sums) / c + eps);
    if (rstd != nullptr && threadIdx.x == 0) rstd[blockIdx.x] = r;
    const float* nr = ADD ? sr : xr; // what was normed: this thread's own elements of sum
    if (vec)
    {
        for (int j = threadIdx.x * 4; j < c; j += THREADS * 4)
        {
            float4 v = *reinterpret_cast<const float4*>(nr + j);
            float4 g = *reinterpret_cast<const float4*>(w + j);
            *reinterpret_cast<float4*>(yr + j) = make_float4(g.x * (v.x * r), g.y * (v.y * r), g.z * (v.z * r), g.w * (v.w * r));
        }
    }
    else
    {
        for (int j = threadIdx.x; j < c; j += THREADS) yr[j] = w[j] * (nr[j] * r);
    }
}
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) rmsnorm_forward(
    const float* __restrict__ x, const float* __restrict__ w, float* y, float* __restrict__ rstd, int c, float eps)
{
    forward<false>(x, nullptr, nullptr, w, y, rstd, c, eps);
}

extern "C" __global__ void __launch_bounds__(THREADS) rmsnorm_add_forward(
    const float* a, const float* b, float* sum, const float* __restrict__ w, float* y, float* __restrict__ rstd, int c, float eps)
{
    forward<true>(a, b, sum, w, y, rstd, c, eps);
}

extern "C" __global__ void __launch_bounds__(THREADS) rmsnorm_backward_rows(
    const float* dy, const float* x, const float* __restrict__ w, const float* __restrict__ rstd, float* dx, int c, int accumulate)
{
    __shared__ float warp_sums[WARPS];
    long o = (long)blockIdx.x * c;
    const float* dyr = dy + o;
    const float* xr = x + o;
    float* dxr = dx + o;
    bool vec = vectorised(c, dy, x, w, dx);
    float r = rstd[blockIdx.x], part = 0.f;
    if (vec)
    {
        for (int j = threadIdx.x * 4; j < c; j += THREADS * 4)
        {
            float4 d = *reinterpret_cast<const float4*>(dyr + j);
            float4 v = *reinterpret_cast<const float4*>(xr + j);
            float4 g = *reinterpret_cast<const float4*>(w + j);
            part += d.x * g.x * (v.x * r) + d.y * g.y * (v.y * r) + d.z * g.z * (v.z * r) + d.w * g.w * (v.w * r);
        }
    }
    else
    {
        for (int j = threadIdx.x; j < c; j += THREADS) part += dyr[j] * w[j] * (xr[j] * r);
    }
    float mean = block_sum(part, warp_sums) / c;
    if (vec)
    {
        for (int j = threadIdx.x * 4; j < c; j += THREADS * 4)
        {
            float4 d = *reinterpret_cast<const float4*>(dyr + j);
            float4 v = *reinterpret_cast<const float4*>(xr + j);
            float4 g = *reinterpret_cast<const float4*>(w + j);
            float4 o = accumulate ? *reinterpret_cast<const float4*>(dxr + j) : make_float4(0.f, 0.f, 0.f, 0.f);
            *reinterpret_cast<float4*>(dxr + j) = make_float4(
                o.x + r * (d.x * g.x - v.x * r * mean), o.y + r * (d.y * g.y - v.y * r * mean),
                o.z + r * (d.z * g.z - v.z * r * mean), o.w + r * (d.w * g.w - v.w * r * mean));
        }
    }
    else
    {
        for (int j = threadIdx.x; j < c; j += THREADS) dxr[j] = (accumulate ? dxr[j] : 0.f) + r * (dyr[j] * w[j] - xr[j] * r * mean);
    }
}

// Block (32, 8): column blockIdx.x * 32 + threadIdx.x, rows threadIdx.y, threadIdx.y + 8, ...
extern "C" __global__ void __launch_bounds__(WEIGHT_COLS * WEIGHT_LANES) rmsnorm_backward_weight(
    const float* __restrict__ dy, const float* __restrict__ x, const float* __restrict__ rstd, float* __restrict__ dw, int rows, int c)
{
    __shared__ float partial[WEIGHT_LANES][WEIGHT_COLS];
    int j = blockIdx.x * WEIGHT_COLS + threadIdx.x;
    float sum = 0.f;
    if (j < c)
        for (int n = threadIdx.y; n < rows; n += WEIGHT_LANES) sum += dy[(long)n * c + j] * (x[(long)n * c + j] * rstd[n]);
    partial[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && j < c)
    {
        float total = 0.f;
#pragma unroll
        for (int l = 0; l < WEIGHT_LANES; l++) total += partial[l][threadIdx.x];
        dw[j] += total;
    }
}
