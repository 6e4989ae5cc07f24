// The devices the ILGPU suite runs on: ILGPU's CPU accelerator always (CI), CUDA when a CUDA device
// is present, and the CPU accelerator whose PTX route runs on the CUDA emulator when
// TEMPER_CUDA_DRIVER names it (test.sh's emulated suite). One backend per test class (kernels compile
// once per accelerator), shared by its tests; the emulated classes share one through their collection.
using Temper.Cuda;
using Temper.Cuda.Driver;
using Temper.Kernels.Ilgpu;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class DeviceFixture : IDisposable
{
    private readonly Lazy<IlgpuBackend?> _backend;

    protected DeviceFixture(string kind, string display)
    {
        Kind = kind;
        Display = display;
        _backend = new(() => Missing() is null ? Create() : null);
    }

    public string Kind { get; }
    public string Display { get; }

    /// <summary>The backend, or a visible skip when this machine has no such device.</summary>
    public IlgpuBackend Backend => _backend.Value ?? throw SkipMissing();

    /// <summary>Why this machine lacks the device; null when it has it.</summary>
    protected virtual string? Missing() => IlgpuBackend.IsAvailable(Kind) ? null : $"no {Display} device";

    protected virtual IlgpuBackend Create() => IlgpuBackend.Create(Kind);

    private Exception SkipMissing()
    {
        Assert.Skip(Missing() ?? $"no {Display} device");
        return new InvalidOperationException("unreachable");
    }

    public void Dispose()
    {
        if (_backend.IsValueCreated) _backend.Value?.Dispose();
        GC.SuppressFinalize(this);
    }
}

public sealed class CpuAcceleratorFixture() : DeviceFixture("ilgpu-cpu", "ILGPU CPU accelerator");
public sealed class CudaFixture() : DeviceFixture("cuda", "CUDA");

/// <summary>ILGPU's CPU accelerator whose PTX route (IlgpuBackend.PtxKernels) runs the CUDA C++ kernels on the
/// CUDA emulator (kernels/Temper.Kernels.Cuda/emu), which reads and writes the CPU accelerator's host buffers;
/// skipped unless TEMPER_CUDA_DRIVER names the emulator. PtxKernels is left off: each check switches it.</summary>
public sealed class EmulatedPtxFixture() : DeviceFixture("ilgpu-cpu", "ILGPU CPU accelerator over the CUDA emulator")
{
    protected override string? Missing()
    {
        if (Environment.GetEnvironmentVariable(CudaLibrary.OverrideVariable) is not { Length: > 0 } path)
            return $"{CudaLibrary.OverrideVariable} is not set (build the CUDA emulator with kernels/Temper.Kernels.Cuda/emu/build-emu.sh and point it there)";
        if (!CudaLibrary.IsAvailable) return CudaLibrary.LoadError;
        using var device = CudaDevice.Open();
        return device.IsEmulated ? null : $"{CudaLibrary.OverrideVariable}={path} is a real CUDA driver ({device.Name}), not the emulator";
    }

    protected override IlgpuBackend Create()
    {
        var backend = base.Create();
        backend.PtxKernels = true;
        if (!backend.PtxKernels) throw new InvalidOperationException("the CUDA emulator is the driver, yet the CPU accelerator's PTX route stays off");
        backend.PtxKernels = false;
        return backend;
    }
}

/// <summary>The emulated PTX-route classes share one backend (kernels compile once) and run one after another.</summary>
[CollectionDefinition(Name)]
public sealed class EmulatedPtxCollection : ICollectionFixture<EmulatedPtxFixture>
{
    public const string Name = "PTX route over the CUDA emulator";
}
