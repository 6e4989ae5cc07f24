// cuda_bf16.h for the CUDA emulator (see cuda_emu.h): __nv_bfloat16 as its 16 bits, conversions rounding to
// nearest even as the hardware does, NaN kept a NaN.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16
{
    unsigned short x;
};
struct __nv_bfloat162
{
    __nv_bfloat16 x, y;
};

inline __nv_bfloat16 __float2bfloat16(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return {(unsigned short)((u >> 16) | 0x40)};
    return {(unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b)
{
    uint32_t u = (uint32_t)b.x << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16(a), __float2bfloat16(b)}; }
