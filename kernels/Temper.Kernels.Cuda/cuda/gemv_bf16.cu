// gemv_bf16.cu: the decode step's products, 1 to 8 activation rows against bf16 weights (f32 everything else).
//   gemv_bf16_m<M>:        y[M,N] = [residual[M,N] +] [bias[N] +] xn[M,K] W[N,K]^T, optionally also the
//                          argmax of each row of y into a 64-bit slot (argmax_slot.cuh; the LM head's greedy pick);
//   gemv_swiglu_bf16_m<M>: y[M,N] = silu(xn Wg^T + bg) * (xn Wu^T + bu), silu(a) = a / (1 + exp(-a)) (-0 for a << 0);
//   gemv_qkv_rope_bf16_m1: one row's qkv = xn Wqkv^T + b ([(H + 2 Hkv) D] rows: q heads, k heads, v heads) with
//                          decode_step.cu's decode_rope_append in its epilogue: a warp computes the pair of rows e and
//                          e + D/2 of a head (SwiGLU's two weight rows, the second D/2 rows further on) and writes q
//                          rotated by RoPE at position[0], k rotated and v as is into kCache, vCache [R, T, Hkv, D]
//                          at row cacheRow[0], slot position[0]; no qkv in memory and no rope launch (no head norms:
//                          Qwen3 keeps the two kernels);
// with xn = x, or with a norm weight g, xn = RMSNorm(x) = x g r, r = 1 / sqrt(mean_k x^2 + eps) per row. r is
// one scalar per row, so the kernel sums W (x g) and x^2 in the same pass over x and multiplies by r at
// the end: no norm kernel and no xn in memory. Null pointers (bias, residual, g, argmax) leave their term out.
// Requirements (CudaGemv checks them): K % 8 == 0; W, Wu, x and g 16-byte aligned; x does not overlap y.
// residual may alias y (x += W h): each y element is read and written by the one lane that computes it.
// Memory-bound design: every weight is read once, copied 16 bytes at a time with cp.async into the warp's
// stage in shared memory (cached in L2 only, so x and g, read by every warp, keep L1). A warp computes R
// consecutive outputs n (R = 1, 2, 4 as M grows, so each x value loaded serves R weight rows; SwiGLU counts
// its two weights); lane l takes the weights k = 256 s + 8 l .. +7 of step s and has the copies of U steps
// in flight (8 per lane, 4 KB per warp) before it waits and multiplies: f32 sums per lane, then one
// reduce-scatter across the warp leaves each output's sum in its own lane, which applies r, bias, residual
// or silu and writes it. One group of outputs per warp, as many blocks as that takes: the block scheduler
// balances the tail. The persistent variants for one row (gemv_bf16_p_m1, gemv_swiglu_bf16_p_m1; CudaGemv.Persistent)
// run on a capped grid, each warp looping over every stride-th group, its copies running on from one group's
// last round into the next group's first. The argmax: the block reduces its outputs' slots in shared memory, then makes one
// atomicMax per row (its result unused: a fire-and-forget reduction in L2), so the LM head's slot sees
// N / (4 R) updates over the launch, not N.
// Launched to overlap the kernel before it (CudaDecodeGraph.DependentLaunch; grid_dependency.cuh, the compute_90 build
// Ptx/gemv_bf16.sm90.ptx), a warp has its first two rounds of weight copies in flight before it waits for that kernel.
// NaN logits never win the argmax (argmax_slot.cuh). Scalar reference: RmsNormReference, LinearReference
// (accumulating for the residual) and SwiGluReference in turn; CudaGemvChecks evaluates it in f64.
// ptx-also: compute_90
#include <stdint.h>
#include "argmax_slot.cuh"
#include "grid_dependency.cuh"
#include "rope_append.cuh"
#include "ptx_ops.cuh"

namespace {
constexpr int THREADS = 128, WARPS = THREADS / 32, MAX_ROWS = 8;
constexpr int LOADS = 8; // 16-byte weight copies a lane has in flight: U steps x S R weight rows
constexpr unsigned FULL = 0xffffffffu;

// Shared by every kernel variant (one set per block): each lane's weight copies, in its own column of its
// warp's two stages (one being multiplied, the next round's arriving), and the block's argmax slots.
__shared__ __align__(16) uint4 weight_stage[2][WARPS][LOADS][32];
__shared__ unsigned long long block_best[MAX_ROWS];

// 4 floats of x or g through the read-only cache (every warp reads them; they stay in L1).
__device__ __forceinline__ float4 load_cached(const float* p)
{
#ifdef TEMPER_CUDA_EMU
    return *reinterpret_cast<const float4*>(p);
#else
    return __ldg(reinterpret_cast<const float4*>(p));
#endif
}

__device__ __forceinline__ void widen(uint4 w, float f[8])
{
    const unsigned u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++)
    {
        f[2 * i] = __uint_as_float(u[i] << 16); // the lower address holds the lower half
        f[2 * i + 1] = __uint_as_float(u[i] & 0xFFFF0000u);
    }
}

// 8 floats of x or g, or zeros past the row's end (where the weights are zeros too).
__device__ __forceinline__ void load8(const float* p, bool in, float f[8])
{
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    float4 a = in ? load_cached(p) : zero, b = in ? load_cached(p + 4) : zero;
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w;
    f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}

__host__ __device__ constexpr int pow2_at_least(int v) { return v <= 1 ? 1 : 2 * pow2_at_least((v + 1) / 2); }

// Sums V values (V a power of two <= 32) over the warp, one shuffle per value pair and stage: at the stage
// of lane distance o each lane keeps the half of its values that lane bit o selects and adds the partner's
// copy of that half. Afterwards v[0] of lane l holds the warp's total of value l / (32 / V).
template <int V> struct ReduceScatter
{
    static __device__ __forceinline__ void run(float* v, int lane, int o)
    {
        bool upper = lane & o;
#pragma unroll
        for (int j = 0; j < V / 2; j++)
        {
            float send = upper ? v[j] : v[j + V / 2], keep = upper ? v[j + V / 2] : v[j];
            v[j] = keep + __shfl_xor_sync(FULL, send, o);
        }
        ReduceScatter<V / 2>::run(v, lane, o >> 1);
    }
};
template <> struct ReduceScatter<1>
{
    static __device__ __forceinline__ void run(float* v, int, int o)
    {
#pragma unroll
        for (; o > 0; o >>= 1) v[0] += __shfl_xor_sync(FULL, v[0], o);
    }
};

// gemv_qkv_rope_bf16_m1's epilogue: where the rotated q and the cache rows go (decode_rope_append's arguments).
struct RopeOut
{
    const int* position;
    const int* cacheRow;
    const float* cos;
    const float* sin;
    float* q;
    float* kCache;
    float* vCache;
    int heads, kvHeads, half, capacity;
};

// M activation rows, R outputs per warp, S weights (1: a product; 2: SwiGLU's gate w0 and up w1, or with ROPE the rows
// e and e + D/2 of a head: w1 = w0 + D/2 rows, output o the pair of row o / (D/2) D + o % (D/2)), NORM: g given;
// PERSIST: a warp loops over every stride-th group (the grid capped), else it takes one group (the loop runs once).
template <int M, int R, int S, bool NORM, bool PERSIST, bool ROPE = false>
__device__ __forceinline__ void gemv(const uint4* __restrict__ w0, const uint4* __restrict__ w1, const float* __restrict__ x,
    const float* __restrict__ g, float eps, const float* __restrict__ b0, const float* __restrict__ b1, const float* residual,
    float* y, unsigned long long* __restrict__ argmax, int n, int k, const RopeOut* rope = nullptr)
{
    static_assert(!ROPE || (S == 2 && M == 1), "RoPE pairs are two weight rows of one activation row");
    constexpr int U = LOADS / (S * R); // steps of 256 weights per round
    static_assert(U * S * R == LOADS, "S R divides the copies in flight");
    constexpr int V = pow2_at_least(S * R * M), VM = pow2_at_least(M);
    static_assert(V <= 32, "a warp reduce-scatters at most 32 sums");
    const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
    const int stride = PERSIST ? gridDim.x * WARPS : 0, groups = (n + R - 1) / R; // groups of R outputs, every stride-th this warp's
    const long row_chunks = k / 8; // 16-byte chunks per weight row
    // This lane's output, after the reduce-scatter: sum index i = (s R + r) M + m, valid for s = 0, r < R.
    const int spread = 32 / V, mine = lane / spread, my_r = mine / M, my_m = mine % M;
    const bool writer = lane % spread == 0 && mine < R * M;
    unsigned long long best = 0; // this lane's outputs' argmax slot (row my_m)
    const int rounds = (k + 256 * U - 1) / (256 * U);

    // Round r of group gr's weights into stage s, zeros past the row's end or the last output. ptxas cannot move
    // a copy past a wait, so all LOADS of a round are in flight before the warp waits for them (plain
    // loads into registers it sank down to their multiplies in some variants: one or two in flight).
    auto copy_round = [&](int gr, int r, int s) {
#pragma unroll
        for (int u = 0; u < U; u++)
        {
            const int kk = (r * U + u) * 256 + 8 * lane;
#pragma unroll
            for (int j = 0; j < S * R; j++)
            {
                const int out = gr * R + j % R, row = ROPE ? out / rope->half * 2 * rope->half + out % rope->half : out;
                const bool in = kk < k && out < n;
                const uint4* w = j < R ? w0 : w1;
                cp_async_16(&weight_stage[s][warp][u * S * R + j][lane], in ? w + row * row_chunks + kk / 8 : w, in);
            }
        }
        cp_async_commit();
    };

    // A warp takes group first (the grid has a warp per group: CudaGemv's default), or with PERSIST groups first, first +
    // stride, ... (the grid capped: CudaGemv.Persistent), the rounds running on across groups (it counts them, choosing
    // the stage): the next group's first round is in flight while this group's last one is multiplied.
    const int first = blockIdx.x * WARPS + warp;
    if (first < groups) // the first round, and the one the loop's first step sends next (it skips that one below)
    {
        copy_round(first, 0, 0);
        if (rounds > 1) copy_round(first, 1, 1);
        else if (PERSIST && first + stride < groups) copy_round(first + stride, 0, 1);
    }
    // Launched to overlap the kernel before it (grid_dependency.cuh), those two rounds of weights are on their way
    // before the wait: nothing above reads what an earlier kernel writes.
    wait_for_prior_grids();
    allow_dependent_grids();
    for (int group = first, it = 0; group < groups; group += stride)
    {
        const int n0 = group * R;
        float acc[S * R * M], ssq[M];
#pragma unroll
        for (int i = 0; i < S * R * M; i++) acc[i] = 0.f;
#pragma unroll
        for (int m = 0; m < M; m++) ssq[m] = 0.f;

        for (int r = 0; r < rounds; r++, it++)
        {
            // The next round's copies (this group's, or the next group's first) go out before this round's multiplies
            // (into the stage the last round read: this lane's own reads, earlier in program order). Each lane reads
            // back only its own copies: no barrier.
            if (r + 1 < rounds || (PERSIST && group + stride < groups))
            {
                if (it > 0) // the first step's went out before the wait above
                {
                    if (r + 1 < rounds) copy_round(group, r + 1, (it + 1) & 1);
                    else copy_round(group + stride, 0, (it + 1) & 1);
                }
                cp_async_wait<1>();
            }
            else cp_async_wait<0>();
            const int k0 = r * 256 * U;
            const uint4(*stage)[32] = weight_stage[it & 1][warp];
#pragma unroll
            for (int u = 0; u < U; u++)
            {
                const int kk = k0 + 256 * u + 8 * lane;
                const bool in = kk < k;
                float wf[S * R][8], gf[8];
#pragma unroll
                for (int j = 0; j < S * R; j++) widen(stage[u * S * R + j][lane], wf[j]);
                if (NORM) load8(g + kk, in, gf);
#pragma unroll
                for (int m = 0; m < M; m++)
                {
                    float xf[8];
                    load8(x + (long)m * k + kk, in, xf);
#pragma unroll
                    for (int e = 0; e < 8; e++)
                    {
                        if (NORM)
                        {
                            ssq[m] += xf[e] * xf[e];
                            xf[e] *= gf[e];
                        }
#pragma unroll
                        for (int j = 0; j < S * R; j++) acc[j * M + m] += wf[j][e] * xf[e];
                    }
                }
            }
        }

        float sums[V];
#pragma unroll
        for (int i = 0; i < V; i++) sums[i] = i < S * R * M ? acc[i] : 0.f;
        ReduceScatter<V>::run(sums, lane, 16);
        float scale = 1.f;
        if (NORM)
        {
            float sq[VM];
#pragma unroll
            for (int m = 0; m < VM; m++) sq[m] = m < M ? ssq[m] : 0.f;
            ReduceScatter<VM>::run(sq, lane, 16);
            scale = 1.f / sqrtf(__shfl_sync(FULL, sq[0], my_m * (32 / VM)) / k + eps);
        }
        // SwiGLU: the up sum of this lane's output sits R M sums further on.
        const float up = S == 2 ? __shfl_down_sync(FULL, sums[0], R * M * spread) : 0.f;
        const int col = n0 + my_r;
        if (ROPE && writer && col < n)
        {
            const int half = rope->half, d = 2 * half, row = col / half * d + col % half;
            const float a = sums[0] * scale + (b0 ? b0[row] : 0.f), b = up * scale + (b1 ? b1[row] : 0.f);
            rope_append_pair(a, b, row / d, row % d, half, rope->position[0], rope->cacheRow[0], rope->cos, rope->sin, rope->heads,
                rope->kvHeads, rope->capacity, rope->q, rope->kCache, rope->vCache);
        }
        else if (writer && col < n)
        {
            const long o = (long)my_m * n + col;
            float v = sums[0] * scale + (b0 ? b0[col] : 0.f);
            if (S == 2) v = v / (1.f + expf(-v)) * (up * scale + (b1 ? b1[col] : 0.f));
            else if (residual) v += residual[o];
            y[o] = v;
            if (argmax)
            {
                const unsigned long long slot = argmax_pack(v, col);
                best = slot > best ? slot : best;
            }
        }
        if (!PERSIST) break; // stride 0: the one group
    }

    if (S == 1 && argmax) // uniform over the grid: every thread of the block reaches both barriers
    {
        if (threadIdx.x < M) block_best[threadIdx.x] = 0;
        __syncthreads();
        if (writer && best) atomicMax(&block_best[my_m], best);
        __syncthreads();
        if (threadIdx.x < M && block_best[threadIdx.x]) atomicMax(&argmax[threadIdx.x], block_best[threadIdx.x]);
    }
}

template <int M, int R, bool PERSIST = false>
__device__ __forceinline__ void forward(const uint4* w, const float* x, const float* g, float eps, const float* bias,
    const float* residual, float* y, unsigned long long* argmax, int n, int k)
{
    if (g) gemv<M, R, 1, true, PERSIST>(w, w, x, g, eps, bias, nullptr, residual, y, argmax, n, k);
    else gemv<M, R, 1, false, PERSIST>(w, w, x, g, eps, bias, nullptr, residual, y, argmax, n, k);
}

template <int M, int R, bool PERSIST = false>
__device__ __forceinline__ void swiglu(const uint4* wg, const uint4* wu, const float* x, const float* g, float eps,
    const float* bg, const float* bu, float* y, int n, int k)
{
    if (g) gemv<M, R, 2, true, PERSIST>(wg, wu, x, g, eps, bg, bu, nullptr, y, nullptr, n, k);
    else gemv<M, R, 2, false, PERSIST>(wg, wu, x, g, eps, bg, bu, nullptr, y, nullptr, n, k);
}
} // namespace

// The kernels, one per row count M; the outputs per warp R (CudaGemv.OutputsPerWarp) follow M.
#define FORWARD_ARGS const uint4* w, const float* x, const float* g, float eps, const float* bias, const float* residual, float* y, \
    unsigned long long* argmax, int n, int k
#define SWIGLU_ARGS const uint4* wg, const uint4* wu, const float* x, const float* g, float eps, const float* bg, const float* bu, \
    float* y, int n, int k
extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_m1(FORWARD_ARGS) { forward<1, 1>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_m2(FORWARD_ARGS) { forward<2, 1>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_m3(FORWARD_ARGS) { forward<3, 2>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_m4(FORWARD_ARGS) { forward<4, 2>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_m5(FORWARD_ARGS) { forward<5, 4>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_m6(FORWARD_ARGS) { forward<6, 4>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_m7(FORWARD_ARGS) { forward<7, 4>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_m8(FORWARD_ARGS) { forward<8, 4>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_m1(SWIGLU_ARGS) { swiglu<1, 1>(wg, wu, x, g, eps, bg, bu, y, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_m2(SWIGLU_ARGS) { swiglu<2, 1>(wg, wu, x, g, eps, bg, bu, y, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_m3(SWIGLU_ARGS) { swiglu<3, 1>(wg, wu, x, g, eps, bg, bu, y, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_m4(SWIGLU_ARGS) { swiglu<4, 1>(wg, wu, x, g, eps, bg, bu, y, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_m5(SWIGLU_ARGS) { swiglu<5, 2>(wg, wu, x, g, eps, bg, bu, y, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_m6(SWIGLU_ARGS) { swiglu<6, 2>(wg, wu, x, g, eps, bg, bu, y, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_m7(SWIGLU_ARGS) { swiglu<7, 2>(wg, wu, x, g, eps, bg, bu, y, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_m8(SWIGLU_ARGS) { swiglu<8, 2>(wg, wu, x, g, eps, bg, bu, y, n, k); }
// Batch-1 decoding's persistent variants (CudaGemv.Persistent): the grid capped, a warp looping over groups.
extern "C" __global__ void __launch_bounds__(THREADS) gemv_qkv_rope_bf16_m1(const uint4* w, const float* x, const float* g, float eps,
    const float* bias, const int* position, const int* cacheRow, const float* cos, const float* sin, float* q, float* kCache, float* vCache,
    int heads, int kvHeads, int half, int capacity, int n, int k)
{
    const RopeOut rope{position, cacheRow, cos, sin, q, kCache, vCache, heads, kvHeads, half, capacity};
    const uint4* w1 = w + (long)half * (k / 8);
    const float* b1 = bias ? bias + half : nullptr;
    if (g) gemv<1, 1, 2, true, false, true>(w, w1, x, g, eps, bias, b1, nullptr, nullptr, nullptr, n / 2, k, &rope);
    else gemv<1, 1, 2, false, false, true>(w, w1, x, g, eps, bias, b1, nullptr, nullptr, nullptr, n / 2, k, &rope);
}

extern "C" __global__ void __launch_bounds__(THREADS) gemv_bf16_p_m1(FORWARD_ARGS) { forward<1, 1, true>(w, x, g, eps, bias, residual, y, argmax, n, k); }
extern "C" __global__ void __launch_bounds__(THREADS) gemv_swiglu_bf16_p_m1(SWIGLU_ARGS) { swiglu<1, 1, true>(wg, wu, x, g, eps, bg, bu, y, n, k); }
