// A device tensor's memory: one ILGPU byte buffer on the backend's accelerator (length rounded up to
// 256 bytes, so it can be viewed as f32, i32 or bf16/ushort). Views of a tensor (new Tensor objects
// over the same storage with another shape) share it. Disposed explicitly, never by the GC: disposing
// hands the buffer back to the backend's pool (once, however many views dispose it).
using ILGPU;
using ILGPU.Runtime;
using Temper.Core;

namespace Temper.Kernels.Ilgpu;

public sealed class DeviceStorage : ITensorStorage
{
    private readonly IlgpuBackend _owner;
    private readonly DevicePool _pool;
    private bool _disposed;

    internal DeviceStorage(IlgpuBackend owner, DevicePool pool, MemoryBuffer1D<byte, Stride1D.Dense> buffer)
    {
        _owner = owner;
        _pool = pool;
        Buffer = buffer;
    }

    /// <summary>The device bytes ([ByteLength], a multiple of 4).</summary>
    public MemoryBuffer1D<byte, Stride1D.Dense> Buffer { get; }
    public long ByteLength => Buffer.Length;
    public IBackend? Device => _owner;
    public bool IsDisposed => _disposed || Buffer.IsDisposed;

    /// <summary>The first <paramref name="count"/> elements of this buffer as <typeparamref name="T"/>.</summary>
    public ArrayView<T> View<T>(long count) where T : unmanaged =>
        ((ArrayView<byte>)Buffer.View).Cast<T>().SubView(0, count);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _pool.Return(Buffer);
    }
}
