// The driver's small C enums that Temper uses: device attributes (CUdevice_attribute), function
// attributes (CUfunction_attribute), JIT options (CUjit_option) and stream capture's mode and status
// (CUstreamCaptureMode, CUstreamCaptureStatus). Values are cuda.h's; only the
// members Temper reads are listed, the rest can be added by value when needed.
namespace Temper.Cuda.Driver;

#pragma warning disable CA1028, CA1008 // C enums of int with cuda.h's values
public enum CudaDeviceAttribute
{
    MaxThreadsPerBlock = 1,
    MaxBlockDimX = 2,
    MaxGridDimX = 5,
    MaxSharedMemoryPerBlock = 8,
    TotalConstantMemory = 9,
    WarpSize = 10,
    MaxRegistersPerBlock = 12,
    ClockRate = 13,
    MultiprocessorCount = 16,
    MemoryClockRate = 36,
    GlobalMemoryBusWidth = 37,
    L2CacheSize = 38,
    MaxThreadsPerMultiprocessor = 39,
    UnifiedAddressing = 41,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    MaxSharedMemoryPerMultiprocessor = 81,
    MaxRegistersPerMultiprocessor = 82,
    MaxSharedMemoryPerBlockOptin = 97,
}

public enum CudaFunctionAttribute
{
    MaxThreadsPerBlock = 0,
    SharedSizeBytes = 1,
    ConstSizeBytes = 2,
    LocalSizeBytes = 3,
    NumRegs = 4,
    PtxVersion = 5,
    BinaryVersion = 6,
    CacheModeCa = 7,
    MaxDynamicSharedSizeBytes = 8,
    PreferredSharedMemoryCarveout = 9,
}

public enum CudaJitOption
{
    MaxRegisters = 0,
    ThreadsPerBlock = 1,
    WallTime = 2,
    InfoLogBuffer = 3,
    InfoLogBufferSizeBytes = 4,
    ErrorLogBuffer = 5,
    ErrorLogBufferSizeBytes = 6,
    OptimizationLevel = 7,
    TargetFromContext = 8,
    Target = 9,
    FallbackStrategy = 10,
    GenerateDebugInfo = 11,
    LogVerbose = 12,
    GenerateLineInfo = 13,
    CacheMode = 14,
}

/// <summary>Which calls a capture forbids (cuThreadExchangeStreamCaptureMode): Global, any thread's potentially
/// unsafe call (cuMemAlloc, cuMemFree ...) while it runs; ThreadLocal, only the capturing thread's; Relaxed, none.</summary>
public enum CudaStreamCaptureMode
{
    Global = 0,
    ThreadLocal = 1,
    Relaxed = 2,
}

public enum CudaStreamCaptureStatus
{
    None = 0,
    Active = 1,
    /// <summary>An illegal call ended its use: cuStreamEndCapture must still be called, and returns no graph.</summary>
    Invalidated = 2,
}
