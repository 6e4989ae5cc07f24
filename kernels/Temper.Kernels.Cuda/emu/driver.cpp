// driver.cpp: the CUDA driver API subset Temper's bindings call (bindings/Temper.Cuda/Driver/CudaImports.cs),
// exported from libtemper_cuda_emu.so so the bindings can load it in place of libcuda
// (TEMPER_CUDA_DRIVER=path). One emulated sm_80 device, "Temper CUDA emulator (CPU)"; device memory is
// host memory, each allocation placed against a no-access guard page so a kernel that runs past the end of
// a buffer faults instead of reading a neighbour; streams and events are synchronous (work finishes in
// the call) unless they capture: streams, capture and graphs are graph.cpp's. Modules take the .entry names
// out of the PTX text and bind them to the kernels compiled into this library from the same .cu (runtime.h).
// It does not JIT PTX: hand-written PTX without a .cu has no kernels here. cuTensorMapEncodeTiled checks its
// arguments as the CUDA 12 documentation states and writes the emulator's own description of the map
// (include/tensor_map_emu.h) for tma_ops.cuh's emulated copies; ranks 1 and 2, no interleave.
#include "include/cuda_emu.h"
#include "include/tensor_map_emu.h"
#include "graph.h"
#include "runtime.h"
#include "status.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <sys/mman.h>
#include <unistd.h>

namespace {
using namespace emu; // the Status values

// opt_in_limit: the most dynamic shared memory a kernel may opt in to: the emulated A100's 163 KB, or
// 227 KB for a module whose PTX targets sm_90a (only an H100 runs it).
struct Module { std::set<std::string> entries; int opt_in_limit; };
struct Function { std::string name; emu::Kernel* kernel; int max_dynamic_shared = 48 * 1024; int opt_in_limit = 163 * 1024; };
// `captured`: last recorded into a capturing stream, so it stands for no point in time (CUDA_ERROR_CAPTURED_EVENT).
struct Event { std::chrono::steady_clock::time_point at; bool recorded = false, captured = false; };
struct Allocation { void* base; size_t mapped; size_t bytes; };

// A launch's argument values, copied at the call: the kernelParams pointers (into the caller's stack)
// are dead by the time a captured launch replays. Shared, never copied, so `pointers` stay valid.
struct ArgumentCopy
{
    std::vector<std::max_align_t> storage;
    std::vector<void*> pointers;

    ArgumentCopy(const std::vector<size_t>& bytes, void** params)
    {
        size_t units = 0;
        for (size_t b : bytes) units += (b + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
        storage.resize(units);
        size_t at = 0;
        for (size_t i = 0; i < bytes.size(); i++)
        {
            pointers.push_back(&storage[at]);
            std::memcpy(&storage[at], params[i], bytes[i]);
            at += (bytes[i] + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
        }
    }
    ArgumentCopy(const ArgumentCopy&) = delete;
    ArgumentCopy& operator=(const ArgumentCopy&) = delete;
};

bool initialised = false;
int context_tag = 1;
void* const primary_context = &context_tag;
thread_local void* current_context = nullptr;
std::mutex memory_lock;
std::map<uintptr_t, Allocation> allocations;
size_t allocated = 0;
constexpr size_t TotalMemory = 16ull << 30;
std::string last_launch_failure;

size_t page() { static size_t p = (size_t)sysconf(_SC_PAGESIZE); return p; }

void write_log(unsigned n, const int* options, void** values, int buffer_option, int size_option, const std::string& text)
{
    char* buffer = nullptr;
    size_t size = 0;
    for (unsigned i = 0; i < n; i++)
    {
        if (options[i] == buffer_option) buffer = (char*)values[i];
        if (options[i] == size_option) size = (size_t)(uintptr_t)values[i];
    }
    if (buffer && size > 0) std::snprintf(buffer, size, "%s", text.c_str());
}
} // namespace

extern "C" {
int cuGetErrorName(int error, const char** name)
{
    auto* t = find_status(error);
    *name = t ? t->name : nullptr;
    return t ? Success : InvalidValue;
}

int cuGetErrorString(int error, const char** text)
{
    if (error == LaunchFailed && !last_launch_failure.empty()) { *text = last_launch_failure.c_str(); return Success; }
    auto* t = find_status(error);
    *text = t ? t->description : nullptr;
    return t ? Success : InvalidValue;
}

int cuInit(unsigned flags) { if (flags != 0) return InvalidValue; initialised = true; return Success; }
int cuDriverGetVersion(int* v) { *v = 12000; return Success; }
int cuDeviceGetCount(int* n) { if (!initialised) return NotInitialized; *n = 1; return Success; }
int cuDeviceGet(int* d, int ordinal) { if (!initialised) return NotInitialized; if (ordinal != 0) return InvalidDevice; *d = 0; return Success; }
int cuDeviceGetName(char* name, int length, int d)
{
    if (d != 0) return InvalidDevice;
    std::snprintf(name, (size_t)length, "%s", "Temper CUDA emulator (CPU)");
    return Success;
}
int cuDeviceGetAttribute(int* v, int attribute, int d)
{
    if (d != 0) return InvalidDevice;
    static const std::map<int, int> values = {
        {1, 1024}, {2, 1024}, {5, 2147483647}, {8, 48 * 1024}, {9, 64 * 1024}, {10, 32}, {12, 65536}, {13, 1000000},
        {16, 1}, {36, 1000000}, {37, 64}, {38, 1 << 20}, {39, 2048}, {41, 1}, {75, 8}, {76, 0}, {81, 164 * 1024},
        {82, 65536}, {97, 163 * 1024}};
    auto it = values.find(attribute);
    if (it == values.end()) return InvalidValue;
    *v = it->second;
    return Success;
}
int cuDeviceTotalMem_v2(size_t* bytes, int d) { if (d != 0) return InvalidDevice; *bytes = TotalMemory; return Success; }

int cuDevicePrimaryCtxRetain(void** context, int d) { if (d != 0) return InvalidDevice; *context = primary_context; return Success; }
int cuDevicePrimaryCtxRelease_v2(int d) { return d == 0 ? Success : InvalidDevice; }
int cuCtxSetCurrent(void* context) { current_context = context; return Success; }
int cuCtxGetCurrent(void** context) { *context = current_context; return Success; }
int cuCtxPushCurrent_v2(void* context) { current_context = context; return Success; }
int cuCtxPopCurrent_v2(void** context) { if (context) *context = current_context; current_context = nullptr; return Success; }
int cuCtxSynchronize() { return context_synchronize_allowed(); } // the work already finished
int cuMemGetInfo_v2(size_t* free, size_t* total)
{
    std::lock_guard<std::mutex> lock(memory_lock);
    *total = TotalMemory;
    *free = TotalMemory - std::min(allocated, TotalMemory - 1);
    return Success;
}

int cuModuleLoadDataEx(void** module, const void* image, unsigned n, int* options, void** values)
{
    std::string ptx((const char*)image);
    std::set<std::string> entries;
    static const std::regex entry(R"(\.entry\s+([A-Za-z_$][A-Za-z0-9_$]*))");
    for (auto it = std::sregex_iterator(ptx.begin(), ptx.end(), entry); it != std::sregex_iterator(); ++it) entries.insert((*it)[1]);
    if (ptx.find(".version") == std::string::npos || entries.empty())
    {
        write_log(n, options, values, 5, 6, "emulator: not a PTX module (no .version or no .entry)");
        return InvalidPtx;
    }
    for (auto& e : entries)
        if (!emu::registry().count(e))
        {
            write_log(n, options, values, 5, 6, "emulator: kernel " + e + " has no emulated twin (only kernels compiled from cuda/*.cu run here)");
            return InvalidPtx;
        }
    write_log(n, options, values, 3, 4, "emulated module: " + std::to_string(entries.size()) + " kernel(s)");
    *module = new Module{entries, ptx.find(".target sm_90a") != std::string::npos ? 227 * 1024 : 163 * 1024};
    return Success;
}
int cuModuleUnload(void* module) { delete (Module*)module; return Success; }
int cuModuleGetFunction(void** function, void* module, const char* name)
{
    auto* m = (Module*)module;
    if (!m->entries.count(name)) return NotFound;
    static std::map<std::string, Function*> functions; // one handle per kernel, as attributes belong to it
    static std::mutex lock;
    std::lock_guard<std::mutex> guard(lock);
    auto& f = functions[name];
    if (!f) f = new Function{name, &emu::registry()[name]};
    f->opt_in_limit = m->opt_in_limit;
    *function = f;
    return Success;
}
int cuFuncGetAttribute(int* v, int attribute, void* function)
{
    auto* f = (Function*)function;
    switch (attribute)
    {
    case 0: *v = 1024; return Success;
    case 8: *v = f->max_dynamic_shared; return Success;
    default: return InvalidValue; // registers, PTX version and the like belong to a real JIT
    }
}
int cuFuncSetAttribute(void* function, int attribute, int value)
{
    if (attribute != 8 || value < 0 || value > ((Function*)function)->opt_in_limit) return InvalidValue;
    ((Function*)function)->max_dynamic_shared = value;
    return Success;
}
namespace {
// cuLaunchKernel, and cuLaunchKernelEx with `programmatic` (the launch may overlap the kernel before it: runtime.cpp
// then requires every thread to have waited for it).
int launch_kernel(void* function, uint3 grid, uint3 block, unsigned shared, void* stream, void** params, void** extra, bool programmatic)
{
    auto* f = (Function*)function;
    if (extra != nullptr || (shared > 48 * 1024 && (int)shared > f->max_dynamic_shared)) return InvalidValue;
    if ((size_t)block.x * block.y * block.z > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) return InvalidValue;
    auto arguments = std::make_shared<const ArgumentCopy>(f->kernel->parameter_bytes, params);
    return enqueue(stream, [=] {
        std::string failure = emu::launch(*f->kernel, grid, block, shared, const_cast<void**>(arguments->pointers.data()), programmatic);
        if (failure.empty()) return (int)Success;
        last_launch_failure = "emulated kernel " + f->name + ": " + failure;
        std::fprintf(stderr, "%s\n", last_launch_failure.c_str());
        return (int)LaunchFailed;
    });
}

// cuda.h's CUlaunchAttribute (an id, then a 64-byte value union at offset 8) and CUlaunchConfig.
struct LaunchAttribute { int id; int pad; union { char bytes[64]; int programmatic_stream_serialization; } value; };
struct LaunchConfig
{
    unsigned grid_x, grid_y, grid_z, block_x, block_y, block_z, shared;
    void* stream;
    const LaunchAttribute* attributes;
    unsigned attribute_count;
};
static_assert(sizeof(LaunchAttribute) == 72 && sizeof(LaunchConfig) == 56, "cuda.h's layouts");
constexpr int AttributeIgnore = 0, AttributeProgrammaticStreamSerialization = 6;
} // namespace

int cuLaunchKernel(void* function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
    unsigned shared, void* stream, void** params, void** extra)
{
    return launch_kernel(function, {gx, gy, gz}, {bx, by, bz}, shared, stream, params, extra, false);
}

// Takes the programmatic stream serialization attribute (6) and ignored entries (0); other attributes are not modelled.
int cuLaunchKernelEx(const LaunchConfig* config, void* function, void** params, void** extra)
{
    if (config == nullptr || (config->attribute_count > 0 && config->attributes == nullptr)) return InvalidValue;
    bool programmatic = false;
    for (unsigned i = 0; i < config->attribute_count; i++)
    {
        const LaunchAttribute& a = config->attributes[i];
        if (a.id == AttributeProgrammaticStreamSerialization) programmatic = a.value.programmatic_stream_serialization != 0;
        else if (a.id != AttributeIgnore) return NotSupported;
    }
    return launch_kernel(function, {config->grid_x, config->grid_y, config->grid_z}, {config->block_x, config->block_y, config->block_z},
        config->shared, config->stream, params, extra, programmatic);
}

int cuMemAlloc_v2(unsigned long long* pointer, size_t bytes)
{
    if (int refused = unsafe_call_allowed()) return refused;
    if (bytes == 0) return InvalidValue;
    size_t data = (bytes + 255) / 256 * 256, mapped = (data + page() - 1) / page() * page() + page();
    void* base = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return OutOfMemory;
    mprotect((char*)base + mapped - page(), page(), PROT_NONE); // the guard page right after the data
    uintptr_t p = (uintptr_t)base + mapped - page() - data;
    std::lock_guard<std::mutex> lock(memory_lock);
    allocations[p] = {base, mapped, bytes};
    allocated += bytes;
    *pointer = p;
    return Success;
}
int cuMemFree_v2(unsigned long long pointer)
{
    if (int refused = unsafe_call_allowed()) return refused;
    std::lock_guard<std::mutex> lock(memory_lock);
    auto it = allocations.find((uintptr_t)pointer);
    if (it == allocations.end()) return InvalidValue;
    munmap(it->second.base, it->second.mapped);
    allocated -= it->second.bytes;
    allocations.erase(it);
    return Success;
}
int cuMemAllocHost_v2(void** pointer, size_t bytes)
{
    if (int refused = unsafe_call_allowed()) return refused;
    *pointer = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096); return *pointer ? Success : OutOfMemory;
}
int cuMemFreeHost(void* pointer)
{
    if (int refused = unsafe_call_allowed()) return refused;
    std::free(pointer);
    return Success;
}
// Copies and memsets are nodes when captured; host memory is read (or written) when the node runs, as on the GPU.
int cuMemcpyHtoDAsync_v2(unsigned long long d, const void* s, size_t n, void* stream)
{
    return enqueue(stream, [=] { std::memcpy((void*)d, s, n); return (int)Success; });
}
int cuMemcpyDtoHAsync_v2(void* d, unsigned long long s, size_t n, void* stream)
{
    return enqueue(stream, [=] { std::memcpy(d, (const void*)s, n); return (int)Success; });
}
int cuMemcpyDtoDAsync_v2(unsigned long long d, unsigned long long s, size_t n, void* stream)
{
    return enqueue(stream, [=] { std::memmove((void*)d, (const void*)s, n); return (int)Success; });
}
int cuMemsetD8Async(unsigned long long d, unsigned char v, size_t n, void* stream)
{
    return enqueue(stream, [=] { std::memset((void*)d, v, n); return (int)Success; });
}

int cuEventCreate(void** e, unsigned) { *e = new Event(); return Success; }
int cuEventDestroy_v2(void* e) { delete (Event*)e; return Success; }
int cuEventRecord(void* e, void* stream)
{
    auto* event = (Event*)e;
    bool capturing;
    if (int refused = capture_state(stream, &capturing)) return refused;
    event->captured = capturing; // a captured record makes no node: the event marks the capture, not a time
    if (!capturing) { event->at = std::chrono::steady_clock::now(); event->recorded = true; }
    return Success;
}
// CU_EVENT_RECORD_EXTERNAL (1) into a capturing stream makes a node that records the time at replay (the
// real driver's external event record node); otherwise as cuEventRecord.
int cuEventRecordWithFlags(void* e, void* stream, unsigned flags)
{
    bool capturing;
    if (int refused = capture_state(stream, &capturing)) return refused;
    if (!(flags & 1u) || !capturing) return cuEventRecord(e, stream);
    auto* event = (Event*)e;
    event->captured = false;
    return enqueue(stream, [event] { event->at = std::chrono::steady_clock::now(); event->recorded = true; return (int)Success; });
}
int cuEventSynchronize(void* e) { return ((Event*)e)->captured ? CapturedEvent : Success; }
int cuEventElapsedTime(float* ms, void* start, void* end)
{
    auto *a = (Event*)start, *b = (Event*)end;
    if (a->captured || b->captured) return CapturedEvent;
    if (!a->recorded || !b->recorded) return InvalidHandle;
    *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
    return Success;
}

// CUresult cuTensorMapEncodeTiled(CUtensorMap*, CUtensorMapDataType, cuuint32_t rank, void* globalAddress,
//   const cuuint64_t* globalDim, const cuuint64_t* globalStrides (rank - 1, bytes), const cuuint32_t* boxDim,
//   const cuuint32_t* elementStrides, interleave, swizzle, l2Promotion, oobFill).
int cuTensorMapEncodeTiled(void* map, int data_type, unsigned rank, void* address, const uint64_t* dims, const uint64_t* strides,
    const unsigned* box, const unsigned* element_strides, int interleave, int swizzle, int l2_promotion, int oob_fill)
{
    static const int element_bytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4}; // UINT8 .. TFLOAT32_FTZ
    if (map == nullptr || (uintptr_t)map % 64 != 0 || data_type < 0 || data_type > 12 || rank == 0 || rank > 5) return InvalidValue;
    if (interleave < 0 || interleave > 2 || swizzle < 0 || swizzle > 3 || l2_promotion < 0 || l2_promotion > 3 || oob_fill < 0 || oob_fill > 1) return InvalidValue;
    if (rank > 2 || interleave != 0) return NotSupported; // the emulator's copies: tiled, rank 1 or 2, not interleaved
    int bytes = element_bytes[data_type];
    bool is_float = data_type >= 6; // FLOAT16 and later: the float types
    if (oob_fill == 1 && !is_float) return InvalidValue;
    if (address == nullptr || (uintptr_t)address % 16 != 0) return InvalidValue;
    for (unsigned i = 0; i < rank; i++)
    {
        if (dims[i] == 0 || dims[i] > (1ull << 32) || box[i] == 0 || box[i] > 256 || element_strides[i] == 0 || element_strides[i] > 8) return InvalidValue;
        if (i > 0 && (strides[i - 1] % 16 != 0 || strides[i - 1] >= (1ull << 40) || strides[i - 1] < dims[0] * bytes)) return InvalidValue;
    }
    uint64_t inner = (uint64_t)box[0] * bytes;
    if (inner % 16 != 0) return InvalidValue;
    if (swizzle != 0 && inner > (16u << swizzle)) return InvalidValue; // the inner box fits the swizzle span (32, 64, 128 bytes)
    emu::TensorMapDescription d{};
    d.magic = emu::TensorMapDescription::Magic;
    d.rank = rank;
    d.element_bytes = (uint32_t)bytes;
    d.swizzle = (uint32_t)swizzle;
    d.nan_fill = (uint32_t)oob_fill;
    d.box[0] = box[0];
    d.box[1] = rank > 1 ? box[1] : 1;
    d.element_strides[0] = element_strides[0];
    d.element_strides[1] = rank > 1 ? element_strides[1] : 1;
    d.address = (uint64_t)(uintptr_t)address;
    d.dims[0] = dims[0];
    d.dims[1] = rank > 1 ? dims[1] : 1;
    d.row_stride = rank > 1 ? strides[0] : 0;
    std::memset(map, 0, 128);
    std::memcpy(map, &d, sizeof d);
    return Success;
}
}
