// transpose_16.cu: out[C,R] = in[R,C]^T for 16-bit elements (bf16 weights), both row-major.
//   transpose_16: CudaLinear's sm_90a input gradient dx = dy W runs the forward GEMM (x W^T) on W^T, which this
//   writes first (a frozen weight's bytes once more each way: about 7% of that product on an H100's 1B shapes).
// One block of 256 threads per 64 x 64 tile (rows r0.., columns c0.. of `in`), staged in shared memory with
// rows padded to 68 elements: each thread reads 4 consecutive elements of a row (8 bytes, 16 threads a row)
// stores them one by one, and writes 4 consecutive elements of an output row (4 tile rows of one tile column). 8-byte accesses where
// R and C are multiples of 4 and both pointers 8-byte aligned; element by element otherwise. Edges bounded.
// Scalar reference: the definition (CudaTransposeChecks compares every element).
#include <stdint.h>

namespace {
constexpr int TILE = 64, PAD = 4, THREADS = 256;
}

extern "C" __global__ void __launch_bounds__(THREADS) transpose_16(const unsigned short* __restrict__ in, unsigned short* __restrict__ out, int rows, int cols)
{
    __shared__ unsigned short tile[TILE][TILE + PAD];
    const int r0 = blockIdx.y * TILE, c0 = blockIdx.x * TILE, t = threadIdx.x;
    const bool wide = rows % 4 == 0 && cols % 4 == 0 && (((uintptr_t)in | (uintptr_t)out) & 7) == 0;
#pragma unroll
    for (int p = 0; p < TILE / 16; p++)
    {
        int r = t / 16 + 16 * p, c = 4 * (t % 16), gr = r0 + r, gc = c0 + c;
        if (gr >= rows) continue;
        if (wide)
        {
            if (gc >= cols) continue;
            uint2 v = *reinterpret_cast<const uint2*>(in + (long)gr * cols + gc);
            tile[r][c] = (unsigned short)v.x, tile[r][c + 1] = (unsigned short)(v.x >> 16);
            tile[r][c + 2] = (unsigned short)v.y, tile[r][c + 3] = (unsigned short)(v.y >> 16);
            continue;
        }
        for (int e = 0; e < 4 && gc + e < cols; e++) tile[r][c + e] = in[(long)gr * cols + gc + e];
    }
    __syncthreads();
#pragma unroll
    for (int p = 0; p < TILE / 16; p++)
    {
        int c = t / 16 + 16 * p, r = 4 * (t % 16), gc = c0 + c, gr = r0 + r;
        if (gc >= cols || gr >= rows) continue;
        unsigned short* o = out + (long)gc * rows + gr;
        if (wide)
        {
            uint2 v;
            v.x = (uint32_t)tile[r][c] | (uint32_t)tile[r + 1][c] << 16;
            v.y = (uint32_t)tile[r + 2][c] | (uint32_t)tile[r + 3][c] << 16;
            *reinterpret_cast<uint2*>(o) = v;
            continue;
        }
        for (int e = 0; e < 4 && gr + e < rows; e++) o[e] = tile[r + e][c];
    }
}
