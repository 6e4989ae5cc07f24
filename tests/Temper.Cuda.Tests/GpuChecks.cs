// The CUDA path end to end on a real device (skipped without one, see Gpu.cs): init and device queries,
// the enum table against the driver's own names, the hand-written PTX through the JIT, launches,
// every kind of copy, events, the > 48 KB dynamic shared-memory opt-in and the JIT error log.
// Run on the GPU machine: ../shared/gpu/pack tests/Temper.Cuda.Tests/Temper.Cuda.Tests.csproj, then
// `bash .gpu/run Temper.Cuda.Tests` with carry [".gpu"].
using Temper.Cuda.Driver;

namespace Temper.Cuda.Tests;

public class GpuChecks
{
    [Fact]
    public void ResultNamesMatchTheDriver()
    {
        Gpu.SkipWithoutDriver();
        Assert.SkipWhen(Gpu.DriverOverridden, "TEMPER_CUDA_DRIVER names another library than the NVIDIA driver");
        foreach (var result in Enum.GetValues<CudaResult>())
            Assert.Equal(CudaErrors.Name(result), CudaErrors.ManagedName(result));
    }

    [Fact]
    public void DeviceQuery()
    {
        using var device = Gpu.Open();
        Assert.True(CudaDriver.DriverVersion() >= 11000, $"driver version {CudaDriver.DriverVersion()}");
        Assert.False(string.IsNullOrWhiteSpace(device.Name));
        Assert.True(device.MultiprocessorCount > 0);
        Assert.True(device.TotalMemory > 1L << 30);
        Assert.Equal(32, device.Attribute(CudaDeviceAttribute.WarpSize));
        int perBlock = device.Attribute(CudaDeviceAttribute.MaxSharedMemoryPerBlock);
        Assert.Equal(48 * 1024, perBlock);
        Assert.True(device.MaxSharedMemoryPerBlockOptin >= perBlock);
        var (free, total) = CudaDriver.MemoryInfo();
        Assert.InRange(free, 1, total);
        Assert.Equal(device.Context.DangerousGetHandle(), CudaDriver.CurrentContext());
        TestContext.Current.SendDiagnosticMessage(
            $"{device.Name}: sm_{device.ComputeCapability.Major}{device.ComputeCapability.Minor}, {device.MultiprocessorCount} SMs, "
            + $"{device.MaxSharedMemoryPerBlockOptin} B shared opt-in, driver {CudaDriver.DriverVersion()}");
    }

    [Fact]
    public void VectorAddThroughThePtx()
    {
        using var device = Gpu.Open();
        using var module = device.LoadModule(EmbeddedPtx.Read("vector_add.ptx"), out string infoLog);
        var add = CudaDriver.GetFunction(module, "vector_add_f32");
        Assert.True(CudaDriver.FunctionAttribute(add, CudaFunctionAttribute.NumRegs) > 0);
        Assert.True(CudaDriver.FunctionAttribute(add, CudaFunctionAttribute.MaxThreadsPerBlock) >= 256);
        // The driver reports the PTX target (.target sm_80 -> 80), not the ISA version (.version 7.0):
        // seen on an H100, driver 580.
        Assert.Equal(80, CudaDriver.FunctionAttribute(add, CudaFunctionAttribute.PtxVersion));
        TestContext.Current.SendDiagnosticMessage($"JIT info log: {infoLog}");

        const int n = 1000 * 1000 + 3; // not a multiple of the block size
        var random = new Random(7);
        var a = new float[n];
        var b = new float[n];
        for (int i = 0; i < n; i++) { a[i] = random.NextSingle() * 2 - 1; b[i] = random.NextSingle() * 2 - 1; }
        using var da = device.Upload<float>(a);
        using var db = device.Upload<float>(b);
        using var dc = device.Allocate<float>(n + 1);
        CudaDriver.SetBytesAsync(dc.Pointer, 0xFF, dc.ByteLength, device.Stream); // NaN everywhere, incl. the guard
        device.Launch(add, n, 256, new CudaKernelArguments().Add(da).Add(db).Add(dc).Add((uint)n));
        var c = device.Download<float>(dc);
        for (int i = 0; i < n; i++)
            if (c[i] != a[i] + b[i]) Assert.Fail($"c[{i}] = {c[i]}, expected {a[i] + b[i]}");
        Assert.True(float.IsNaN(c[n]), "the kernel wrote past n");
    }

    [Fact]
    public unsafe void CopiesPinnedDeviceToDeviceAndMemset()
    {
        using var device = Gpu.Open();
        const int n = 4096;
        using var pinned = CudaDriver.AllocateHost(device.Context, n * sizeof(int));
        var host = pinned.AsSpan<int>();
        for (int i = 0; i < n; i++) host[i] = i * 3 - 5;
        using var first = device.Allocate<int>(n);
        using var second = device.Allocate<int>(n);
        CudaDriver.CopyHostToDeviceAsync(first.Pointer, (void*)pinned.Pointer, first.ByteLength, device.Stream);
        CudaDriver.CopyDeviceToDeviceAsync(second.Pointer, first.Pointer, first.ByteLength, device.Stream);
        CudaDriver.SetBytesAsync(first.Pointer, 0xAB, 16, device.Stream); // first four ints
        host.Clear();
        CudaDriver.CopyDeviceToHostAsync((void*)pinned.Pointer, second.Pointer, second.ByteLength, device.Stream);
        device.Synchronize();
        for (int i = 0; i < n; i++) Assert.Equal(i * 3 - 5, host[i]);
        var head = device.Download<int>(first);
        Assert.Equal(unchecked((int)0xABABABAB), head[0]);
        Assert.Equal(unchecked((int)0xABABABAB), head[3]);
        Assert.Equal(4 * 3 - 5, head[4]);
    }

    [Fact]
    public void AnAllocationTheDeviceRefusesAsksTheCacheOwnerOnceThenFails()
    {
        using var device = Gpu.OpenForKernels(); // the emulator refuses it too (its mmap fails)
        int asked = 0;
        device.ReleaseCachedMemory = () => { asked++; return true; }; // "freed something": the allocation is tried again
        var e = Assert.Throws<CudaException>(() => device.Allocate<byte>(1L << 50)); // 1 PiB: more than any device or address space
        Assert.Equal(CudaResult.OutOfMemory, e.Result);
        Assert.StartsWith("cuMemAlloc_v2 failed", e.Message);
        Assert.Equal(1, asked);
        device.ReleaseCachedMemory = () => { asked++; return false; }; // nothing freed: no second try
        Assert.Throws<CudaException>(() => device.Allocate<byte>(1L << 50));
        Assert.Equal(2, asked);
        using var fits = device.Allocate<byte>(4096); // and the device still allocates
        Assert.Equal(2, asked);
    }

    [Fact]
    public void EventsTimeAKernel()
    {
        using var device = Gpu.Open();
        using var module = device.LoadEmbeddedModule("vector_add.ptx");
        var add = CudaDriver.GetFunction(module, "vector_add_f32");
        const int n = 1 << 24;
        using var x = device.Allocate<float>(n);
        using var y = device.Allocate<float>(n);
        CudaDriver.SetBytesAsync(x.Pointer, 0, x.ByteLength, device.Stream);
        var args = new CudaKernelArguments().Add(x).Add(x).Add(y).Add((uint)n);
        using var start = device.CreateEvent();
        using var end = device.CreateEvent();
        device.Record(start);
        for (int i = 0; i < 10; i++) device.Launch(add, n, 256, args);
        device.Record(end);
        CudaDriver.EventSynchronize(end);
        float ms = CudaDriver.ElapsedMilliseconds(start, end);
        // 10 x 192 MiB of traffic: well under a second, and not free either.
        Assert.InRange(ms, 0.05f, 1000f);
        TestContext.Current.SendDiagnosticMessage($"10 vector adds of 2^24 floats: {ms:F3} ms ({10 * 3.0 * 4 * n / (ms * 1e6):F0} GB/s)");
    }

    [Fact]
    public void DynamicSharedMemoryAbove48KbNeedsTheOptIn()
    {
        using var device = Gpu.Open();
        const int n = 24 * 1024; // 96 KB of floats
        int bytes = n * sizeof(float);
        Assert.SkipWhen(device.MaxSharedMemoryPerBlockOptin < bytes, $"the device opts in to only {device.MaxSharedMemoryPerBlockOptin} B");
        using var module = device.LoadEmbeddedModule("shared_reverse.ptx");
        var reverse = CudaDriver.GetFunction(module, "shared_reverse_f32");
        var src = Enumerable.Range(0, n).Select(i => (float)i).ToArray();
        using var dsrc = device.Upload<float>(src);
        using var ddst = device.Allocate<float>(n);
        var args = new CudaKernelArguments().Add(dsrc).Add(ddst).Add((uint)n);

        var refused = Assert.Throws<CudaException>(() => device.Launch(reverse, (1, 1, 1), (512, 1, 1), args, bytes));
        Assert.Equal(CudaResult.InvalidValue, refused.Result);
        Assert.StartsWith("cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE", refused.Message);

        CudaDriver.SetFunctionAttribute(reverse, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, bytes);
        Assert.Equal(bytes, CudaDriver.FunctionAttribute(reverse, CudaFunctionAttribute.MaxDynamicSharedSizeBytes));
        device.Launch(reverse, (1, 1, 1), (512, 1, 1), args, bytes);
        var dst = device.Download<float>(ddst);
        for (int i = 0; i < n; i++) Assert.Equal(src[n - 1 - i], dst[i]);
    }

    [Fact]
    public void BadPtxFailsWithTheJitLog()
    {
        using var device = Gpu.Open();
        string broken = EmbeddedPtx.Read("vector_add.ptx").Replace("%f1, %f2;", "%f1, %f9;");
        Assert.NotEqual(EmbeddedPtx.Read("vector_add.ptx"), broken);
        var e = Assert.Throws<CudaException>(() => device.LoadModule(broken, out _));
        Assert.StartsWith("cuModuleLoadDataEx failed: CUDA_ERROR_INVALID_PTX", e.Message);
        Assert.Contains("%f9", e.Message); // ptxas names the undeclared register
        Assert.DoesNotContain('\n', e.Message);

        using var module = device.LoadEmbeddedModule("vector_add.ptx");
        var missing = Assert.Throws<CudaException>(() => CudaDriver.GetFunction(module, "vector_sub_f32"));
        Assert.Contains("CUDA_ERROR_NOT_FOUND", missing.Message);
        Assert.Contains("vector_sub_f32", missing.Message);
    }
}
