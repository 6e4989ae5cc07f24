// tma_ops.cuh: Hopper (sm_90) bulk tensor copies (TMA) and the mbarriers that count them, as inline PTX on
// the GPU (PTX ISA 8.0) and, under the CUDA emulator (TEMPER_CUDA_EMU), as their PTX ISA definitions in C++:
//   TensorMap: a CUtensorMap (cuda.h, CUDA 12; nvcc 11.8 has none): 128 opaque bytes, 64-byte aligned,
//     made on the host by cuTensorMapEncodeTiled and passed by value as a `const __grid_constant__` kernel
//     parameter (its generic address, in the parameter space, is what the copy names).
//   mbar_init(bar, count): mbarrier.init: phase 0, `count` arrivals expected per phase, tx-count 0. One
//     thread inits; then fence_mbarrier_init() (fence.mbarrier_init.release.cluster, so the TMA unit sees
//     it) and a __syncthreads before any other thread or copy uses the barrier.
//   mbar_arrive(bar): mbarrier.arrive: one arrival. mbar_arrive_expect_tx(bar, bytes): the tx-count grows by
//     `bytes`, then one arrival. A phase completes when its pending arrivals and its tx-count are both 0:
//     the phase bit flips, the arrivals are re-armed.
//   mbar_wait(bar, parity): loops on mbarrier.try_wait.parity until the phase of that parity completed
//     (true when the barrier's current phase parity differs from `parity`: a fresh barrier waited on with
//     parity 1 passes at once, with 0 blocks until phase 0 completes).
//   tma_load_2d(dst, map, c0, c1, bar): cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes:
//     the map's box at element coordinates (c0 innermost, c1) into shared memory at dst (1024-byte aligned
//     for the 128B swizzle), elements outside the tensor zero-filled; when it lands, the barrier's tx-count
//     drops by the whole box's bytes (zero-filled ones included). With CU_TENSOR_MAP_SWIZZLE_128B and a
//     128-byte inner box, box row r lands at dst + 128 r with its 16-byte chunk c at chunk c ^ (r % 8):
//     the layout wgmma_ops.cuh's 128B-swizzled descriptors read.
//   setmaxnreg_dec<N>() / setmaxnreg_inc<N>(): setmaxnreg.dec/inc.sync.aligned.u32 (sm_90a): a warpgroup
//     gives registers back / takes them (the producer/consumer split). No-ops in the emulator.
// The emulator keeps an mbarrier's state in its 8 shared bytes (pending and expected arrivals, phase, signed
// tx-count; a barrier never initialised traps) and each copy in flight in the block's async unit until
// every thread waits: then the oldest copy lands (its bytes written, the barrier's tx-count completed),
// so data reach shared memory only when their barrier counts them. mbar_wait suspends its thread until a
// phase completes; a wait nothing can complete is a deadlock. Checks: a copy issued into bytes a wgmma still
// in flight reads (a stage released before wgmma_wait retired it), a wgmma reading bytes a copy in flight
// still writes (a phase completed early: expect_tx too small), more arrivals than a phase expects, a
// tx-count out of range, copies never waited for when the block ends. A wrong expect_tx too large, or a
// wrong parity, deadlocks or reads unwritten (NaN) shared memory.
#pragma once
#include <stdint.h>
#include "wgmma_ops.cuh"
#ifdef TEMPER_CUDA_EMU
#include "tensor_map_emu.h"
#include <deque>
#include <set>
#endif

#ifdef TEMPER_CUDA_EMU
struct alignas(16) TensorMap // the emulator's argument copies are 16-byte aligned; the driver checks 64 on the host
{
    unsigned long long opaque[16];
};
#else
struct alignas(64) TensorMap
{
    unsigned long long opaque[16];
};
#endif
static_assert(sizeof(TensorMap) == 128, "a CUtensorMap is 128 bytes");

#ifdef TEMPER_CUDA_EMU
namespace emu_tma {
// An mbarrier's 8 bytes: bits 0-19 pending arrivals, 20-39 expected arrivals, 40 phase parity, 41-61 the
// tx-count (21-bit two's complement, the PTX ISA's range +-(2^20 - 1)), 62-63 binary 01 (initialised; the
// 0xFF bytes shared memory starts with read as uninitialised).
struct Barrier
{
    uint32_t pending, expected, phase;
    int32_t tx;
};

inline uint64_t* barrier_word(uint32_t offset)
{
    if (offset % 8 != 0 || offset + 8 > emu::dynamic_shared_bytes()) emu::trap("mbarrier: not an 8-byte aligned object in dynamic shared memory");
    return reinterpret_cast<uint64_t*>(static_cast<unsigned char*>(emu::dynamic_shared()) + offset);
}

inline Barrier load(uint32_t offset)
{
    uint64_t v = *barrier_word(offset);
    if ((v >> 62) != 1) emu::trap("mbarrier: used before mbarrier.init");
    int32_t tx = (int32_t)((v >> 41) & 0x1FFFFF);
    if (tx & 0x100000) tx -= 0x200000;
    return {(uint32_t)(v & 0xFFFFF), (uint32_t)((v >> 20) & 0xFFFFF), (uint32_t)((v >> 40) & 1), tx};
}

inline void store(uint32_t offset, const Barrier& b)
{
    if (b.tx > 0xFFFFF || b.tx < -0xFFFFF) emu::trap("mbarrier: tx-count out of the range +-(2^20 - 1)");
    *barrier_word(offset) = (uint64_t)b.pending | (uint64_t)b.expected << 20 | (uint64_t)b.phase << 40
        | (uint64_t)((uint32_t)b.tx & 0x1FFFFF) << 41 | (uint64_t)1 << 62;
}

// Applies arrivals and tx-count changes; completes the phase (and wakes the waiters) when both reach 0.
inline void update(uint32_t offset, uint32_t arrivals, int32_t expect_tx, int32_t complete_tx)
{
    Barrier b = load(offset);
    if (arrivals > b.pending) emu::trap("mbarrier: more arrivals than the current phase expects");
    b.pending -= arrivals;
    b.tx += expect_tx - complete_tx;
    if (b.pending == 0 && b.tx == 0)
    {
        b.phase ^= 1;
        b.pending = b.expected;
        emu::wake_async_waiters();
    }
    store(offset, b);
}

// One cp.async.bulk.tensor in flight: the map's description, the box origin, the destination and barrier.
struct Copy
{
    emu::TensorMapDescription map;
    int32_t c0, c1;
    uint32_t dst, bar, bytes;
};

inline void land(const Copy& c)
{
    auto* shared = static_cast<unsigned char*>(emu::dynamic_shared());
    const auto& m = c.map;
    uint32_t row_bytes = m.box[0] * m.element_bytes, mask = m.swizzle == 0 ? 0 : (1u << m.swizzle) - 1;
    for (uint32_t r = 0; r < m.box[1]; r++)
        for (uint32_t e = 0; e < m.box[0]; e++)
        {
            int64_t gk = (int64_t)c.c0 + e, gr = (int64_t)c.c1 + r;
            uint32_t a = c.dst + r * row_bytes + e * m.element_bytes;
            a ^= ((a >> 7) & mask) << 4; // 16-byte chunk bits [4, 4 + swizzle) XOR address bits [7, ...)
            if (gk >= 0 && gk < (int64_t)m.dims[0] && gr >= 0 && gr < (int64_t)m.dims[1])
                std::memcpy(shared + a, reinterpret_cast<const unsigned char*>(m.address) + gr * m.row_stride + gk * m.element_bytes, m.element_bytes);
            else
                std::memset(shared + a, m.nan_fill ? 0xFF : 0, m.element_bytes);
        }
    update(c.bar, 0, 0, (int32_t)c.bytes);
}

struct Unit : emu::AsyncUnit
{
    std::deque<Copy> in_flight; // oldest first

    bool progress() override
    {
        if (in_flight.empty()) return false;
        Copy c = in_flight.front();
        in_flight.pop_front();
        land(c);
        return true;
    }

    bool pending_write(size_t begin, size_t end) const override
    {
        for (auto& c : in_flight)
            if (begin < c.dst + c.bytes && c.dst < end) return true;
        return false;
    }

    std::string at_block_end() const override
    {
        return in_flight.empty() ? "" : "the block ended with " + std::to_string(in_flight.size()) + " TMA copies in flight (their barrier never waited for)";
    }
};

inline Unit& unit()
{
    auto& u = emu::block_async_unit();
    if (!u) u = std::make_unique<Unit>();
    return static_cast<Unit&>(*u);
}

// Whether a wgmma not yet computed (issued, not retired by its thread's wgmma_wait) reads bytes [begin, end).
inline bool wgmma_in_flight_reads(size_t begin, size_t end)
{
    std::set<std::pair<uint64_t, int>> descriptors; // (descriptor, rows): A 64 rows, B 128 or 256
    emu::for_each_thread_async_state([&](int, std::shared_ptr<void>& state) {
        if (!state) return;
        auto& groups = *static_cast<EmuWgmmaGroups*>(state.get());
        for (auto& op : groups.open) descriptors.insert({op.a, 64}), descriptors.insert({op.b, op.n});
        for (auto& group : groups.committed)
            for (auto& op : group) descriptors.insert({op.a, 64}), descriptors.insert({op.b, op.n});
    });
    for (auto& [desc, rows] : descriptors)
    {
        auto [lo, hi] = emu_wgmma_span(desc, rows);
        if (begin < hi && lo < end) return true;
    }
    return false;
}
} // namespace emu_tma
#endif

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count)
{
#ifdef TEMPER_CUDA_EMU
    if (count == 0 || count > 0xFFFFF) emu::trap("mbarrier.init: count must be 1 to 2^20 - 1");
    emu_tma::store((uint32_t)__cvta_generic_to_shared(bar), {count, count, 0, 0});
#else
    asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)), "r"(count) : "memory");
#endif
}

__device__ __forceinline__ void fence_mbarrier_init()
{
#ifndef TEMPER_CUDA_EMU
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar)
{
#ifdef TEMPER_CUDA_EMU
    emu_tma::update((uint32_t)__cvta_generic_to_shared(bar), 1, 0, 0);
#else
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared.b64 state, [%0];\n}\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)) : "memory");
#endif
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes)
{
#ifdef TEMPER_CUDA_EMU
    emu_tma::update((uint32_t)__cvta_generic_to_shared(bar), 1, (int32_t)bytes, 0);
#else
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n"
        ::"r"((uint32_t)__cvta_generic_to_shared(bar)), "r"(bytes) : "memory");
#endif
}

// One mbarrier.try_wait.parity: true when the phase of parity `parity` has completed.
__device__ __forceinline__ bool mbar_try_wait(uint64_t* bar, uint32_t parity)
{
#ifdef TEMPER_CUDA_EMU
    if (emu_tma::load((uint32_t)__cvta_generic_to_shared(bar)).phase != (parity & 1)) return true;
    emu::wait_async(); // until some phase completes (another thread's arrival or a copy landing)
    return false;
#else
    uint32_t done;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done) : "r"((uint32_t)__cvta_generic_to_shared(bar)), "r"(parity) : "memory");
    return done != 0;
#endif
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity)
{
    while (!mbar_try_wait(bar, parity)) {}
}

__device__ __forceinline__ void tma_load_2d(void* dst, const TensorMap* map, int c0, int c1, uint64_t* bar)
{
    uint32_t d = (uint32_t)__cvta_generic_to_shared(dst), b = (uint32_t)__cvta_generic_to_shared(bar);
#ifdef TEMPER_CUDA_EMU
    emu_tma::Copy c;
    std::memcpy(&c.map, map, sizeof c.map);
    if (c.map.magic != emu::TensorMapDescription::Magic) emu::trap("cp.async.bulk.tensor: the tensor map was not made by cuTensorMapEncodeTiled");
    if (c.map.rank != 2) emu::trap("cp.async.bulk.tensor.2d: the tensor map is not of rank 2");
    if (c.map.element_strides[0] != 1 || c.map.element_strides[1] != 1) emu::trap("cp.async.bulk.tensor: element strides other than 1 are not emulated");
    uint32_t row_bytes = c.map.box[0] * c.map.element_bytes;
    if (c.map.swizzle != 0 && row_bytes != (16u << c.map.swizzle)) emu::trap("cp.async.bulk.tensor: a swizzled box narrower than its span is not emulated");
    if (d % 128 != 0) emu::trap("cp.async.bulk.tensor: the shared-memory destination must be 128-byte aligned");
    c.c0 = c0;
    c.c1 = c1;
    c.dst = d;
    c.bar = b;
    c.bytes = row_bytes * c.map.box[1];
    if (d + c.bytes > emu::dynamic_shared_bytes()) emu::trap("cp.async.bulk.tensor: the box reaches past dynamic shared memory");
    emu_tma::load(b); // the barrier must be initialised
    if (emu_tma::wgmma_in_flight_reads(d, d + c.bytes))
        emu::trap("cp.async.bulk.tensor: a copy into shared memory that a wgmma still in flight reads (a stage released before wgmma_wait retired it)");
    emu_tma::unit().in_flight.push_back(c);
#else
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
        ::"r"(d), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(b) : "memory");
#endif
}

template <int N> __device__ __forceinline__ void setmaxnreg_dec()
{
#ifndef TEMPER_CUDA_EMU
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

template <int N> __device__ __forceinline__ void setmaxnreg_inc()
{
#ifndef TEMPER_CUDA_EMU
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
