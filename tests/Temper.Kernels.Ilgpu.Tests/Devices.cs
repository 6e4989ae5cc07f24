// The devices the ILGPU suite runs on: ILGPU's CPU accelerator always (CI), CUDA when a CUDA device
// is present. One backend per test class (kernels compile once per accelerator), shared by its tests.
using Temper.Kernels.Ilgpu;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class DeviceFixture : IDisposable
{
    private readonly Lazy<IlgpuBackend?> _backend;

    protected DeviceFixture(string kind, string display)
    {
        Kind = kind;
        Display = display;
        _backend = new(() => IlgpuBackend.IsAvailable(kind) ? IlgpuBackend.Create(kind) : null);
    }

    public string Kind { get; }
    public string Display { get; }

    /// <summary>The backend, or a visible skip when this machine has no such device.</summary>
    public IlgpuBackend Backend => _backend.Value ?? throw SkipNoDevice();

    private Exception SkipNoDevice()
    {
        Assert.Skip($"no {Display} device");
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
