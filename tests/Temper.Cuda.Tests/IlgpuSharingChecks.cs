// Temper.Cuda inside ILGPU's CUDA accelerator: borrow its context and one of its streams, run the
// hand-written PTX on buffers ILGPU allocated, and read them back through ILGPU. Borrowed handles never
// release what ILGPU owns (its accelerator disposes cleanly afterwards). Skipped without a CUDA device.
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Cuda.Tests;

public class IlgpuSharingChecks
{
    [Fact]
    public void KernelRunsOnIlgpuBuffersAndStream()
    {
        Gpu.SkipWithoutDriver();
        using var context = Context.Create(builder => builder.Cuda());
        var devices = context.GetCudaDevices();
        Assert.SkipWhen(devices.Count == 0, "no CUDA device");
        using var accelerator = devices[0].CreateCudaAccelerator(context);
        Assert.SkipWhen(accelerator.Architecture.Major < 8, "the CUDA device is older than sm_80");

        const int n = 5000;
        var a = Enumerable.Range(0, n).Select(i => i * 0.5f).ToArray();
        var b = Enumerable.Range(0, n).Select(i => 1f - i).ToArray();
        using var da = accelerator.Allocate1D(a);
        using var db = accelerator.Allocate1D(b);
        using var dc = accelerator.Allocate1D<float>(n);
        using var ilgpuStream = (CudaStream)accelerator.CreateStream();

        using (var shared = CudaContextHandle.Borrow(accelerator.NativePtr, accelerator.DeviceId))
        using (var stream = CudaStreamHandle.Borrow(ilgpuStream.StreamPtr, shared))
        {
            CudaDriver.SetCurrentContext(shared);
            using var module = CudaDriver.LoadModule(shared, EmbeddedPtx.Read("vector_add.ptx"), out _);
            var add = CudaDriver.GetFunction(module, "vector_add_f32");
            var args = new CudaKernelArguments().Add((ulong)da.NativePtr).Add((ulong)db.NativePtr).Add((ulong)dc.NativePtr).Add((uint)n);
            CudaDriver.Launch(add, ((n + 127) / 128, 1, 1), (128, 1, 1), 0, stream, args);
            CudaDriver.StreamSynchronize(stream);
        }

        var c = dc.GetAsArray1D();
        for (int i = 0; i < n; i++) Assert.Equal(a[i] + b[i], c[i]);
        ilgpuStream.Synchronize(); // ILGPU's stream is still alive: the borrowed handle did not destroy it
    }
}
