// What the op files need from the backend: the accelerator, its stream, the per-call arena and the
// loaded kernels (each compiled once per accelerator on first use, then cached by name).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu;

internal sealed class DeviceContext(Accelerator acc) : IDisposable
{
    private readonly Dictionary<string, Delegate> _kernels = [];

    public Accelerator Accelerator { get; } = acc;
    public AcceleratorStream Stream => Accelerator.DefaultStream;
    public DeviceArena Arena { get; } = new(acc);

    /// <summary>The launcher for <paramref name="name"/>, loading (compiling) it on first use.</summary>
    public T Kernel<T>(string name, Func<Accelerator, T> load) where T : Delegate
    {
        if (!_kernels.TryGetValue(name, out var k))
        {
            k = load(Accelerator);
            _kernels[name] = k;
        }
        return (T)k;
    }

    public void Dispose() => Arena.Dispose();
}
