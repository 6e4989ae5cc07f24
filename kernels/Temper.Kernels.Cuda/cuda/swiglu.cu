// swiglu.cu: SwiGLU over n elements (gate, up, y all [N,F], flattened), forward and backward, y and the gradients f32.
//   swiglu_forward:          y = silu(gate) * up = gate / (1 + exp(-gate)) * up, gate and up f32; y may alias gate or up.
//   swiglu_forward_bf16:     the same from gate and up in bf16 (kept activations, widened as read).
//   swiglu_forward_rounded:  gate and up f32 rounded to bf16 (nearest even, bf16_bits.cuh) and written to gateBf16 and
//                            upBf16, y from the rounded values (so swiglu_forward_bf16 on them rebuilds y bit for bit);
//                            y may alias gate or up.
//   swiglu_backward:         dUp = dy silu(g), dGate = dy up sig(g) (1 + g (1 - sig(g))), both overwritten; either may
//                            alias an input. swiglu_backward_bf16: gate and up in bf16.
// Bandwidth-bound: one thread per 4 consecutive elements, one vector load or store per tensor (16 bytes of f32, 8 of
// bf16) when every pointer is aligned to it, single elements otherwise and for the last n % 4; each thread reads and
// writes only its own elements, so the aliasing above is safe.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/SwiGluReference.cs; the ILGPU op: Ops/SwiGlu.cs.
#include <stdint.h>
#include "bf16_bits.cuh"

namespace {
constexpr int THREADS = 256;
typedef unsigned short bf16_t;

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.f + expf(-g)) * u; }

__device__ __forceinline__ void swiglu_grad(float d, float g, float u, float& dg, float& du)
{
    float sig = 1.f / (1.f + expf(-g));
    du = d * g * sig;
    dg = d * u * sig * (1.f + g * (1.f - sig));
}

// Element i of an f32 or bf16 tensor, and four of them from one vector load (16 or 8 bytes).
__device__ __forceinline__ float at(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float at(const bf16_t* p, long i) { return bf16_widen(p[i]); }

__device__ __forceinline__ float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ __forceinline__ float4 load4(const bf16_t* p)
{
    uint2 w = *reinterpret_cast<const uint2*>(p);
    return make_float4(bf16_widen(w.x & 0xFFFFu), bf16_widen(w.x >> 16), bf16_widen(w.y & 0xFFFFu), bf16_widen(w.y >> 16));
}

__device__ __forceinline__ bool aligned(const float* p) { return ((uintptr_t)p & 15) == 0; }
__device__ __forceinline__ bool aligned(const bf16_t* p) { return ((uintptr_t)p & 7) == 0; }

template <typename In>
__device__ __forceinline__ void forward(const In* gate, const In* up, float* y, long n)
{
    long e = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (e >= n) return;
    if (e + 4 <= n && aligned(gate + e) && aligned(up + e) && aligned(y + e))
    {
        float4 g = load4(gate + e), u = load4(up + e);
        *reinterpret_cast<float4*>(y + e) = make_float4(silu_times(g.x, u.x), silu_times(g.y, u.y), silu_times(g.z, u.z), silu_times(g.w, u.w));
        return;
    }
    for (long i = e; i < e + 4 && i < n; i++) y[i] = silu_times(at(gate, i), at(up, i));
}

template <typename In>
__device__ __forceinline__ void backward(const float* dy, const In* gate, const In* up, float* dgate, float* dup, long n)
{
    long e = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (e >= n) return;
    if (e + 4 <= n && aligned(dy + e) && aligned(gate + e) && aligned(up + e) && aligned(dgate + e) && aligned(dup + e))
    {
        float4 d = load4(dy + e), g = load4(gate + e), u = load4(up + e);
        float4 dg, du;
        swiglu_grad(d.x, g.x, u.x, dg.x, du.x);
        swiglu_grad(d.y, g.y, u.y, dg.y, du.y);
        swiglu_grad(d.z, g.z, u.z, dg.z, du.z);
        swiglu_grad(d.w, g.w, u.w, dg.w, du.w);
        *reinterpret_cast<float4*>(dgate + e) = dg;
        *reinterpret_cast<float4*>(dup + e) = du;
        return;
    }
    for (long i = e; i < e + 4 && i < n; i++)
    {
        float dg, du;
        swiglu_grad(dy[i], at(gate, i), at(up, i), dg, du);
        dgate[i] = dg;
        dup[i] = du;
    }
}
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) swiglu_forward(const float* gate, const float* up, float* y, long n)
{
    forward(gate, up, y, n);
}

extern "C" __global__ void __launch_bounds__(THREADS) swiglu_forward_bf16(const bf16_t* __restrict__ gate, const bf16_t* __restrict__ up, float* __restrict__ y, long n)
{
    forward(gate, up, y, n);
}

extern "C" __global__ void __launch_bounds__(THREADS) swiglu_forward_rounded(
    const float* gate, const float* up, float* y, bf16_t* __restrict__ gateBf16, bf16_t* __restrict__ upBf16, long n)
{
    long e = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (e >= n) return;
    if (e + 4 <= n && aligned(gate + e) && aligned(up + e) && aligned(y + e) && aligned(gateBf16 + e) && aligned(upBf16 + e))
    {
        float4 g = load4(gate + e), u = load4(up + e);
        uint2 gb, ub; // four bf16 each, the lower index in the lower half: one 8-byte store each
        gb.x = bf16_bits_rne(g.x) | bf16_bits_rne(g.y) << 16;
        gb.y = bf16_bits_rne(g.z) | bf16_bits_rne(g.w) << 16;
        ub.x = bf16_bits_rne(u.x) | bf16_bits_rne(u.y) << 16;
        ub.y = bf16_bits_rne(u.z) | bf16_bits_rne(u.w) << 16;
        *reinterpret_cast<uint2*>(gateBf16 + e) = gb;
        *reinterpret_cast<uint2*>(upBf16 + e) = ub;
        *reinterpret_cast<float4*>(y + e) = make_float4(
            silu_times(bf16_widen(gb.x & 0xFFFFu), bf16_widen(ub.x & 0xFFFFu)), silu_times(bf16_widen(gb.x >> 16), bf16_widen(ub.x >> 16)),
            silu_times(bf16_widen(gb.y & 0xFFFFu), bf16_widen(ub.y & 0xFFFFu)), silu_times(bf16_widen(gb.y >> 16), bf16_widen(ub.y >> 16)));
        return;
    }
    for (long i = e; i < e + 4 && i < n; i++)
    {
        uint32_t gb = bf16_bits_rne(gate[i]), ub = bf16_bits_rne(up[i]);
        gateBf16[i] = (bf16_t)gb;
        upBf16[i] = (bf16_t)ub;
        y[i] = silu_times(bf16_widen(gb), bf16_widen(ub));
    }
}

extern "C" __global__ void __launch_bounds__(THREADS) swiglu_backward(
    const float* dy, const float* gate, const float* up, float* dgate, float* dup, long n)
{
    backward(dy, gate, up, dgate, dup, n);
}

extern "C" __global__ void __launch_bounds__(THREADS) swiglu_backward_bf16(
    const float* dy, const bf16_t* __restrict__ gate, const bf16_t* __restrict__ up, float* dgate, float* dup, long n)
{
    backward(dy, gate, up, dgate, dup, n);
}
