// rope_append.cuh: one RoPE pair of a decode row's q, k or v head, written where the decode step keeps it (shared by
// decode_step.cu's decode_rope_append and gemv_bf16.cu's qkv GEMV epilogue, so the two agree by construction).
//   a, b: elements e and e + half of head h of the row's qkv ([H + 2 Hkv] heads of D = 2 half: q, then k, then v),
//   at position p: a q head goes to qRow[h D ..] rotated (HF rotate_half: a' = a c - b s, b' = b c + a s, c = cos[p, e],
//   s = sin[p, e] from tables [T, half]); a k head rotated, a v head as is, to kCache / vCache [R, T, Hkv, D] at row
//   cacheRow, slot p.
#pragma once

__device__ __forceinline__ void rope_append_pair(float a, float b, int h, int e, int half, int p, long long cacheRow,
    const float* __restrict__ cos, const float* __restrict__ sin, int heads, int kvHeads, int capacity, float* qRow,
    float* kCache, float* vCache)
{
    const int d = 2 * half;
    const bool isQuery = h < heads, isKey = !isQuery && h < heads + kvHeads;
    float* dst = isQuery ? qRow + (long long)h * d
        : (isKey ? kCache : vCache) + ((cacheRow * capacity + p) * kvHeads + h - heads - (isKey ? 0 : kvHeads)) * d;
    if (isQuery || isKey)
    {
        const float cs = cos[(long long)p * half + e], sn = sin[(long long)p * half + e];
        dst[e] = a * cs - b * sn;
        dst[e + half] = b * cs + a * sn;
    }
    else
    {
        dst[e] = a;
        dst[e + half] = b;
    }
}
