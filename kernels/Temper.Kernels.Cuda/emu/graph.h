// graph.h: streams, stream capture and CUDA graphs of the CUDA emulator (graph.cpp), for driver.cpp.
// Streams stay synchronous: work given to a stream runs in the call, unless the stream captures; then
// the work is recorded as the capture's next node and runs only when a graph instantiated from the
// capture is launched (cuGraphLaunch replays the nodes in capture order). A Work closure owns copies
// of everything it reads from the caller's memory at the call (kernel argument values, as the real
// driver copies kernelParams at capture); device memory it reads is read when it runs.
#pragma once
#include <functional>

namespace emu {
// One stream-ordered operation (a launch, a copy, a memset): does it, returns its CUresult.
using Work = std::function<int()>;

// Runs `work` now, or records it when `stream` captures. Returns the work's CUresult, or the capture's
// refusal: CUDA_ERROR_STREAM_CAPTURE_INVALIDATED on an invalidated capture, CUDA_ERROR_STREAM_CAPTURE_IMPLICIT
// for the legacy stream while a blocking stream captures (which invalidates that capture).
int enqueue(void* stream, Work work);

// The refusal enqueue would give (or CUDA_SUCCESS), and whether `stream` captures, for calls that do not
// make a node (cuEventRecord).
int capture_state(void* stream, bool* capturing);

// For a potentially unsafe call (cuMemAlloc, cuMemFree, cuMemAllocHost, cuMemFreeHost): when this thread
// is prohibited from it (its own capture is not relaxed, or another thread captures in global mode),
// invalidates those captures and returns CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED; else CUDA_SUCCESS.
int unsafe_call_allowed();

// cuCtxSynchronize's rule: while any stream of the context captures, it invalidates every capture and
// returns CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED.
int context_synchronize_allowed();
} // namespace emu
