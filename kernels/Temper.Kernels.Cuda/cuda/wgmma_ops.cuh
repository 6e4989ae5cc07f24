// wgmma_ops.cuh: the Hopper (sm_90a) warpgroup tensor-core instructions, as inline PTX on the GPU (PTX ISA
// 8.0: build-ptx.sh retargets a .cu marked `// ptx-target: sm_90a`) and, under the CUDA emulator
// (TEMPER_CUDA_EMU), as their PTX ISA definitions in C++:
//   wgmma_desc(smem, sbo, swizzle): a 64-bit shared-memory matrix descriptor: bits 0-13 the start address
//     >> 4, 16-29 the leading byte offset >> 4 (1: unused by K-major swizzled layouts), 32-45 the stride
//     byte offset >> 4 (between 8-row groups), 49-51 base offset 0 (atoms 1024-byte aligned), 62-63 the
//     swizzle (0 none, 1 128B, 2 64B, 3 32B).
//   wgmma_m64n128k16(d, a_desc, b_desc, scale_d): wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16,
//     A [64 x 16] and B [16 x 128] both K-major in shared memory (imm-scale-a/b 1, tnspA/B 0):
//     D = A B + (scale_d ? D : 0). Warp w of the warpgroup, g = lane / 4, t = lane % 4: d[i] holds
//     D[16w + g + 8 ((i / 2) % 2)][8 (i / 4) + 2t + i % 2], i = 0..63 (the m16n8 C fragment over N / 8).
//     K-major element (row r, k) of a descriptor with swizzle width W bytes (128/64/32) sits at
//     start + (r / 8) SBO + (r % 8) W + 2k, then address bits [4, 4 + log2(W / 16)) XOR bits [7, ...):
//     16-byte chunk c of row r of a 1024-byte aligned 128B atom is stored at chunk c ^ (r % 8); with no
//     swizzle at start + (r / 8) SBO + (k / 8) LBO + 16 (r % 8) + 2 (k % 8).
//   wgmma_m64n256k16(d, a_desc, b_desc, scale_d): the same with N = 256 (B 256 rows, d[0..127], i = 0..127).
//   wgmma_fence(), wgmma_commit(), wgmma_wait<N>(): wgmma.fence / commit_group / wait_group N (.sync.aligned).
//   fence_proxy_async(): fence.proxy.async.shared::cta: this thread's shared-memory writes (cp.async's
//     included, once waited for) become visible to the async proxy wgmma reads through.
// The emulator keeps each thread's wgmmas in commit groups and computes a group when the wgmma_wait that
// retires it runs, each thread its own fragment straight from dynamic shared memory (__cvta_generic_to_shared
// gives offsets into it): a kernel that rewrites a stage before the wait that retires the wgmmas reading it,
// or reads the accumulators before that wait, gets wrong results here as it may on the GPU; a wgmma that
// reads bytes a TMA copy in flight still writes (tma_ops.cuh) traps. wgmma_wait ends with a warp barrier
// (.sync.aligned: the warp leaves together). The fences are no-ops.
#pragma once
#include <stdint.h>
#ifdef TEMPER_CUDA_EMU
#include <utility>
#include <vector>
#endif

__device__ __forceinline__ uint64_t wgmma_desc(const void* smem, uint32_t sbo_bytes, uint32_t swizzle)
{
    uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    return (uint64_t)((address & 0x3FFFF) >> 4) | (uint64_t)1 << 16 | (uint64_t)((sbo_bytes & 0x3FFFF) >> 4) << 32
        | (uint64_t)swizzle << 62;
}

#ifdef TEMPER_CUDA_EMU
// The byte offset in dynamic shared memory of K-major element (r, k) (bf16) of a descriptor's matrix.
inline uint32_t emu_wgmma_offset(uint64_t desc, int r, int k)
{
    uint32_t start = (uint32_t)(desc & 0x3FFF) << 4, lbo = (uint32_t)((desc >> 16) & 0x3FFF) << 4;
    uint32_t sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4, base = (uint32_t)((desc >> 49) & 7), swizzle = (uint32_t)(desc >> 62);
    if (base != 0) emu::trap("wgmma: descriptor base offset other than 0 is not emulated");
    if (swizzle == 0) return start + (r / 8) * sbo + (k / 8) * lbo + 16 * (r % 8) + 2 * (k % 8);
    uint32_t bits = swizzle == 1 ? 3 : swizzle == 2 ? 2 : 1, width = 16u << bits;
    uint32_t a = start + (r / 8) * sbo + (r % 8) * width + 2 * k;
    return a ^ (((a >> 7) & ((1u << bits) - 1)) << 4);
}

inline float emu_wgmma_bf16(uint64_t desc, int r, int k);

// The bytes [lo, hi) of dynamic shared memory that `rows` rows x 16 k of a descriptor's matrix span.
inline std::pair<size_t, size_t> emu_wgmma_span(uint64_t desc, int rows)
{
    size_t lo = SIZE_MAX, hi = 0;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < 16; k += 8)
        {
            size_t o = emu_wgmma_offset(desc, r, k);
            lo = std::min(lo, o);
            hi = std::max(hi, o + 16);
        }
    return {lo, hi};
}

// One issued m64n128k16 (its accumulators by address: the issuing thread's registers, alive until its wait).
struct EmuWgmma
{
    uint64_t a, b;
    int scale_d;
    float* d;
    int n; // 128 or 256
};
struct EmuWgmmaGroups
{
    std::vector<EmuWgmma> open;
    std::vector<std::vector<EmuWgmma>> committed; // oldest first
};
inline EmuWgmmaGroups& emu_wgmma_groups()
{
    auto& state = emu::thread_async_state();
    if (!state) state = std::make_shared<EmuWgmmaGroups>();
    return *static_cast<EmuWgmmaGroups*>(state.get());
}

inline void emu_wgmma_run(const EmuWgmma& op)
{
    if (auto& async = emu::block_async_unit())
    {
        auto [alo, ahi] = emu_wgmma_span(op.a, 64);
        auto [blo, bhi] = emu_wgmma_span(op.b, op.n);
        if (async->pending_write(alo, ahi) || async->pending_write(blo, bhi))
            emu::trap("wgmma: reads shared memory that a TMA copy in flight still writes (its mbarrier phase completed before the copy landed)");
    }
    int w = (threadIdx.x % 128) / 32, l = emu::lane(), g = l / 4, t = l % 4;
    for (int i = 0; i < op.n / 2; i++)
    {
        int row = 16 * w + g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * t + i % 2;
        float s = op.scale_d ? op.d[i] : 0.0f;
        for (int k = 0; k < 16; k++) s += emu_wgmma_bf16(op.a, row, k) * emu_wgmma_bf16(op.b, col, k);
        op.d[i] = s;
    }
}

inline float emu_wgmma_bf16(uint64_t desc, int r, int k)
{
    uint32_t offset = emu_wgmma_offset(desc, r, k);
    if (offset + 2 > emu::dynamic_shared_bytes()) emu::trap("wgmma: a descriptor reaches past dynamic shared memory");
    uint16_t h;
    std::memcpy(&h, static_cast<unsigned char*>(emu::dynamic_shared()) + offset, 2);
    uint32_t bits = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
#endif

__device__ __forceinline__ void wgmma_m64n128k16(float d[64], uint64_t a_desc, uint64_t b_desc, int scale_d)
{
#ifdef TEMPER_CUDA_EMU
    emu_wgmma_groups().open.push_back({a_desc, b_desc, scale_d, d, 128});
#else
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a_desc), "l"(b_desc), "r"(scale_d));
#endif
}

// wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16: as m64n128k16 with B [16 x 256] (256 K-major rows
// from b_desc) and d[0..127]: d[i] = D[16w + g + 8 ((i / 2) % 2)][8 (i / 4) + 2t + i % 2].
__device__ __forceinline__ void wgmma_m64n256k16(float d[128], uint64_t a_desc, uint64_t b_desc, int scale_d)
{
#ifdef TEMPER_CUDA_EMU
    emu_wgmma_groups().open.push_back({a_desc, b_desc, scale_d, d, 256});
#else
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
        "{"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
        "%128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(a_desc), "l"(b_desc), "r"(scale_d));
#endif
}

__device__ __forceinline__ void wgmma_fence()
{
#ifndef TEMPER_CUDA_EMU
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wgmma_commit()
{
#ifdef TEMPER_CUDA_EMU
    auto& groups = emu_wgmma_groups();
    groups.committed.push_back(std::move(groups.open));
    groups.open.clear();
#else
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int N> __device__ __forceinline__ void wgmma_wait()
{
#ifdef TEMPER_CUDA_EMU
    auto& groups = emu_wgmma_groups();
    size_t retire = groups.committed.size() > (size_t)N ? groups.committed.size() - N : 0;
    for (size_t i = 0; i < retire; i++)
        for (auto& op : groups.committed[i]) emu_wgmma_run(op);
    groups.committed.erase(groups.committed.begin(), groups.committed.begin() + (long)retire);
    emu::sync_warp(); // .sync.aligned: the warp's threads leave the wait together
#else
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Keeps the compiler from moving accumulator reads or writes across a wgmma fence or wait.
__device__ __forceinline__ void wgmma_hold(float& r)
{
#ifndef TEMPER_CUDA_EMU
    asm volatile("" : "+f"(r)::"memory");
#endif
}

__device__ __forceinline__ void fence_proxy_async()
{
#ifndef TEMPER_CUDA_EMU
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
