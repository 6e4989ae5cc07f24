// swiglu.cu: SwiGLU over n f32 elements (gate, up, y all [N,F], flattened), forward and backward.
//   swiglu_forward:  y = silu(gate) * up = gate / (1 + exp(-gate)) * up; y may alias gate or up.
//   swiglu_backward: dUp = dy silu(g), dGate = dy up sig(g) (1 + g (1 - sig(g))), both overwritten; either may
//                    alias an input.
// Bandwidth-bound: one thread per 4 consecutive elements, 16-byte loads and stores (float4) when every
// pointer is 16-byte aligned, single floats otherwise and for the last n % 4; each thread reads and writes
// only its own elements, so the aliasing above is safe.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/SwiGluReference.cs; the ILGPU op: Ops/SwiGlu.cs.
#include <stdint.h>

namespace {
constexpr int THREADS = 256;

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.f + expf(-g)) * u; }

__device__ __forceinline__ void swiglu_grad(float d, float g, float u, float& dg, float& du)
{
    float sig = 1.f / (1.f + expf(-g));
    du = d * g * sig;
    dg = d * u * sig * (1.f + g * (1.f - sig));
}

__device__ __forceinline__ bool aligned16(uintptr_t a) { return (a & 15) == 0; }
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) swiglu_forward(const float* gate, const float* up, float* y, long n)
{
    long e = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (e >= n) return;
    if (e + 4 <= n && aligned16((uintptr_t)gate | (uintptr_t)up | (uintptr_t)y))
    {
        float4 g = *reinterpret_cast<const float4*>(gate + e);
        float4 u = *reinterpret_cast<const float4*>(up + e);
        *reinterpret_cast<float4*>(y + e) = make_float4(silu_times(g.x, u.x), silu_times(g.y, u.y), silu_times(g.z, u.z), silu_times(g.w, u.w));
        return;
    }
    for (long i = e; i < e + 4 && i < n; i++) y[i] = silu_times(gate[i], up[i]);
}

extern "C" __global__ void __launch_bounds__(THREADS) swiglu_backward(
    const float* dy, const float* gate, const float* up, float* dgate, float* dup, long n)
{
    long e = ((long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (e >= n) return;
    if (e + 4 <= n && aligned16((uintptr_t)dy | (uintptr_t)gate | (uintptr_t)up | (uintptr_t)dgate | (uintptr_t)dup))
    {
        float4 d = *reinterpret_cast<const float4*>(dy + e);
        float4 g = *reinterpret_cast<const float4*>(gate + e);
        float4 u = *reinterpret_cast<const float4*>(up + e);
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
        swiglu_grad(dy[i], gate[i], up[i], dg, du);
        dgate[i] = dg;
        dup[i] = du;
    }
}
