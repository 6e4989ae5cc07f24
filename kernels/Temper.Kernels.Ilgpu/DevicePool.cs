// A caching allocator for device tensors: a disposed tensor's buffer goes back to a free list keyed by
// its exact size (rounded up to 256 bytes) and the next tensor of that size takes it, so the decoder's
// per-step temporaries stop paying a device malloc and the implicit device sync of a free. Reuse is
// safe without a sync because every use is ordered on the accelerator's one stream: the new owner's
// first write is queued after the old owner's last kernel. Cached bytes are capped; past the cap a
// returned buffer is freed at once. Hits, misses, the bytes held and the bytes rented out (live, with
// their peak: IlgpuBackend's memory meter) are counted.
// Out of memory: a fresh allocation that the device refuses frees the cached buffers (after the queued work) and
// is tried once more, as PyTorch's caching allocator does, so a cap as large as the device costs no headroom.
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu;

internal sealed class DevicePool(Accelerator acc, long capBytes, Func<long, MemoryBuffer1D<byte, Stride1D.Dense>>? allocate = null) : IDisposable
{
    private const long Granule = 256;
    private readonly Dictionary<long, Stack<MemoryBuffer1D<byte, Stride1D.Dense>>> _free = [];
    private bool _disposed;

    public long CachedBytes { get; private set; }
    public long Hits { get; private set; }
    public long Misses { get; private set; }
    public long CapBytes { get; set; } = capBytes;
    /// <summary>Bytes rented and not yet returned, and the most since ResetPeak.</summary>
    public long LiveBytes { get; private set; }
    public long PeakLiveBytes { get; private set; }

    public void ResetPeak() => PeakLiveBytes = LiveBytes;

    /// <summary>Counts bytes in use that the pool did not rent out (the arena's buffers: DeviceArena) with the live ones.</summary>
    public void Hold(long bytes) => Rented(bytes);

    private void Rented(long size)
    {
        LiveBytes += size;
        if (LiveBytes > PeakLiveBytes) PeakLiveBytes = LiveBytes;
    }

    public MemoryBuffer1D<byte, Stride1D.Dense> Rent(long bytes)
    {
        long size = Math.Max(Granule, (bytes + Granule - 1) / Granule * Granule);
        if (_free.TryGetValue(size, out var stack) && stack.Count > 0)
        {
            Hits++;
            CachedBytes -= size;
            Rented(size);
            return stack.Pop();
        }
        Misses++;
        var fresh = Allocate(size, Release, allocate ?? acc.Allocate1D<byte>);
        Rented(size);
        return fresh;
    }

    /// <summary>allocate(bytes); when the device is out of memory and release() freed something, allocate(bytes) again.</summary>
    public static MemoryBuffer1D<byte, Stride1D.Dense> Allocate(long bytes, Func<bool> release, Func<long, MemoryBuffer1D<byte, Stride1D.Dense>> allocate)
    {
        try { return allocate(bytes); }
        catch (Exception e) when (IsOutOfMemory(e))
        {
            if (!release()) throw;
        }
        return allocate(bytes);
    }

    /// <summary>Whether e is a device (or, on ILGPU's CPU accelerator, host) allocation refused for want of memory. ILGPU's
    /// CudaException carries the driver's error as a string: its name, or the driver's description ("out of memory").</summary>
    public static bool IsOutOfMemory(Exception e) =>
        e is OutOfMemoryException || e is ILGPU.Runtime.Cuda.CudaException c &&
        (c.Error == nameof(ILGPU.Runtime.Cuda.CudaError.CUDA_ERROR_OUT_OF_MEMORY) || c.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase));

    /// <summary>Frees every cached buffer once the queued work is done; whether there was any.</summary>
    public bool Release()
    {
        if (CachedBytes == 0) return false;
        acc.Synchronize();
        Trim();
        return true;
    }

    public void Return(MemoryBuffer1D<byte, Stride1D.Dense> buffer)
    {
        LiveBytes -= buffer.Length;
        if (_disposed || buffer.IsDisposed || CachedBytes + buffer.Length > CapBytes)
        {
            buffer.Dispose();
            return;
        }
        if (!_free.TryGetValue(buffer.Length, out var stack)) _free[buffer.Length] = stack = new();
        stack.Push(buffer);
        CachedBytes += buffer.Length;
    }

    /// <summary>Frees every cached buffer.</summary>
    public void Trim()
    {
        foreach (var s in _free.Values)
            while (s.Count > 0) s.Pop().Dispose();
        _free.Clear();
        CachedBytes = 0;
    }

    public void Dispose()
    {
        _disposed = true;
        Trim();
    }
}
