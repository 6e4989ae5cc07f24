// mma.h (WMMA) for the CUDA emulator (see cuda_emu.h): bf16 and f16-free m16n16k16 fragments only.
// The real fragment layout is opaque to kernels, so here every lane holds the whole tile: loads read
// all of it, mma_sync multiplies all of it (f32 sums of exact bf16 products), stores write all of it
// (the warp's lanes write the same values one after another). Elementwise use of frag.x[i] over
// num_elements works as on the GPU; anything that assumes which element a lane holds does not.
#pragma once
#include <cuda_bf16.h>
#include <type_traits>

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment
{
    static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
    static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
    static constexpr int num_elements = rows * cols;
    T x[num_elements]; // row-major, whatever the Layout
};

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, T v)
{
    for (auto& e : f.x) e = v;
}
template <class Use, int M, int N, int K, class L>
inline void fill_fragment(fragment<Use, M, N, K, __nv_bfloat16, L>& f, float v)
{
    for (auto& e : f.x) e = __float2bfloat16(v);
}

// matrix_a / matrix_b: the fragment's Layout says how memory holds it.
template <class Use, int M, int N, int K, class T, class L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm)
{
    using F = fragment<Use, M, N, K, T, L>;
    for (int r = 0; r < F::rows; r++)
        for (int c = 0; c < F::cols; c++) f.x[r * F::cols + c] = std::is_same_v<L, col_major> ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t l)
{
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) f.x[r * N + c] = l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t l)
{
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) (l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[r * N + c];
}

template <int M, int N, int K, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, __nv_bfloat16, LA>& a,
    const fragment<matrix_b, M, N, K, __nv_bfloat16, LB>& b, const fragment<accumulator, M, N, K, float>& c)
{
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
        {
            float s = c.x[i * N + j];
            for (int q = 0; q < K; q++) s += __bfloat162float(a.x[i * K + q]) * __bfloat162float(b.x[q * N + j]);
            out[i * N + j] = s;
        }
    for (int e = 0; e < M * N; e++) d.x[e] = out[e];
}
} // namespace wmma
} // namespace nvcuda
