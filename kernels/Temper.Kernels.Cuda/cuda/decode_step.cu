// decode_step.cu: the bookkeeping kernels of one decode step of CudaDecodeGraph, around its GEMVs
// (gemv_bf16.cu) and paged attention (paged_attention.cu). Every value that changes from token to token
// lives on the device, so one captured CUDA graph replays every step. For rows r < R (sequences decoded
// in lockstep) and a capacity of T positions:
//   position[R]  the position of the token this step feeds; token[R] that token;
//   prompt[R,T], promptLen[R]  the prompts (fed one token a step: prefill runs through the same graph);
//   tokens[R,T]  out: tokens[r, p] is the token at position p (prompt tokens, then generated ones);
//   kvLen[R]     the keys a row's attention sees this step (position + 1);
//   argmax[R]    the LM head's packed (logit, index) maximum (argmax_slot.cuh).
//   decode_embed:       x[r,:] = embed[token[r], :] (bf16 [V,C] -> f32 [R,C]); kvLen[r] = position[r] + 1;
//                       argmax[r] = 0 (before the LM head's atomics); kvLen and argmax may be null (prefill).
//   decode_rope_append: qkv[R, (H + 2 Hkv) D] (q heads, then k, then v) -> q[R,H,D] rotated by RoPE at
//                       position[r] (HF rotate_half: x'[i] = x[i] c - x[i+D/2] s, x'[i+D/2] = x[i+D/2] c + x[i] s,
//                       c = cos[p, i], s = sin[p, i] from tables [T, D/2] that carry the attention scaling);
//                       the k heads rotated and the v heads copied into kCache, vCache [R, T, Hkv, D] at row
//                       cacheRow[r], slot position[r]: the layout of a paged cache with one block of T slots per
//                       row. A decode step's rows are the sequences (cacheRow[r] = r); a prefill chunk's rows
//                       are tokens of one sequence at consecutive positions. With qNorm / kNorm [D] (Qwen3; null
//                       for none) each q / k head is first RMS-normed over its D values: x * rstd * w, rstd =
//                       1 / sqrt(mean(x^2) + eps), each thread summing its head's squares itself.
//   decode_next:        next = prompt[r, p + 1] while the prompt lasts, else the argmax; tokens[r, p + 1] =
//                       token[r] = next; position[r] = p + 1.
// decode_next never moves a position past T - 1 (a replay after the host's last step rewrites slot T - 1),
// so the host's positions (0 at the start, below T) keep every index in bounds.
// Each kernel waits for the one before it first (grid_dependency.cuh: a no-op unless CudaDecodeGraph.DependentLaunch
// launched it to overlap that one, from the compute_90 build Ptx/decode_step.sm90.ptx).
// Scalar reference: the CPU decoder (engine/Temper.Models/Decoder.cs); checked by CudaDecodeGraphChecks.
// ptx-also: compute_90
#include <cuda_bf16.h>
#include <stdint.h>
#include "argmax_slot.cuh"
#include "grid_dependency.cuh"
#include "rope_append.cuh"

namespace {
constexpr int THREADS = 256;
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) decode_embed(
    const __nv_bfloat16* __restrict__ embed, const int* __restrict__ token, const int* __restrict__ position,
    float* __restrict__ x, int* __restrict__ kvLen, unsigned long long* __restrict__ argmax, int rows, int c)
{
    wait_for_prior_grids();
    allow_dependent_grids();
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * c) return;
    const int r = (int)(i / c), j = (int)(i % c);
    x[i] = __bfloat162float(embed[(long long)token[r] * c + j]);
    if (j == 0)
    {
        if (kvLen) kvLen[r] = position[r] + 1;
        if (argmax) argmax[r] = 0ull;
    }
}

// 1 / rms of one head's d values (in order, as the CPU's scalar RMSNorm reference sums them).
__device__ __forceinline__ float head_rstd(const float* x, int d, float eps)
{
    float sum = 0.f;
    for (int j = 0; j < d; ++j) sum += x[j] * x[j];
    return 1.f / sqrtf(sum / d + eps);
}

extern "C" __global__ void __launch_bounds__(THREADS) decode_rope_append(
    const float* __restrict__ qkv, const int* __restrict__ position, const int* __restrict__ cacheRow, const float* __restrict__ cos,
    const float* __restrict__ sin, float* __restrict__ q, float* __restrict__ kCache, float* __restrict__ vCache, int rows, int heads, int kvHeads,
    int half, int capacity, const float* __restrict__ qNorm, const float* __restrict__ kNorm, float eps)
{
    wait_for_prior_grids();
    allow_dependent_grids();
    const int all = heads + 2 * kvHeads;
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)rows * all * half) return;
    const int e = (int)(i % half), h = (int)(i / half % all), r = (int)(i / half / all);
    const int p = position[r], d = 2 * half;
    const float* src = qkv + ((long long)r * all + h) * d;
    float a = src[e], b = src[e + half];
    const bool isKey = h >= heads && h < heads + kvHeads;
    const float* norm = h < heads ? qNorm : isKey ? kNorm : nullptr;
    if (norm)
    {
        const float rstd = head_rstd(src, d, eps);
        a = norm[e] * (a * rstd);
        b = norm[e + half] * (b * rstd);
    }
    rope_append_pair(a, b, h, e, half, p, cacheRow[r], cos, sin, heads, kvHeads, capacity, q + (long long)r * heads * d, kCache, vCache);
}

extern "C" __global__ void __launch_bounds__(THREADS) decode_next(
    const unsigned long long* __restrict__ argmax, const int* __restrict__ prompt, const int* __restrict__ promptLen,
    int* __restrict__ token, int* __restrict__ position, int* __restrict__ tokens, int rows, int capacity)
{
    wait_for_prior_grids();
    allow_dependent_grids();
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const int p = position[r] + 1;
    if (p >= capacity) return;
    const int next = p < promptLen[r] ? prompt[(long long)r * capacity + p] : argmax_index(argmax[r]);
    tokens[(long long)r * capacity + p] = next;
    token[r] = next;
    position[r] = p;
}
