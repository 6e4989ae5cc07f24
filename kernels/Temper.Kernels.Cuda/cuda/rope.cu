// rope.cu: RoPE (HF rotate_half layout) in place on x[N,H,D], f32, half = D/2: for row n at position
// p = positions[n] and i < half,
//   x'[i] = x[i] c - x[i + half] s,   x'[i + half] = x[i + half] c + x[i] s,
// with c = cos[p, i] and s = sign sin[p, i] from tables [P, half] the caller built (cos/sin of p invFreq[i]
// times the attention scaling, on the host: see the ILGPU op's RopeTables) and positions[n] < P;
// sign = -1 is the backward (the transposed rotation).
//   rope_apply: one thread per `width` consecutive i of one (n, h): width 4 loads 16 bytes of each half
//               and of each table (the caller picks it when half % 4 == 0 and x, cos, sin are 16-byte
//               aligned), width 1 single floats.
// Scalar reference: kernels/Temper.Kernels.Cpu/Reference/RopeReference.cs; the ILGPU op: Ops/Rope.cs.
#include <stdint.h>

namespace {
constexpr int THREADS = 256;

__device__ __forceinline__ void rotate(float& a, float& b, float c, float s)
{
    float x1 = a, x2 = b;
    a = x1 * c - x2 * s;
    b = x2 * c + x1 * s;
}
} // namespace

extern "C" __global__ void __launch_bounds__(THREADS) rope_apply(
    float* __restrict__ x, const int* __restrict__ positions, const float* __restrict__ cos, const float* __restrict__ sin,
    int heads, int half, float sign, int width, long threads)
{
    long t = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= threads) return;
    int per = half / width;
    int i = (int)(t % per) * width;
    long nh = t / per;
    long n = nh / heads;
    long tab = (long)positions[n] * half + i;
    float* a = x + nh * 2 * half + i;
    float* b = a + half;
    if (width == 4)
    {
        float4 va = *reinterpret_cast<float4*>(a), vb = *reinterpret_cast<float4*>(b);
        float4 c = *reinterpret_cast<const float4*>(cos + tab), s = *reinterpret_cast<const float4*>(sin + tab);
        rotate(va.x, vb.x, c.x, sign * s.x);
        rotate(va.y, vb.y, c.y, sign * s.y);
        rotate(va.z, vb.z, c.z, sign * s.z);
        rotate(va.w, vb.w, c.w, sign * s.w);
        *reinterpret_cast<float4*>(a) = va;
        *reinterpret_cast<float4*>(b) = vb;
    }
    else
    {
        rotate(*a, *b, cos[tab], sign * sin[tab]);
    }
}
