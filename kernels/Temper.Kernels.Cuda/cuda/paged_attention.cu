// paged_attention.cu: attention of token rows of many sequences over the paged KV cache (decode steps and
// prefill chunks of continuous batching), f32 arithmetic.
//   paged_attention_f32_d64, paged_attention_f32_d128 (the head dim D as a constant): f32 caches;
//   paged_attention_bf16_d64, paged_attention_bf16_d128: bf16 caches (the bits, widened as they are read: the
//   f32 kernels' results for caches holding the same values; `--kv-cache-dtype bfloat16`).
//   q[N,H,D] token rows; k/v caches [Blocks, BlockSize, Hkv, D] (the pools of Temper.Serving's PagedKvCache);
//   tables[Sequences * MaxBlocks], rowSeq[N], rowLen[N] int -> out[N,H,D]; with splits > 1 also
//   partial (the workspace) and counters[gridDim.x] (unsigned, zero before, left zero). Row n of sequence s =
//   rowSeq[n] sees keys 0..rowLen[n]-1 (its causal bound); key p lives at slot p % BlockSize of block
//   tables[s * MaxBlocks + p / BlockSize]; head h reads kv head h / (H / Hkv); out = softmax(scale q.k) v,
//   zeros for a row that sees no key. The semantics of IBackend.PagedAttention (its scalar reference:
//   kernels/Temper.Kernels.Cpu/Reference/PagedAttentionReference.cs). Tables and lengths are trusted: the
//   op checks them on the host (ServingShapes.PagedAttention) before they are uploaded.
//   With key splits (below) the last split block of a (row, kv head, head slice) to finish merges them into out
//   (FlashDecoding's combine, in the same launch).
// Why this shape: decoding reads every K/V row once per step and does ~2 flops per byte, so it is bound by
// memory bandwidth and tensor cores would buy nothing; what matters is reading each row once and keeping
// every SM busy. So one block (4 warps) serves one row and one kv head for all the query heads that share
// it (GQA: up to 8 per block, a larger group takes several blocks), reading each K/V row once for the whole
// group rather than once per head; and the keys of a row are split across blockIdx.y (FlashDecoding) when
// there are too few (row, kv head) units to fill the device, as in batch-1 decode of a long sequence:
// each split writes an unnormalised partial output with its running max and sum to the workspace, and the
// last one to finish merges them: every block fences its partial and bumps its unit's counter
// (counters[blockIdx.x], zero before the launch); the block that takes it to splits - 1 reads every split's
// partial from L2 (__ldcg: written by other SMs) and writes out, then sets the counter back to zero for the next
// launch. That saves the separate combine kernel (a launch per layer of a decode step). With one split the block
// writes out directly.
// Inside a block, keys go in tiles of 64, their row offsets resolved through the block table once into
// shared memory. Scores: 8 lanes share a key row (16-byte loads, 128 contiguous bytes per load across
// them, 4 keys per warp at once; a lane issues the loads of 2 (D = 128) or 4 (D = 64) keys before using
// them, to keep enough bytes in flight), dot it with each head's q (staged in shared memory, pre-scaled
// by scale log2 e), and reduce with 3 shuffles. Online softmax per head (a warp per head, exp2): running max
// and sum, the tile's weights back into shared memory, alpha = exp2(m_old - m_new). P V: a thread owns a
// float4 column of the value row for every head of the block (up to 8 float4 accumulators) and a subset of
// the tile's keys, so a value row is read by D/4 consecutive threads with 16-byte loads, 4 rows in
// flight; the subsets are summed in a fixed order at the end (deterministic). The 16-byte loads need
// 16-byte aligned caches (whole allocations are; the launcher checks).
// With bf16 caches the loads are 8 bytes (4 values) where f32's are 16; the rest is the same code.
// Static shared memory 20.6 KB (D = 64) / 22.6 KB (D = 128). Registers (ptxas 11.8, sm_80 / sm_90): D = 64
// 110 / 112, D = 128 126 / 128 (bf16: 111 / 113, 128 / 128), no spills (__launch_bounds__ allow 128: 4 blocks of 4 warps per SM).
// Launched to overlap the kernel before it (CudaDecodeGraph.DependentLaunch, from the compute_90 build
// Ptx/paged_attention.sm90.ptx), a block waits for that kernel first: all it reads comes from there.
// Checked on the CPU by the CUDA emulator (emu/) and on a GPU by CudaPagedAttentionChecks.
// ptx-also: compute_90
#include <math.h>
#include <stdint.h>
#include "bf16_bits.cuh"
#include "grid_dependency.cuh"

namespace {
constexpr int WARPS = 4, THREADS = 32 * WARPS;
constexpr int TILE = 64;                                   // keys per tile (two per lane in the softmax)
constexpr int GMAX = 8;                                    // query heads per block
constexpr int KEY_LANES = 8;                               // lanes that share one key row in the score pass
constexpr int KEYS_AT_ONCE = THREADS / KEY_LANES;          // 16 keys per step of the whole block
constexpr int KEY_STEPS = TILE / KEYS_AT_ONCE;             // 4: a lane's keys of a tile, loaded at once
constexpr int VALUES_AT_ONCE = 4;                          // value rows a thread loads at once in P V
constexpr float LOG2E = 1.4426950408889634f;
constexpr unsigned FULL = 0xffffffffu;
static_assert(TILE == 64 && TILE % KEYS_AT_ONCE == 0, "the softmax gives each lane two keys of a tile");

// Four consecutive cache values as f32: one 16-byte load (f32) or one 8-byte load of bf16 bits, widened. The caches
// are 16-byte aligned (CudaPagedAttention checks) and D a multiple of 4.
__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const unsigned short* p)
{
    const uint2 b = *reinterpret_cast<const uint2*>(p);
    return make_float4(bf16_widen(b.x & 0xFFFFu), bf16_widen(b.x >> 16), bf16_widen(b.y & 0xFFFFu), bf16_widen(b.y >> 16));
}

__device__ __forceinline__ float dot4(float4 a, const float* b) { return a.x * b[0] + a.y * b[1] + a.z * b[2] + a.w * b[3]; }

__device__ __forceinline__ float warp_max(float x)
{
#pragma unroll
    for (int o = 16; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(FULL, x, o));
    return x;
}

__device__ __forceinline__ float warp_sum(float x)
{
#pragma unroll
    for (int o = 16; o > 0; o /= 2) x += __shfl_xor_sync(FULL, x, o);
    return x;
}

// partial (splits > 1): o [splits][N*H][D] unnormalised, then max [splits][N*H] (log2 units), then sum [splits][N*H].
template <int D, class T>
__device__ __forceinline__ void paged_attention(const float* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    float* __restrict__ out, float* __restrict__ partial, unsigned* __restrict__ counters, const int* __restrict__ tables,
    const int* __restrict__ rowSeq, const int* __restrict__ rowLen, int rows, int heads, int kvHeads, int blockSize, int maxBlocks, int splits,
    float scale)
{
    constexpr int QUADS = D / 4;               // float4s in a row
    constexpr int KQ = QUADS / KEY_LANES;      // float4s of a key row per lane in the score pass
    constexpr int SUBSETS = THREADS / QUADS;   // key subsets in P V
    constexpr int KEY_BATCH = 8 / KQ;          // key rows whose loads a lane issues at once (8 float4s: 4 keys at D = 64, 2 at 128)
    static_assert(QUADS % KEY_LANES == 0 && THREADS % QUADS == 0, "D = 64 or 128");
    __shared__ __align__(16) float qs[GMAX][D];
    __shared__ float ps[GMAX][TILE];
    __shared__ long long rowOffset[TILE];
    __shared__ float alpha[GMAX], runMax[GMAX], runSum[GMAX];
    __shared__ float4 red[SUBSETS][GMAX][QUADS];

    wait_for_prior_grids(); // q and the caches are the kernels before's (grid_dependency.cuh)
    allow_dependent_grids();
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int group = heads / kvHeads, slices = (group + GMAX - 1) / GMAX;
    const int slice = blockIdx.x % slices, kh = (blockIdx.x / slices) % kvHeads, row = blockIdx.x / slices / kvHeads;
    const int h0 = kh * group + slice * GMAX, hs = min(GMAX, group - slice * GMAX);
    const int seq = rowSeq[row], len = rowLen[row], split = blockIdx.y;
    int chunk = (len + splits - 1) / splits;
    chunk = (chunk + TILE - 1) / TILE * TILE;
    const int j0 = min(len, split * chunk), j1 = min(len, j0 + chunk);
    const int* table = tables + (long long)seq * maxBlocks;

    for (int i = tid; i < GMAX * D; i += THREADS)
    {
        const int g = i / D, t = i % D;
        qs[g][t] = g < hs ? q[((long long)row * heads + h0 + g) * D + t] * (scale * LOG2E) : 0.0f;
    }
    if (tid < GMAX)
    {
        runMax[tid] = -INFINITY;
        runSum[tid] = 0.0f;
    }
    float4 acc[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; g++) acc[g] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    const int keyLane = lane % KEY_LANES, col = tid % QUADS, subset = tid / QUADS;

    for (int t0 = j0; t0 < j1; t0 += TILE)
    {
        const int n = min(TILE, j1 - t0);
        for (int i = tid; i < n; i += THREADS)
        {
            const int p = t0 + i;
            rowOffset[i] = (((long long)table[p / blockSize] * blockSize + p % blockSize) * kvHeads + kh) * D;
        }
        __syncthreads();
        // Scores: this lane's part of its 4 keys of the tile, KEY_BATCH keys' loads issued at once; every lane
        // takes the same steps (the shuffles need the whole warp), absent keys read as zeros.
#pragma unroll
        for (int step0 = 0; step0 < KEY_STEPS; step0 += KEY_BATCH)
        {
            float4 kr[KEY_BATCH][KQ];
#pragma unroll
            for (int b = 0; b < KEY_BATCH; b++)
            {
                const int i = tid / KEY_LANES + (step0 + b) * KEYS_AT_ONCE;
#pragma unroll
                for (int c = 0; c < KQ; c++)
                    kr[b][c] = i < n ? load4(k + rowOffset[i] + 4 * (keyLane + KEY_LANES * c)) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int b = 0; b < KEY_BATCH; b++)
            {
                const int i = tid / KEY_LANES + (step0 + b) * KEYS_AT_ONCE;
#pragma unroll
                for (int g = 0; g < GMAX; g++)
                {
                    if (g < hs) // uniform across the block
                    {
                        float s = 0.0f;
#pragma unroll
                        for (int c = 0; c < KQ; c++) s += dot4(kr[b][c], &qs[g][4 * (keyLane + KEY_LANES * c)]);
#pragma unroll
                        for (int o = KEY_LANES / 2; o > 0; o /= 2) s += __shfl_xor_sync(FULL, s, o);
                        if (i < n && keyLane == 0) ps[g][i] = s;
                    }
                }
            }
        }
        __syncthreads();
        // Online softmax, a warp per head; lanes hold keys lane and lane + 32 of the tile.
        for (int g = warp; g < hs; g += WARPS)
        {
            const float x0 = lane < n ? ps[g][lane] : -INFINITY, x1 = lane + 32 < n ? ps[g][lane + 32] : -INFINITY;
            const float mOld = runMax[g], mNew = fmaxf(mOld, warp_max(fmaxf(x0, x1)));
            const float p0 = lane < n ? exp2f(x0 - mNew) : 0.0f, p1 = lane + 32 < n ? exp2f(x1 - mNew) : 0.0f;
            if (lane < n) ps[g][lane] = p0;
            if (lane + 32 < n) ps[g][lane + 32] = p1;
            const float sum = warp_sum(p0 + p1);
            __syncwarp(); // every lane has read runMax[g]
            if (lane == 0)
            {
                const float a = mOld == mNew ? 1.0f : exp2f(mOld - mNew);
                alpha[g] = a;
                runMax[g] = mNew;
                runSum[g] = runSum[g] * a + sum;
            }
        }
        __syncthreads();
        // P V: this thread's float4 column of the value rows of its key subset, for every head of the block.
#pragma unroll
        for (int g = 0; g < GMAX; g++)
        {
            const float a = g < hs ? alpha[g] : 0.0f;
            acc[g] = make_float4(acc[g].x * a, acc[g].y * a, acc[g].z * a, acc[g].w * a);
        }
        for (int i0 = subset; i0 < n; i0 += VALUES_AT_ONCE * SUBSETS) // VALUES_AT_ONCE loads in flight
        {
            float4 vr[VALUES_AT_ONCE];
#pragma unroll
            for (int u = 0; u < VALUES_AT_ONCE; u++)
            {
                const int i = i0 + u * SUBSETS;
                vr[u] = i < n ? load4(v + rowOffset[i] + 4 * col) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int u = 0; u < VALUES_AT_ONCE; u++)
            {
                const int i = i0 + u * SUBSETS;
#pragma unroll
                for (int g = 0; g < GMAX; g++)
                {
                    if (g >= hs) continue;
                    const float p = i < n ? ps[g][i] : 0.0f; // past n ps is stale or never written (NaN * 0 is NaN)
                    acc[g] = make_float4(acc[g].x + p * vr[u].x, acc[g].y + p * vr[u].y, acc[g].z + p * vr[u].z, acc[g].w + p * vr[u].w);
                }
            }
        }
        __syncthreads();
    }

    // The key subsets summed in order; out = o / sum (one split) or the split's partial.
#pragma unroll
    for (int g = 0; g < GMAX; g++) red[subset][g][col] = acc[g];
    __syncthreads();
    const long long rowsHeads = (long long)rows * heads;
    for (int i = tid; i < hs * QUADS; i += THREADS)
    {
        const int g = i / QUADS, c = i % QUADS;
        float4 o = red[0][g][c];
        for (int s = 1; s < SUBSETS; s++) o = make_float4(o.x + red[s][g][c].x, o.y + red[s][g][c].y, o.z + red[s][g][c].z, o.w + red[s][g][c].w);
        const long long head = (long long)row * heads + h0 + g;
        float* dst;
        float scaleOut = 1.0f;
        if (partial == nullptr)
        {
            dst = out + head * D + 4 * c;
            scaleOut = runSum[g] > 0.0f ? 1.0f / runSum[g] : 0.0f;
        }
        else dst = partial + (split * rowsHeads + head) * D + 4 * c;
        dst[0] = o.x * scaleOut;
        dst[1] = o.y * scaleOut;
        dst[2] = o.z * scaleOut;
        dst[3] = o.w * scaleOut;
    }
    if (partial == nullptr) return;
    float* m = partial + splits * rowsHeads * D; // the splits' maxima [splits][N*H], then their sums
    const float* l = m + splits * rowsHeads;
    if (tid < hs)
    {
        const long long head = (long long)row * heads + h0 + tid;
        m[split * rowsHeads + head] = runMax[tid];
        m[splits * rowsHeads + split * rowsHeads + head] = runSum[tid];
    }

    // The last split of this unit to finish merges them: weights exp2(m_s - M), M the largest split max; zeros for
    // a head that sees no key (every split's max -inf).
    __shared__ bool last;
    __threadfence(); // this thread's part of the partial is visible device-wide before the count says so
    __syncthreads();
    if (tid == 0) last = atomicAdd(&counters[blockIdx.x], 1u) == (unsigned)(splits - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int i = tid; i < hs * D; i += THREADS)
    {
        const long long head = (long long)row * heads + h0 + i / D;
        const int t = i % D;
        float mMax = -INFINITY;
        for (int s = 0; s < splits; s++) mMax = fmaxf(mMax, __ldcg(m + s * rowsHeads + head));
        float sum = 0.0f, o = 0.0f;
        if (mMax != -INFINITY)
            for (int s = 0; s < splits; s++)
            {
                const float w = exp2f(__ldcg(m + s * rowsHeads + head) - mMax);
                sum += w * __ldcg(l + s * rowsHeads + head);
                o += w * __ldcg(partial + (s * rowsHeads + head) * D + t);
            }
        out[head * D + t] = mMax == -INFINITY ? 0.0f : o / sum;
    }
    if (tid == 0) counters[blockIdx.x] = 0u; // for the next launch (stream order)
}
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS, 4) paged_attention_f32_d64(const float* __restrict__ q, const float* __restrict__ k,
    const float* __restrict__ v, float* __restrict__ out, float* __restrict__ partial, unsigned* __restrict__ counters, const int* __restrict__ tables,
    const int* __restrict__ rowSeq, const int* __restrict__ rowLen, int rows, int heads, int kvHeads, int blockSize, int maxBlocks,
    int splits, float scale)
{
    paged_attention<64>(q, k, v, out, partial, counters, tables, rowSeq, rowLen, rows, heads, kvHeads, blockSize, maxBlocks, splits, scale);
}

extern "C" __global__ void __launch_bounds__(THREADS, 4) paged_attention_f32_d128(const float* __restrict__ q, const float* __restrict__ k,
    const float* __restrict__ v, float* __restrict__ out, float* __restrict__ partial, unsigned* __restrict__ counters, const int* __restrict__ tables,
    const int* __restrict__ rowSeq, const int* __restrict__ rowLen, int rows, int heads, int kvHeads, int blockSize, int maxBlocks,
    int splits, float scale)
{
    paged_attention<128>(q, k, v, out, partial, counters, tables, rowSeq, rowLen, rows, heads, kvHeads, blockSize, maxBlocks, splits, scale);
}

extern "C" __global__ void __launch_bounds__(THREADS, 4) paged_attention_bf16_d64(const float* __restrict__ q, const unsigned short* __restrict__ k,
    const unsigned short* __restrict__ v, float* __restrict__ out, float* __restrict__ partial, unsigned* __restrict__ counters, const int* __restrict__ tables,
    const int* __restrict__ rowSeq, const int* __restrict__ rowLen, int rows, int heads, int kvHeads, int blockSize, int maxBlocks,
    int splits, float scale)
{
    paged_attention<64>(q, k, v, out, partial, counters, tables, rowSeq, rowLen, rows, heads, kvHeads, blockSize, maxBlocks, splits, scale);
}

extern "C" __global__ void __launch_bounds__(THREADS, 4) paged_attention_bf16_d128(const float* __restrict__ q, const unsigned short* __restrict__ k,
    const unsigned short* __restrict__ v, float* __restrict__ out, float* __restrict__ partial, unsigned* __restrict__ counters, const int* __restrict__ tables,
    const int* __restrict__ rowSeq, const int* __restrict__ rowLen, int rows, int heads, int kvHeads, int blockSize, int maxBlocks,
    int splits, float scale)
{
    paged_attention<128>(q, k, v, out, partial, counters, tables, rowSeq, rowLen, rows, heads, kvHeads, blockSize, maxBlocks, splits, scale);
}
