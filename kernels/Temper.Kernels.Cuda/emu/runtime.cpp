// runtime.cpp: the CUDA emulator's execution of a launch (see include/cuda_emu.h). Each block's threads
// are fibers on the calling OS thread, scheduled round-robin: a fiber runs until it waits at a
// barrier (or an mbarrier, wait_async) or finishes. When none can run, the block's async unit (emulated TMA
// copies) completes one pending operation, which may complete an mbarrier phase and wake its waiters. On x86-64 a fiber switch is fiber_switch below (callee-saved registers, MXCSR and
// the x87 control word, no system call); elsewhere ucontext's swapcontext, which also saves the signal
// mask with a system call per switch and costs about ten times as much. A barrier opens when every live thread of the block (or of the warp) has
// arrived; threads that returned no longer count, as on sm_70 and later. If no fiber can run while some
// wait, the block is deadlocked: the launch fails naming the block and what the threads wait at.
// Order: TEMPER_EMU_SCHEDULE picks the order in which blocks run and, in every round, the order in which
// runnable fibers run: `forward` (the default: index order), `reverse`, or `shuffle:SEED` (a fresh
// permutation per grid and per round). A kernel whose result depends on that order reads shared memory
// another thread writes in the same barrier interval, or another block's output: a race on a GPU. So the
// kernel checks run once more under `reverse` and `shuffle` (test.sh); a difference between the runs
// shows a missing barrier that the fixed order hides.
#include "include/cuda_emu.h"
#include "runtime.h"
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <ucontext.h>
#include <vector>

#if defined(__x86_64__)
// fiber_switch(save, to): saves the callee-saved registers, MXCSR and the x87 control word on the current
// stack, stores the stack pointer in *save and resumes the fiber whose stack pointer is `to`.
extern "C" void temper_emu_fiber_switch(void** save, void* to);
asm(R"(
    .text
    .globl temper_emu_fiber_switch
    .type temper_emu_fiber_switch, @function
temper_emu_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size temper_emu_fiber_switch, .-temper_emu_fiber_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#define TEMPER_EMU_FAST_FIBERS 1
#endif

// The bounds of the static shared-memory section (see cuda_emu.h); weak, as a build without shared
// variables has no such section.
extern "C" char __start_temper_emu_shared[] __attribute__((weak));
extern "C" char __stop_temper_emu_shared[] __attribute__((weak));

namespace emu {
namespace {
enum class State { Runnable, AtBlockBarrier, AtWarpBarrier, AtAsyncWait, Done };
constexpr size_t StackBytes = 256 * 1024;
} // namespace

struct Thread
{
#if TEMPER_EMU_FAST_FIBERS
    void* sp = nullptr;
#else
    ucontext_t context;
#endif
    uint3 index;
    int linear = 0;
    State state = State::Runnable;
    unsigned char* stack = nullptr; // StackBytes, from the stack pool
    std::shared_ptr<void> async_state; // emulated asynchronous ops in flight (wgmma groups), cleared per block
    std::shared_ptr<void> copy_state;  // cp.async copies in flight (ptx_ops.cuh's groups), cleared per block
    bool waited_prior_grids = false;   // wait_prior_grids ran (grid_dependency.cuh), cleared per block
};

struct Block
{
    uint3 index, dim, grid;
    std::vector<Thread> threads;
    int live = 0, at_block_barrier = 0;
    std::vector<int> warp_live, at_warp_barrier;
    std::vector<unsigned char> exchange, shared;
#if TEMPER_EMU_FAST_FIBERS
    void* scheduler = nullptr;
#else
    ucontext_t scheduler;
#endif
    const Kernel* kernel = nullptr;
    void** params = nullptr;
    std::string failure;
    std::unique_ptr<AsyncUnit> async; // emulated TMA copies in flight, per block
};

thread_local Thread* current_thread = nullptr;
thread_local Block* current_block = nullptr;

std::map<std::string, Kernel>& registry()
{
    static std::map<std::string, Kernel> kernels;
    return kernels;
}

const uint3& thread_idx() { return current_thread->index; }
const uint3& block_idx() { return current_block->index; }
const uint3& block_dim() { return current_block->dim; }
const uint3& grid_dim() { return current_block->grid; }
int lane() { return current_thread->linear % 32; }
void* dynamic_shared() { return current_block->shared.data(); }
std::shared_ptr<void>& thread_async_state() { return current_thread->async_state; }
std::shared_ptr<void>& thread_copy_state() { return current_thread->copy_state; }
void wait_prior_grids() { current_thread->waited_prior_grids = true; } // the kernels before already ran: nothing to wait for
void for_each_thread_async_state(const std::function<void(int, std::shared_ptr<void>&)>& visit)
{
    for (auto& t : current_block->threads) visit(t.linear, t.async_state);
}
std::unique_ptr<AsyncUnit>& block_async_unit() { return current_block->async; }
size_t dynamic_shared_bytes() { return current_block->shared.size(); }
size_t shared_offset(const void* p)
{
    auto* b = static_cast<const unsigned char*>(p);
    if (b < current_block->shared.data() || b >= current_block->shared.data() + current_block->shared.size())
        trap("__cvta_generic_to_shared of an address outside dynamic shared memory (the emulator maps only that)");
    return (size_t)(b - current_block->shared.data());
}
unsigned char* warp_exchange() { return current_block->exchange.data() + (size_t)(current_thread->linear / 32) * 32 * 64; }

namespace {
struct Trap
{
    std::string why;
};

void release(State waiting, int warp)
{
    Block& b = *current_block;
    for (auto& t : b.threads)
        if (t.state == waiting && (warp < 0 || t.linear / 32 == warp)) t.state = State::Runnable;
}

// Suspends the running fiber and returns to the block's scheduler.
void yield_to_scheduler()
{
#if TEMPER_EMU_FAST_FIBERS
    temper_emu_fiber_switch(&current_thread->sp, current_block->scheduler);
#else
    swapcontext(&current_thread->context, &current_block->scheduler);
#endif
}

void wait(State state)
{
    current_thread->state = state;
    yield_to_scheduler();
}

// After a thread finished: barriers whose waiters are now all the live threads open.
void recheck_barriers(int warp)
{
    Block& b = *current_block;
    if (b.at_block_barrier > 0 && b.at_block_barrier == b.live)
    {
        b.at_block_barrier = 0;
        release(State::AtBlockBarrier, -1);
    }
    if (b.at_warp_barrier[warp] > 0 && b.at_warp_barrier[warp] == b.warp_live[warp])
    {
        b.at_warp_barrier[warp] = 0;
        release(State::AtWarpBarrier, warp);
    }
}

void thread_main()
{
    Block& b = *current_block;
    try
    {
        b.kernel->invoke(b.params);
    }
    catch (const Trap& t)
    {
        if (b.failure.empty()) b.failure = t.why;
    }
    Thread& t = *current_thread;
    t.state = State::Done;
    b.live--;
    b.warp_live[t.linear / 32]--;
    recheck_barriers(t.linear / 32);
#if TEMPER_EMU_FAST_FIBERS
    yield_to_scheduler(); // never resumed: the fiber is done
    __builtin_unreachable();
#endif
    // (ucontext) uc_link returns to the scheduler
}

// Makes thread t start at thread_main on its own stack when the scheduler first switches to it.
void start_fiber(Thread& t, Block& b)
{
#if TEMPER_EMU_FAST_FIBERS
    (void)b;
    // From the 16-byte aligned top: a zero return address (thread_main starts as if called), thread_main
    // (fiber_switch's ret goes there), six zeroed callee-saved registers, then MXCSR and the x87 control word.
    auto top = reinterpret_cast<uintptr_t>(t.stack + StackBytes) & ~uintptr_t(15);
    auto* slot = reinterpret_cast<uint64_t*>(top);
    *--slot = 0;
    *--slot = reinterpret_cast<uint64_t>(&thread_main);
    for (int i = 0; i < 6; i++) *--slot = 0;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    *--slot = (uint64_t)mxcsr | ((uint64_t)fpucw << 32);
    t.sp = slot;
#else
    getcontext(&t.context);
    t.context.uc_stack.ss_sp = t.stack;
    t.context.uc_stack.ss_size = StackBytes;
    t.context.uc_link = &b.scheduler;
    makecontext(&t.context, thread_main, 0);
#endif
}

void run_fiber(Thread& t, Block& b)
{
#if TEMPER_EMU_FAST_FIBERS
    temper_emu_fiber_switch(&b.scheduler, t.sp);
#else
    swapcontext(&b.scheduler, &t.context);
#endif
}

std::string describe(const Block& b)
{
    int block = 0, warp = 0, async = 0;
    for (auto& t : b.threads)
    {
        block += t.state == State::AtBlockBarrier;
        warp += t.state == State::AtWarpBarrier;
        async += t.state == State::AtAsyncWait;
    }
    return "barrier deadlock in block (" + std::to_string(b.index.x) + "," + std::to_string(b.index.y) + "," + std::to_string(b.index.z)
        + "): " + std::to_string(block) + " threads wait at __syncthreads, " + std::to_string(warp) + " at a warp barrier, "
        + (async > 0 ? std::to_string(async) + " at an mbarrier (no copy in flight can complete its phase), " : "")
        + std::to_string(b.threads.size() - block - warp - async - (b.threads.size() - b.live)) + " running, " + std::to_string(b.threads.size() - b.live) + " returned";
}

std::mutex launches; // one kernel at a time, as one emulated GPU with one stream would look to a test
std::string schedule_override; // temper_emu_set_schedule's value (under `launches`); empty: the environment's

// The run order of TEMPER_EMU_SCHEDULE (or temper_emu_set_schedule's), read at each launch.
struct Schedule
{
    enum class Kind { Forward, Reverse, Shuffle } kind = Kind::Forward;
    uint64_t state = 0;

    static Schedule from_environment()
    {
        Schedule s;
        const char* v = schedule_override.empty() ? std::getenv("TEMPER_EMU_SCHEDULE") : schedule_override.c_str();
        if (v == nullptr || *v == 0 || std::strcmp(v, "forward") == 0) return s;
        if (std::strcmp(v, "reverse") == 0) s.kind = Kind::Reverse;
        else if (std::strncmp(v, "shuffle:", 8) == 0)
        {
            s.kind = Kind::Shuffle;
            s.state = std::strtoull(v + 8, nullptr, 10) * 0x9E3779B97F4A7C15ull + 1;
        }
        else throw std::invalid_argument(std::string("TEMPER_EMU_SCHEDULE=") + v + ": expected forward, reverse or shuffle:SEED");
        return s;
    }

    // Fills order with 0..n-1 in this schedule's order.
    void arrange(std::vector<int>& order)
    {
        for (size_t i = 0; i < order.size(); i++) order[i] = (int)i;
        if (kind == Kind::Reverse) std::reverse(order.begin(), order.end());
        if (kind != Kind::Shuffle) return;
        for (size_t i = order.size(); i > 1; i--)
        {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17; // xorshift64
            std::swap(order[i - 1], order[state % i]);
        }
    }
};

// Fiber stacks, kept from launch to launch (under `launches`) and never cleared: allocating and zeroing a
// block's worth on every launch cost more than most emulated kernels.
std::vector<std::unique_ptr<unsigned char[]>> stack_pool;

unsigned char* pooled_stack(size_t i)
{
    while (stack_pool.size() <= i) stack_pool.emplace_back(new unsigned char[StackBytes]);
    return stack_pool[i].get();
}
} // namespace

void sync_block()
{
    Block& b = *current_block;
    if (++b.at_block_barrier == b.live)
    {
        b.at_block_barrier = 0;
        release(State::AtBlockBarrier, -1);
        return;
    }
    wait(State::AtBlockBarrier);
}

void sync_warp()
{
    Block& b = *current_block;
    int w = current_thread->linear / 32;
    if (++b.at_warp_barrier[w] == b.warp_live[w])
    {
        b.at_warp_barrier[w] = 0;
        release(State::AtWarpBarrier, w);
        return;
    }
    wait(State::AtWarpBarrier);
}

void wait_async() { wait(State::AtAsyncWait); }

void wake_async_waiters() { release(State::AtAsyncWait, -1); }

void trap(const char* why) { throw Trap{why}; }

// Sets the run order for later launches (EmulatorChecks: .NET's Environment.SetEnvironmentVariable does
// not reach getenv); null or "" goes back to TEMPER_EMU_SCHEDULE.
extern "C" __attribute__((visibility("default"))) void temper_emu_set_schedule(const char* schedule)
{
    std::lock_guard<std::mutex> lock(launches);
    schedule_override = schedule == nullptr ? "" : schedule;
}

std::string launch(const Kernel& k, uint3 grid, uint3 dim, size_t dynamic_shared, void** params, bool programmatic)
{
    std::lock_guard<std::mutex> lock(launches);
    size_t n = (size_t)dim.x * dim.y * dim.z;
    if (n == 0 || n > 1024) return "a block of " + std::to_string(n) + " threads (1 to 1024)";
    Block b;
    b.dim = dim;
    b.grid = grid;
    b.kernel = &k;
    b.params = params;
    b.threads.resize(n);
    b.exchange.resize((n + 31) / 32 * 32 * 64);
    b.shared.resize(dynamic_shared);
    for (size_t i = 0; i < n; i++) b.threads[i].stack = pooled_stack(i);
    Schedule schedule;
    try
    {
        schedule = Schedule::from_environment();
    }
    catch (const std::invalid_argument& e)
    {
        return e.what();
    }
    size_t grid_blocks = (size_t)grid.x * grid.y * grid.z;
    if (grid_blocks > (1u << 26)) return "a grid of " + std::to_string(grid_blocks) + " blocks (the emulator runs at most 2^26)";
    std::vector<int> blocks(grid_blocks), order(n);
    schedule.arrange(blocks);
    current_block = &b;
    for (int linear_block : blocks)
    {
        b.index = {linear_block % grid.x, linear_block / grid.x % grid.y, (unsigned)(linear_block / ((size_t)grid.x * grid.y))};
        // Shared memory holds garbage at a block's start on the GPU: NaN bytes here.
        std::fill(b.shared.begin(), b.shared.end(), (unsigned char)0xFF);
        if (__start_temper_emu_shared && __stop_temper_emu_shared)
            std::memset(__start_temper_emu_shared, 0xFF, (size_t)(__stop_temper_emu_shared - __start_temper_emu_shared));
        b.live = (int)n;
        b.async.reset();
        b.at_block_barrier = 0;
        b.warp_live.assign((n + 31) / 32, 0);
        b.at_warp_barrier.assign((n + 31) / 32, 0);
        for (size_t i = 0; i < n; i++)
        {
            Thread& t = b.threads[i];
            t.linear = (int)i;
            t.index = {(unsigned)(i % dim.x), (unsigned)(i / dim.x % dim.y), (unsigned)(i / ((size_t)dim.x * dim.y))};
            t.state = State::Runnable;
            t.async_state.reset();
            t.copy_state.reset();
            t.waited_prior_grids = false;
            b.warp_live[i / 32]++;
            start_fiber(t, b);
        }
        while (b.live > 0)
        {
            bool ran = false;
            schedule.arrange(order);
            for (int i : order)
            {
                Thread& t = b.threads[i];
                if (t.state != State::Runnable) continue;
                current_thread = &t;
                run_fiber(t, b);
                ran = true;
            }
            if (!ran && b.async)
            {
                // Every thread waits: the async unit (TMA copies in flight) may still complete a phase.
                current_thread = nullptr;
                try
                {
                    ran = b.async->progress();
                }
                catch (const Trap& t)
                {
                    current_block = nullptr;
                    return t.why;
                }
            }
            if (!ran)
            {
                current_block = nullptr;
                return b.failure.empty() ? describe(b) : b.failure; // a trap first, as it may strand the others
            }
        }
        if (b.failure.empty() && b.async) b.failure = b.async->at_block_end();
        if (b.failure.empty() && programmatic)
            for (const Thread& t : b.threads)
                if (!t.waited_prior_grids)
                {
                    b.failure = "thread (" + std::to_string(t.index.x) + "," + std::to_string(t.index.y) + "," + std::to_string(t.index.z) + ") of block ("
                        + std::to_string(b.index.x) + "," + std::to_string(b.index.y) + "," + std::to_string(b.index.z)
                        + ") returned without griddepcontrol.wait (grid_dependency.cuh), though launched to overlap the kernel before it";
                    break;
                }
        if (!b.failure.empty())
        {
            current_block = nullptr;
            return b.failure;
        }
    }
    current_block = nullptr;
    current_thread = nullptr;
    return "";
}
} // namespace emu
