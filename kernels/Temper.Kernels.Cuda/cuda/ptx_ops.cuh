// ptx_ops.cuh: the warp-level tensor-core instructions the GEMM kernels use, as inline PTX on the GPU and,
// under the CUDA emulator (TEMPER_CUDA_EMU), as their PTX ISA definitions in C++ so the kernels' fragment
// bookkeeping is checked on the CPU:
//   mma_bf16_16816(d, a, b): mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, d += A[16x16] B[16x8].
//     With g = lane / 4, t = lane % 4 (each register holds two bf16, the lower index in the low half):
//     a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..];
//     b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]; d[0..1] = D[g][2t..2t+1], d[2..3] = D[g+8][2t..].
//   ldmatrix_x4(r, p): ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8j..8j+7 give the row addresses of
//     8x8 matrix j (16 bytes each); r[j] of lane l = matrix j's row l / 4, elements 2 (l % 4) and +1.
//   ldmatrix_x4_trans(r, p): the same with .trans: r[j] of lane l = matrix j's elements (2 (l % 4), l / 4) and
//     (2 (l % 4) + 1, l / 4), i.e. column l / 4 of the stored rows.
//   cp_async_16(dst, src, full): cp.async.cg.shared.global, 16 bytes, zero-filled when !full; then
//     cp_async_commit() and cp_async_wait<N>() (at most N groups still in flight).
// The emulator holds each thread's copies until a cp_async_wait retires their group, as the GPU may: the
// bytes land in shared memory then, not at the copy, so a stage read before its wait (a wrong wait depth, a
// missing commit) holds the NaN the emulator fills shared memory with, or an older slice. A stage
// overwritten while other warps still read it is caught as before, as those warps run later.
#pragma once
#include <stdint.h>
#ifdef TEMPER_CUDA_EMU
#include <vector>
#endif

#ifdef TEMPER_CUDA_EMU
__device__ __forceinline__ float emu_bf16_half(uint32_t reg, int high)
{
    uint32_t bits = (high ? reg >> 16 : reg & 0xFFFF) << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
#endif

__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2])
{
#ifdef TEMPER_CUDA_EMU
    struct A { uint32_t r[4]; };
    struct B { uint32_t r[2]; };
    A mine_a{{a[0], a[1], a[2], a[3]}};
    B mine_b{{b[0], b[1]}};
    auto as = emu::all_lanes(mine_a);
    auto bs = emu::all_lanes(mine_b);
    float full_a[16][16], full_b[16][8];
    for (int l = 0; l < 32; l++)
    {
        int g = l / 4, t = l % 4;
        for (int h = 0; h < 2; h++)
        {
            full_a[g][2 * t + h] = emu_bf16_half(as[l].r[0], h);
            full_a[g + 8][2 * t + h] = emu_bf16_half(as[l].r[1], h);
            full_a[g][2 * t + 8 + h] = emu_bf16_half(as[l].r[2], h);
            full_a[g + 8][2 * t + 8 + h] = emu_bf16_half(as[l].r[3], h);
            full_b[2 * t + h][g] = emu_bf16_half(bs[l].r[0], h);
            full_b[2 * t + 8 + h][g] = emu_bf16_half(bs[l].r[1], h);
        }
    }
    int l = emu::lane(), g = l / 4, t = l % 4;
    for (int e = 0; e < 4; e++)
    {
        int row = g + 8 * (e / 2), col = 2 * t + e % 2;
        float s = d[e];
        for (int k = 0; k < 16; k++) s += full_a[row][k] * full_b[k][col];
        d[e] = s;
    }
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* smem_row)
{
#ifdef TEMPER_CUDA_EMU
    auto rows = emu::all_lanes(smem_row);
    int l = emu::lane();
    for (int j = 0; j < 4; j++) memcpy(&r[j], static_cast<const unsigned char*>(rows[8 * j + l / 4]) + 4 * (l % 4), 4);
#else
    uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row)
{
#ifdef TEMPER_CUDA_EMU
    auto rows = emu::all_lanes(smem_row);
    int l = emu::lane();
    for (int j = 0; j < 4; j++)
    {
        uint16_t lo, hi;
        memcpy(&lo, static_cast<const unsigned char*>(rows[8 * j + 2 * (l % 4)]) + 2 * (l / 4), 2);
        memcpy(&hi, static_cast<const unsigned char*>(rows[8 * j + 2 * (l % 4) + 1]) + 2 * (l / 4), 2);
        r[j] = (uint32_t)lo | (uint32_t)hi << 16;
    }
#else
    uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(smem_row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
#endif
}

#ifdef TEMPER_CUDA_EMU
// One thread's cp.async state: copies issued since its last commit, and the committed groups, oldest first.
struct EmuCpAsyncCopy
{
    void* smem;
    const void* global;
    bool full;
};
struct EmuCpAsyncGroups
{
    std::vector<EmuCpAsyncCopy> open;
    std::vector<std::vector<EmuCpAsyncCopy>> committed;
};
inline EmuCpAsyncGroups& emu_cp_async_groups()
{
    auto& state = emu::thread_copy_state();
    if (!state) state = std::make_shared<EmuCpAsyncGroups>();
    return *static_cast<EmuCpAsyncGroups*>(state.get());
}
#endif

__device__ __forceinline__ void cp_async_16(void* smem, const void* global, bool full)
{
#ifdef TEMPER_CUDA_EMU
    emu_cp_async_groups().open.push_back({smem, global, full});
#else
    uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    int bytes = full ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(global), "r"(bytes));
#endif
}

__device__ __forceinline__ void cp_async_commit()
{
#ifdef TEMPER_CUDA_EMU
    auto& groups = emu_cp_async_groups();
    groups.committed.push_back(std::move(groups.open));
    groups.open.clear();
#else
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Copies of the groups committed before the newest N land (uncommitted copies are in no group: not waited for).
template <int N> __device__ __forceinline__ void cp_async_wait()
{
#ifdef TEMPER_CUDA_EMU
    auto& groups = emu_cp_async_groups();
    size_t retire = groups.committed.size() > (size_t)N ? groups.committed.size() - N : 0;
    for (size_t g = 0; g < retire; g++)
        for (auto& c : groups.committed[g])
        {
            if (c.full) memcpy(c.smem, c.global, 16);
            else memset(c.smem, 0, 16);
        }
    groups.committed.erase(groups.committed.begin(), groups.committed.begin() + retire);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
