// Checks of Temper.Cuda that need no GPU and no driver, run on every machine: CUresult names and messages,
// the missing-driver message (and that it is a CudaException, never a DllNotFoundException), the sizes the
// driver ABI needs, kernel-argument packing, and the embedded PTX (present, linted, the expected entries).
using Temper.Core;
using Temper.Cuda.Driver;

namespace Temper.Cuda.Tests;

public class OfflineChecks
{
    [Theory]
    [InlineData(CudaResult.Success, "CUDA_SUCCESS")]
    [InlineData(CudaResult.OutOfMemory, "CUDA_ERROR_OUT_OF_MEMORY")]
    [InlineData(CudaResult.InvalidPtx, "CUDA_ERROR_INVALID_PTX")]
    [InlineData(CudaResult.NoBinaryForGpu, "CUDA_ERROR_NO_BINARY_FOR_GPU")]
    [InlineData(CudaResult.IllegalAddress, "CUDA_ERROR_ILLEGAL_ADDRESS")]
    [InlineData(CudaResult.UnsupportedPtxVersion, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION")]
    [InlineData((CudaResult)12345, "CUDA_ERROR_12345")]
    public void ResultNamesAreTheCudaNames(CudaResult result, string expected) =>
        Assert.Equal(expected, CudaErrors.ManagedName(result));

    [Fact]
    public void ResultValuesMatchCudaH()
    {
        // A few anchors from cuda.h; GpuChecks compares every member's name with the driver's.
        Assert.Equal(2, (int)CudaResult.OutOfMemory);
        Assert.Equal(218, (int)CudaResult.InvalidPtx);
        Assert.Equal(700, (int)CudaResult.IllegalAddress);
        Assert.Equal(97, (int)CudaDeviceAttribute.MaxSharedMemoryPerBlockOptin);
        Assert.Equal(8, (int)CudaFunctionAttribute.MaxDynamicSharedSizeBytes);
        Assert.Equal(5, (int)CudaJitOption.ErrorLogBuffer);
    }

    static CudaResult FakeLaunch(int blocks) => blocks > 0 ? CudaResult.LaunchOutOfResources : CudaResult.Success;

    [Fact]
    public void FailedCallMessageNamesTheCallAndTheError()
    {
        CudaCheck.Ok(FakeLaunch(0));
        var e = Assert.Throws<CudaException>(() => CudaCheck.Ok(FakeLaunch(4)));
        Assert.StartsWith("FakeLaunch failed: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", e.Message);
        Assert.Equal(CudaResult.LaunchOutOfResources, e.Result);
        Assert.IsAssignableFrom<TemperException>(e);
        Assert.DoesNotContain('\n', e.Message);
        Assert.StartsWith("cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY",
            CudaCheck.Message(CudaResult.OutOfMemory, "CudaImports.cuMemAlloc_v2(&pointer, (nuint)bytes)"));
    }

    [Fact]
    public void MissingLibraryGivesOneLine()
    {
        var (handle, error) = CudaLibrary.TryLoad(["libtemper-no-such-driver.so.1", "libtemper-no-such-driver.so"]);
        Assert.Equal(0, handle);
        Assert.Equal("no CUDA driver: could not load libtemper-no-such-driver.so.1 or libtemper-no-such-driver.so "
            + "(install the NVIDIA driver, or use a CPU backend)", error);
        if (Gpu.DriverOverridden) Assert.Equal([Environment.GetEnvironmentVariable(CudaLibrary.OverrideVariable)!], CudaLibrary.CandidateNames);
        else Assert.Contains(OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1", CudaLibrary.CandidateNames);
    }

    [Fact]
    public void WithoutTheDriverEveryEntryThrowsCudaException()
    {
        Assert.SkipWhen(CudaLibrary.IsAvailable, "the CUDA driver is present here");
        var init = Assert.Throws<CudaException>(CudaDriver.Init);
        Assert.StartsWith("no CUDA driver: could not load", init.Message);
        // Without Init the import resolver is what meets the missing library: still a CudaException.
        var ex = Record.Exception(() => CudaDriver.DeviceCount());
        Assert.IsType<CudaException>(ex);
        Assert.StartsWith("no CUDA driver", ex.Message);
        Assert.Throws<CudaException>(() => CudaDevice.Open());
    }

    [Fact]
    public unsafe void AbiSizes()
    {
        Assert.Equal(4, sizeof(CudaResult));
        Assert.Equal(4, sizeof(CudaDeviceAttribute));
        Assert.Equal(4, sizeof(CudaFunctionAttribute));
        Assert.Equal(4, sizeof(CudaJitOption));
        Assert.Equal(8, sizeof(nint)); // CUcontext, CUstream, ...: the bindings assume a 64-bit host
        Assert.Equal(8, sizeof(ulong)); // CUdeviceptr
    }

    [Fact]
    public void KernelArgumentsAreEachEightByteAlignedCopies()
    {
        var args = new CudaKernelArguments().Add(0x1122334455667788UL).Add(7).Add(2.5f).Add((byte)9).Add(42UL);
        Assert.Equal(5, args.Count);
        Assert.Equal([0, 8, 16, 24, 32], Enumerable.Range(0, 5).Select(args.Offset));
        Assert.Equal(0x1122334455667788UL, BitConverter.ToUInt64(args.Storage, 0));
        Assert.Equal(7, BitConverter.ToInt32(args.Storage, 8));
        Assert.Equal(2.5f, BitConverter.ToSingle(args.Storage, 16));
        Assert.Equal(9, args.Storage[24]);
        Assert.Equal(42UL, BitConverter.ToUInt64(args.Storage, 32));
        for (int i = 0; i < 40; i++) args.Add(i); // grows past the first buffer
        Assert.Equal(39, BitConverter.ToInt32(args.Storage, args.Offset(44)));
    }

    [Theory]
    [InlineData("vector_add.ptx", "vector_add_f32", 4)]
    [InlineData("shared_reverse.ptx", "shared_reverse_f32", 3)]
    public void EmbeddedPtxIsPresentAndWellFormed(string file, string entry, int parameters)
    {
        Assert.Contains(file, EmbeddedPtx.Names);
        string ptx = EmbeddedPtx.Read(file);
        Assert.Empty(PtxLint.Problems(ptx));
        var entries = PtxLint.Entries(ptx);
        Assert.Equal(parameters, Assert.Contains(entry, entries));
        Assert.Single(entries);
    }

    [Fact]
    public void PtxLintFindsSlips()
    {
        string good = EmbeddedPtx.Read("vector_add.ptx");
        Assert.Contains("%rd10 used but only %rd<10> declared", PtxLint.Problems(good.Replace("%rd<11>", "%rd<10>")));
        Assert.Contains("branch to undefined label DONE", PtxLint.Problems(good.Replace("DONE:", "END:")));
        Assert.Contains("missing '.target sm_80'", PtxLint.Problems(good.Replace("sm_80", "sm_75")));
    }

    [Fact]
    public void MissingPtxResourceNamesTheOnesThereAre()
    {
        var e = Assert.Throws<CudaException>(() => EmbeddedPtx.Read("nope.ptx"));
        Assert.Contains("vector_add.ptx", e.Message);
    }

    [Fact]
    public void NoIlgpuInTheBindings() =>
        Assert.DoesNotContain(typeof(CudaDevice).Assembly.GetReferencedAssemblies(),
            a => a.Name!.StartsWith("ILGPU", StringComparison.Ordinal));
}
