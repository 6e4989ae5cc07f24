// attention_backward_common.cuh: what the two attention backwards (attention_bf16_backward.cu on WMMA,
// attention_bf16_backward_mma.cu on mma.sync) share beyond attention_common.cuh: the staging of a query tile
// (Q and dO rows as bf16, per query its position, segment, lse in units of log2 and delta). Include after
// attention_common.cuh.
#pragma once

namespace {
// Query tile i0 of (b, h) into shared memory: Q (f32 or bf16 bits) and dO (f32) rows as bf16 (zero rows past the last), and per query
// its position (-1 past the last), segment, lse (in units of log2) and delta. The block calls it between
// barriers.
template <int D, class T>
__device__ __forceinline__ void stage_query_tile(__nv_bfloat16* sQ, __nv_bfloat16* sDO, int* qPos, int* qSeg, float* rowLse, float* rowDelta,
    const T* __restrict__ q, const float* __restrict__ dOut, const float* __restrict__ lse, const float* __restrict__ delta,
    const int* __restrict__ segments, long qOffset, long qRow, int rows, int b, int h, int heads, int tq, int i0, int queryOffset, int kvLength, bool vec)
{
    stage_rows<D>(sQ, q + qOffset, qRow, rows, vec);
    stage_rows<D>(sDO, dOut + qOffset, qRow, rows, vec);
    const int tid = threadIdx.x;
    if (tid < BQ)
    {
        int p = queryOffset + i0 + tid;
        bool in = tid < rows;
        long o = ((long)b * heads + h) * tq + i0 + tid;
        qPos[tid] = in ? p : -1;
        qSeg[tid] = in && segments ? segments[(long)b * kvLength + p] : 0;
        rowLse[tid] = in ? lse[o] * LOG2E : 0.0f;
        rowDelta[tid] = in ? delta[o] : 0.0f;
    }
}
} // namespace
