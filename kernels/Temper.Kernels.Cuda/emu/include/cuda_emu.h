// cuda_emu.h: the device-side CUDA C++ that Temper's kernels use, for running cuda/*.cu on the CPU
// (the CUDA emulator, libtemper_cuda_emu.so: a stand-in for libcuda that the driver bindings load when
// TEMPER_CUDA_DRIVER names it). build-emu.sh force-includes this header before each .cu.
// A block's threads are fibers on the launching OS thread (runtime.cpp): one runs until it reaches a
// barrier (__syncthreads, __syncwarp, a shuffle, a warp-collective op) or an mbarrier wait (tma_ops.cuh),
// then the next; blocks run one after another; emulated TMA copies land when no thread can run. So
// __shared__ variables are plain statics shared by the block's fibers (refilled with NaN
// bytes before each block, dynamic shared memory too), and a barrier
// that not every live thread reaches is reported as a deadlock instead of hanging.
// What it checks: indexing, tiling, partial tiles, barriers and warp data exchange; run under
// TEMPER_EMU_SCHEDULE=reverse or shuffle:SEED (runtime.cpp), a missing barrier between a write and another
// thread's read, as the result then changes. What it cannot: speed, races finer than a barrier interval
// (a fiber runs alone between barriers), the memory model, and the exact rounding of tensor cores.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <functional>
#include <memory>
#include <string>

#define TEMPER_CUDA_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __grid_constant__
// Static shared memory: statics gathered in one section, which the runtime fills with 0xFF (NaN as f32 and
// bf16, -1 as integers) before every block, as a GPU leaves shared memory holding whatever came before:
// a kernel that reads a shared value it never wrote gets NaN here instead of a lucky zero. Not for statics
// inside function templates: g++ ignores a section attribute there (GCC bug 88061), so those start at
// zero once and keep the previous block's values; dynamic shared memory is always refilled.
#define __shared__ static __attribute__((section("temper_emu_shared")))
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))
// Dynamic shared memory: kernels declare it with this macro (cuda/common.cuh defines it for nvcc).
#define TEMPER_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(::emu::dynamic_shared())

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x = 1, y = 1, z = 1; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(8) int2 { int x, y; };
inline int2 make_int2(int x, int y) { return {x, y}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

namespace emu {
struct Thread;
struct Block;
extern thread_local Thread* current_thread;
extern thread_local Block* current_block;
const uint3& thread_idx();
const uint3& block_idx();
const uint3& block_dim();
const uint3& grid_dim();
int lane();
void sync_block();
void sync_warp();
void* dynamic_shared();
// The shared-window address of p: its offset in this block's dynamic shared memory (a trap elsewhere).
size_t shared_offset(const void* p);
size_t dynamic_shared_bytes();
// This thread's state of emulated asynchronous operations still in flight (wgmma_ops.cuh's groups); empty
// at each block's start.
std::shared_ptr<void>& thread_async_state();
// Every thread's async state of this block (thread index, state), e.g. to find wgmmas still reading shared memory.
void for_each_thread_async_state(const std::function<void(int, std::shared_ptr<void>&)>& visit);
// The block's emulated asynchronous unit (tma_ops.cuh's TMA copies), created by its first user, dropped at the
// block's end. The scheduler calls progress() when no thread can run (it completes one pending operation and
// returns false when none is pending: then the block is deadlocked), and at_block_end() when every thread
// returned ("" or why the block may not end with what is pending). pending_write(begin, end): whether a pending
// operation still writes dynamic shared bytes [begin, end).
struct AsyncUnit
{
    virtual ~AsyncUnit() = default;
    virtual bool progress() = 0;
    virtual bool pending_write(size_t begin, size_t end) const = 0;
    virtual std::string at_block_end() const = 0;
};
std::unique_ptr<AsyncUnit>& block_async_unit();
// Suspends this thread until wake_async_waiters() (an mbarrier phase completed): a spinning
// mbarrier.try_wait lets the other threads and the async unit run. Counted as "at an mbarrier" in a deadlock.
void wait_async();
void wake_async_waiters();
// This thread's cp.async copies not yet waited for (ptx_ops.cuh); empty at each block's start.
std::shared_ptr<void>& thread_copy_state();
// griddepcontrol.wait (grid_dependency.cuh): records that this thread waited for the kernels before it, which a
// launch that asked to overlap them (cuLaunchKernelEx's programmatic stream serialization) requires of every thread.
void wait_prior_grids();
// This warp's exchange area: 32 lanes x 64 bytes. Write yours, sync_warp, read others', sync_warp.
unsigned char* warp_exchange();
[[noreturn]] void trap(const char* why);

template <class T> T exchange(T v, int source_lane)
{
    static_assert(sizeof(T) <= 64, "exchange of more than 64 bytes per lane");
    unsigned char* x = warp_exchange();
    std::memcpy(x + 64 * lane(), &v, sizeof(T));
    sync_warp();
    T r;
    std::memcpy(&r, x + 64 * (source_lane & 31), sizeof(T));
    sync_warp();
    return r;
}
// Every lane's v, in lane order (a warp-collective op: all live lanes of the warp call it).
template <class T> struct Lanes
{
    T v[32];
    const T& operator[](int i) const { return v[i]; }
};
template <class T> Lanes<T> all_lanes(T v)
{
    static_assert(sizeof(T) <= 64, "all_lanes of more than 64 bytes per lane");
    unsigned char* x = warp_exchange();
    std::memcpy(x + 64 * lane(), &v, sizeof(T));
    sync_warp();
    Lanes<T> r;
    for (int i = 0; i < 32; i++) std::memcpy(&r.v[i], x + 64 * i, sizeof(T));
    sync_warp();
    return r;
}
} // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())
constexpr int warpSize = 32;

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::sync_warp(); }
inline void __trap() { emu::trap("__trap()"); }
inline size_t __cvta_generic_to_shared(const void* p) { return emu::shared_offset(p); }

template <class T> T __shfl_sync(unsigned, T v, int src, int = 32) { return emu::exchange(v, src); }
template <class T> T __shfl_xor_sync(unsigned, T v, int mask, int = 32) { return emu::exchange(v, emu::lane() ^ mask); }
template <class T> T __shfl_down_sync(unsigned, T v, unsigned d, int = 32)
{
    int src = emu::lane() + (int)d;
    T r = emu::exchange(v, src < 32 ? src : emu::lane());
    return r;
}
template <class T> T __shfl_up_sync(unsigned, T v, unsigned d, int = 32)
{
    int src = emu::lane() - (int)d;
    return emu::exchange(v, src >= 0 ? src : emu::lane());
}

// Fibers never run at the same time, so atomics are plain read-modify-writes.
template <class T> T atomicAdd(T* p, T v) { T old = *p; *p = old + v; return old; }
template <class T> T atomicMax(T* p, T v) { T old = *p; *p = std::max(old, v); return old; }
template <class T> T atomicMin(T* p, T v) { T old = *p; *p = std::min(old, v); return old; }
template <class T> T atomicExch(T* p, T v) { T old = *p; *p = v; return old; }
template <class T> T atomicCAS(T* p, T cmp, T v) { T old = *p; if (old == cmp) *p = v; return old; }
// One fiber runs at a time and memory is the host's: a fence orders nothing more, an L2-only load is a load.
inline void __threadfence() {}
template <class T> T __ldcg(const T* p) { return *p; }

inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Round-to-nearest f32 operations that nvcc never contracts; plain f32 arithmetic here (no FMA contraction
// on the emulator's x86-64 target).
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float v) { unsigned i; std::memcpy(&i, &v, 4); return i; }
using std::min;
using std::max;
