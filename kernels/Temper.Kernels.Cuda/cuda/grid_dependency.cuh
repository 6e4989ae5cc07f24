// grid_dependency.cuh: programmatic dependent launch (compute capability 9.0) for the decode step's kernels
// (CudaDecodeGraph.DependentLaunch). A kernel launched with CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
// may start while the kernel before it in the stream still runs, once every block of that one has called
// allow_dependent_grids() (or exited). Until its own wait_for_prior_grids() returns it may only read what no
// earlier kernel of the stream writes (weights, its arguments) and write its own shared memory; the wait returns
// once the kernels before it have completed and their writes are visible. Every thread waits before it returns,
// so a grid completes only after the one before it: completion stays ordered down the whole chain.
// Built for compute_90 (Ptx/NAME.sm90.ptx: build-ptx.sh's `ptx-also: compute_90` line) these are griddepcontrol.wait
// and griddepcontrol.launch_dependents; for compute_80 nothing (a plain launch keeps stream order). On the CUDA
// emulator the wait is recorded, and a launch that asked to overlap fails when a thread returned without it.
#pragma once

__device__ __forceinline__ void wait_for_prior_grids()
{
#if defined(TEMPER_CUDA_EMU)
    emu::wait_prior_grids();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependent_grids()
{
#if !defined(TEMPER_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
