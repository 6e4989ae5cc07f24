// Opens CUDA device 0 for a GPU test, or skips the test: "no CUDA driver" when libcuda / nvcuda cannot be
// loaded, "no CUDA device" when cuInit or the driver finds none (a CUDA install on a machine without a GPU), and a named reason when the device is older than the
// sm_80 the embedded PTX targets. A missing GPU is never a pass.
// Open() wants a real GPU (the driver's JIT, attributes, timing) and skips on the CUDA emulator;
// OpenForKernels() also takes the emulator (TEMPER_CUDA_DRIVER=libtemper_cuda_emu.so, as test.sh sets
// it), where the kernels of cuda/*.cu run on the CPU: their results are checked, not their speed.
using Temper.Cuda;
using Temper.Cuda.Driver;

namespace Temper.Cuda.Tests;

static class Gpu
{
    public static void SkipWithoutDriver() =>
        Assert.SkipUnless(CudaLibrary.IsAvailable, "no CUDA driver");

    public static bool DriverOverridden => Environment.GetEnvironmentVariable(CudaLibrary.OverrideVariable) is { Length: > 0 };

    public static CudaDevice Open()
    {
        var device = OpenForKernels();
        if (device.IsEmulated)
        {
            device.Dispose();
            Assert.Skip("the CUDA emulator: this check needs a real GPU and driver");
        }
        return device;
    }

    public static CudaDevice OpenForKernels()
    {
        SkipWithoutDriver();
        try
        {
            CudaDriver.Init();
        }
        catch (CudaException e) when (e.Result == CudaResult.NoDevice)
        {
            Assert.Skip("no CUDA device (the driver library is installed, cuInit finds no GPU)");
        }
        Assert.SkipWhen(CudaDriver.DeviceCount() == 0, "no CUDA device");
        var device = CudaDevice.Open(0);
        if (device.ComputeCapability.Major < 8)
        {
            device.Dispose();
            Assert.Skip("the CUDA device is older than sm_80");
        }
        return device;
    }
}
