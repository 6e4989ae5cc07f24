// adamw.cu: AdamW step (torch.optim.AdamW's update in f32), in place on param, m, v from grad, all f32:
//   param *= decay;  m = lerp(m, g, w1);  v = v beta2 + w2 g g;
//   param += -step_size m / (sqrt(v) / bc2_sqrt + eps)
// with the scalars (decay = 1 - lr wd, w1 = 1 - b1, w2 = 1 - b2, step_size = lr / (1 - b1^t),
// bc2_sqrt = sqrt(1 - b2^t)) computed on the host in f64 and passed as f32, as torch does.
//   adamw_step:       one tensor of n elements; block b updates elements [b CHUNK, (b + 1) CHUNK).
//   adamw_multi_step: many tensors in one launch: block b updates chunks[b], a device table entry holding
//                     its four pointers (already offset to the chunk) and its length (<= CHUNK).
// Each thread updates 4 consecutive elements with 16-byte loads and stores when the chunk's four pointers
// are 16-byte aligned, single floats otherwise and for the chunk's last n % 4.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/AdamWReference.cs; the ILGPU op: Ops/AdamW.cs.
#include <stdint.h>

namespace {
constexpr int THREADS = 256;
constexpr int CHUNK = 4096;
} // namespace

struct AdamWScalars
{
    float decay, w1, beta2, w2, step_size, bc2_sqrt, eps;
};

struct AdamWChunk
{
    float* param;
    const float* grad;
    float* m;
    float* v;
    long n;
};

namespace {
__device__ __forceinline__ void update(float& p, float g, float& m, float& v, const AdamWScalars& s)
{
    p *= s.decay;
    m = fabsf(s.w1) < 0.5f ? m + s.w1 * (g - m) : g - (g - m) * (1.f - s.w1); // torch.lerp's two forms
    v = v * s.beta2 + s.w2 * g * g;
    float denom = sqrtf(v) / s.bc2_sqrt + s.eps;
    p = p + -s.step_size * (m / denom);
}

__device__ __forceinline__ void update_range(float* param, const float* grad, float* m, float* v, long n, const AdamWScalars& s)
{
    bool vec = (((uintptr_t)param | (uintptr_t)grad | (uintptr_t)m | (uintptr_t)v) & 15) == 0;
    for (long e = threadIdx.x * 4L; e < n; e += THREADS * 4L)
    {
        if (vec && e + 4 <= n)
        {
            float4 p = *reinterpret_cast<float4*>(param + e), mm = *reinterpret_cast<float4*>(m + e), vv = *reinterpret_cast<float4*>(v + e);
            float4 g = *reinterpret_cast<const float4*>(grad + e);
            update(p.x, g.x, mm.x, vv.x, s);
            update(p.y, g.y, mm.y, vv.y, s);
            update(p.z, g.z, mm.z, vv.z, s);
            update(p.w, g.w, mm.w, vv.w, s);
            *reinterpret_cast<float4*>(param + e) = p;
            *reinterpret_cast<float4*>(m + e) = mm;
            *reinterpret_cast<float4*>(v + e) = vv;
        }
        else
        {
            for (long i = e; i < e + 4 && i < n; i++)
            {
                float p = param[i], mi = m[i], vi = v[i];
                update(p, grad[i], mi, vi, s);
                param[i] = p;
                m[i] = mi;
                v[i] = vi;
            }
        }
    }
}
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) adamw_step(
    float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v, long n, AdamWScalars s)
{
    long start = (long)blockIdx.x * CHUNK;
    long len = n - start < CHUNK ? n - start : CHUNK;
    update_range(param + start, grad + start, m + start, v + start, len, s);
}

extern "C" __global__ void __launch_bounds__(THREADS) adamw_multi_step(const AdamWChunk* __restrict__ chunks, AdamWScalars s)
{
    AdamWChunk c = chunks[blockIdx.x];
    update_range(c.param, c.grad, c.m, c.v, c.n, s);
}
