// graph.cpp: the CUDA emulator's streams, stream capture and graphs (see graph.h). The capture rules
// follow the CUDA driver API reference and the programming guide's "prohibited and unhandled operations":
//  - cuStreamBeginCapture_v2 refuses the legacy stream; a capture ends on the stream it began on, from the
//    same thread unless its mode is relaxed (else CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD).
//  - Synchronizing a capturing stream, or the context while any stream captures, returns
//    CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture; the legacy stream used while a
//    blocking stream captures returns CUDA_ERROR_STREAM_CAPTURE_IMPLICIT and invalidates it.
//  - Potentially unsafe calls (cuMemAlloc and the like, not stream-ordered, so a graph could not replay them)
//    are prohibited to a thread whose own capture is not relaxed, and to every thread while some thread
//    captures in global mode (cuThreadExchangeStreamCaptureMode's rules, every thread in the default mode).
//  - Stream-ordered work on an invalidated capture returns CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, and
//    cuStreamEndCapture then returns it too with a NULL graph, leaving the stream usable again.
// A graph is its nodes in capture order (one stream, so a chain); an instantiated graph is a copy of them.
#include "graph.h"
#include "status.h"
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace {
using emu::Work;
enum Mode : int { Global = 0, ThreadLocal = 1, Relaxed = 2 };
enum CaptureStatus : int { None = 0, Active = 1, Invalidated = 2 };
constexpr unsigned NonBlocking = 1; // CU_STREAM_NON_BLOCKING

struct Capture
{
    int mode;
    std::thread::id thread;
    bool invalidated = false;
    std::vector<Work> nodes;
};

struct Stream
{
    unsigned flags;
    std::unique_ptr<Capture> capture; // null when the stream is not capturing
};

struct Graph { std::vector<Work> nodes; };
struct GraphExec { std::shared_ptr<const std::vector<Work>> nodes; };

std::mutex lock; // guards streams and their captures; never held while work runs
std::set<Stream*> streams;

// CU_STREAM_LEGACY is 0x1; 0 means the legacy stream too (CU_STREAM_PER_THREAD, 0x2, is not modelled).
bool is_legacy(void* handle) { return handle == nullptr || handle == (void*)0x1; }

Stream* find(void* handle)
{
    auto it = streams.find((Stream*)handle);
    return it == streams.end() ? nullptr : *it;
}

// Invalidates the captures of blocking streams (the legacy stream's implicit dependencies); true if any.
bool invalidate_blocking_captures()
{
    bool any = false;
    for (auto* s : streams)
        if (s->capture && !(s->flags & NonBlocking)) s->capture->invalidated = any = true;
    return any;
}

// Under `lock`: the refusal for stream-ordered work on `handle`, and its live capture if it has one.
int check(void* handle, Capture** capture)
{
    *capture = nullptr;
    if (is_legacy(handle)) return invalidate_blocking_captures() ? emu::StreamCaptureImplicit : emu::Success;
    Stream* s = find(handle);
    if (!s || !s->capture) return emu::Success;
    if (s->capture->invalidated) return emu::StreamCaptureInvalidated;
    *capture = s->capture.get();
    return emu::Success;
}
} // namespace

namespace emu {
int enqueue(void* stream, Work work)
{
    {
        std::lock_guard<std::mutex> guard(lock);
        Capture* capture;
        if (int refused = check(stream, &capture)) return refused;
        if (capture)
        {
            capture->nodes.push_back(std::move(work));
            return Success;
        }
    }
    return work();
}

int capture_state(void* stream, bool* capturing)
{
    std::lock_guard<std::mutex> guard(lock);
    Capture* capture;
    int refused = check(stream, &capture);
    *capturing = capture != nullptr;
    return refused;
}

int unsafe_call_allowed()
{
    std::lock_guard<std::mutex> guard(lock);
    bool prohibited = false;
    for (auto* s : streams)
    {
        Capture* c = s->capture.get();
        if (!c || c->mode == Relaxed) continue;
        if (c->thread == std::this_thread::get_id() || c->mode == Global) c->invalidated = prohibited = true;
    }
    return prohibited ? StreamCaptureUnsupported : Success;
}

int context_synchronize_allowed()
{
    std::lock_guard<std::mutex> guard(lock);
    bool any = false;
    for (auto* s : streams)
        if (s->capture) s->capture->invalidated = any = true;
    return any ? StreamCaptureUnsupported : Success;
}
} // namespace emu

extern "C" {
int cuStreamCreate(void** stream, unsigned flags)
{
    if (flags & ~NonBlocking) return emu::InvalidValue;
    auto* s = new Stream{flags, nullptr};
    std::lock_guard<std::mutex> guard(lock);
    streams.insert(s);
    *stream = s;
    return emu::Success;
}

int cuStreamDestroy_v2(void* stream)
{
    std::lock_guard<std::mutex> guard(lock);
    Stream* s = find(stream);
    if (!s) return emu::InvalidHandle;
    streams.erase(s);
    delete s;
    return emu::Success;
}

int cuStreamSynchronize(void* stream)
{
    std::lock_guard<std::mutex> guard(lock);
    if (is_legacy(stream)) return invalidate_blocking_captures() ? emu::StreamCaptureImplicit : emu::Success;
    Stream* s = find(stream);
    if (!s || !s->capture) return emu::Success; // the work already finished
    s->capture->invalidated = true;
    return emu::StreamCaptureUnsupported;
}

int cuStreamBeginCapture_v2(void* stream, int mode)
{
    if (mode < Global || mode > Relaxed) return emu::InvalidValue;
    if (is_legacy(stream)) return emu::StreamCaptureUnsupported;
    std::lock_guard<std::mutex> guard(lock);
    Stream* s = find(stream);
    if (!s) return stream == (void*)0x2 ? emu::NotSupported : emu::InvalidHandle;
    if (s->capture) return emu::IllegalState;
    s->capture = std::make_unique<Capture>(Capture{mode, std::this_thread::get_id()});
    return emu::Success;
}

int cuStreamEndCapture(void* stream, void** graph)
{
    std::lock_guard<std::mutex> guard(lock);
    Stream* s = find(stream);
    if (!s || !s->capture) return emu::IllegalState;
    if (s->capture->mode != Relaxed && s->capture->thread != std::this_thread::get_id()) return emu::StreamCaptureWrongThread;
    auto capture = std::move(s->capture);
    *graph = capture->invalidated ? nullptr : new Graph{std::move(capture->nodes)};
    return capture->invalidated ? emu::StreamCaptureInvalidated : emu::Success;
}

int cuStreamIsCapturing(void* stream, int* status)
{
    std::lock_guard<std::mutex> guard(lock);
    if (is_legacy(stream))
    {
        for (auto* s : streams)
            if (s->capture && !(s->flags & NonBlocking)) return emu::StreamCaptureImplicit;
        *status = None;
        return emu::Success;
    }
    Stream* s = find(stream);
    if (!s) return emu::InvalidHandle;
    *status = !s->capture ? None : s->capture->invalidated ? Invalidated : Active;
    return emu::Success;
}

int cuGraphGetNodes(void* graph, void** nodes, size_t* count)
{
    auto& g = *(Graph*)graph;
    if (nodes)
        for (size_t i = 0; i < *count; i++) nodes[i] = i < g.nodes.size() ? &g.nodes[i] : nullptr;
    *count = nodes ? std::min(*count, g.nodes.size()) : g.nodes.size();
    return emu::Success;
}

// Flags: CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH (1) and _USE_NODE_PRIORITY (8) change nothing
// for a graph without allocations or priorities; upload (2) and device launch (4) are not modelled.
int cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long flags)
{
    if (!graph || (flags & ~9ull)) return emu::InvalidValue;
    *exec = new GraphExec{std::make_shared<const std::vector<Work>>(((Graph*)graph)->nodes)};
    return emu::Success;
}

// Replays the nodes in order on `stream`; the first failure stops the replay and is returned. Launched into
// a capturing stream, the whole graph becomes one node of that capture (the real driver's child graph).
int cuGraphLaunch(void* exec, void* stream)
{
    if (!exec) return emu::InvalidValue;
    auto nodes = ((GraphExec*)exec)->nodes;
    return emu::enqueue(stream, [nodes] {
        for (auto& node : *nodes)
            if (int status = node()) return status;
        return (int)emu::Success;
    });
}

int cuGraphExecDestroy(void* exec) { delete (GraphExec*)exec; return emu::Success; }
int cuGraphDestroy(void* graph) { delete (Graph*)graph; return emu::Success; }
}
