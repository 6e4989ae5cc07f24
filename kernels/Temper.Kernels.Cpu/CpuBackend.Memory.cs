// CpuBackend's tensor memory: pinned arrays from a HostBufferPool (freed tensors' arrays are reused,
// so a steady-state training step allocates no new pages), and the allocation meter. Zeros clears a
// reused array (a fresh one comes zeroed); Uninitialized does not, for outputs an op overwrites whole.
// The meter counts every tensor made by Zeros/Uninitialized while it lives (its storage's Dispose, once
// however many views dispose it, takes it off and hands the array back to the pool), and keeps the
// peak; ReservedBytes adds the size-class slack of the live arrays and the free arrays the pool holds.
// Tensors the CPU backend shares rather than allocates (FromHost returns the host tensor itself) are
// not counted. Allocation and release are thread-safe.
using Temper.Core;

namespace Temper.Kernels.Cpu;

public sealed partial class CpuBackend : IMemoryMeter
{
    private long _liveBytes, _peakBytes, _liveArrayBytes;
    private bool _disposed;
    private readonly Lock _meterLock = new();
    private readonly HostBufferPool _pool = new(DefaultPoolCap());

    public long LiveBytes { get { lock (_meterLock) return _liveBytes; } }
    public long PeakBytes { get { lock (_meterLock) return _peakBytes; } }
    public long ReservedBytes { get { lock (_meterLock) return _liveArrayBytes + _pool.CachedBytes; } }

    public void ResetPeak()
    {
        lock (_meterLock) _peakBytes = _liveBytes;
    }

    /// <summary>Bytes of freed tensors' arrays the pool holds for reuse.</summary>
    public long PooledBytes => _pool.CachedBytes;
    /// <summary>Tensor allocations served from the pool / by a fresh array.</summary>
    public (long Hits, long Misses) PoolCounts => (_pool.Hits, _pool.Misses);
    /// <summary>The most bytes the pool keeps (default: 1/8 of the memory the GC may use, 64 MiB to 4 GiB); 0 disables pooling.</summary>
    public long PoolCapBytes
    {
        get => _pool.CapBytes;
        set => _pool.CapBytes = value;
    }

    /// <summary>Drops every pooled array.</summary>
    public void TrimPool() => _pool.Trim();

    /// <summary>
    /// For tests and debugging: Uninitialized fills its tensor with NaN, and a freed tensor's array is
    /// filled with NaN as it goes back to the pool, so an op that reads memory nobody wrote, or a tensor
    /// after its Dispose, gives NaN. Also set by the environment variable TEMPER_POISON_MEMORY=1.
    /// </summary>
    public bool PoisonMemory { get; set; } = Environment.GetEnvironmentVariable("TEMPER_POISON_MEMORY") == "1";

    private static long DefaultPoolCap() => Math.Clamp(GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 8, 64L << 20, 4L << 30);

    private Tensor Allocate(Shape shape, DType dtype, bool zero)
    {
        long bytes = dtype.ByteCount(shape.Elements);
        if (bytes > Array.MaxLength) throw new TemperException($"a host tensor of {bytes} bytes exceeds the 2 GiB single-buffer limit");
        int size = HostBufferPool.ClassOf(bytes);
        var array = _pool.TryRent(size);
        if (array == null) array = zero ? GC.AllocateArray<byte>(size, pinned: true) : GC.AllocateUninitializedArray<byte>(size, pinned: true);
        else if (zero) array.AsSpan(0, (int)bytes).Clear();
        if (!zero && PoisonMemory) System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(array.AsSpan()).Fill(float.NaN);
        lock (_meterLock)
        {
            _liveBytes += bytes;
            _liveArrayBytes += size;
            if (_liveBytes > _peakBytes) _peakBytes = _liveBytes;
        }
        return new Tensor(shape, dtype, new HostStorage(array.AsMemory(0, (int)bytes), new Release(this, array, bytes)));
    }

    private void Free(byte[] array, long bytes)
    {
        lock (_meterLock)
        {
            _liveBytes -= bytes;
            _liveArrayBytes -= array.Length;
        }
        if (Volatile.Read(ref _disposed)) return;
        if (PoisonMemory) System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(array.AsSpan()).Fill(float.NaN);
        _pool.Return(array);
    }

    private sealed class Release(CpuBackend owner, byte[] array, long bytes) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) != 0) return;
            owner.Free(array, bytes);
        }
    }
}
