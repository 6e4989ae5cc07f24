// A caching allocator for CpuBackend's tensors (any shape, any dtype: it deals in byte arrays). A
// freed tensor's pinned array goes back to a free list keyed by its size class and the next tensor of
// that class takes it, so a training step's ~700 activations and gradient buffers stop costing fresh
// pages (a first-touch page fault per 4 KiB, charged to whichever op writes the tensor first) once the
// first step has run. Size classes are 8 per octave (a request is rounded up to a multiple of 1/8 of
// its highest power of two, at least 64 bytes), so a buffer has at most 1/8 slack and shapes that
// differ a little (another sequence length) still share buffers. The bytes kept on the free lists are
// capped: a buffer returned past the cap is dropped to the GC. Thread-safe (one lock; a few hundred
// rents a step).
namespace Temper.Kernels.Cpu;

internal sealed class HostBufferPool(long capBytes)
{
    private const int MinClass = 64;
    private readonly Dictionary<int, Stack<byte[]>> _free = [];
    private readonly Lock _lock = new();
    private long _cachedBytes, _capBytes = capBytes, _hits, _misses;

    /// <summary>Bytes of the free arrays held for reuse.</summary>
    public long CachedBytes { get { lock (_lock) return _cachedBytes; } }
    public long Hits { get { lock (_lock) return _hits; } }
    public long Misses { get { lock (_lock) return _misses; } }

    /// <summary>The most bytes the free lists keep; lowering it below what they hold drops them all.</summary>
    public long CapBytes
    {
        get { lock (_lock) return _capBytes; }
        set
        {
            lock (_lock)
            {
                _capBytes = Math.Max(0, value);
                if (_cachedBytes > _capBytes) TrimLocked();
            }
        }
    }

    /// <summary>The array length a request of <paramref name="bytes"/> gets: rounded up to its size class.</summary>
    public static int ClassOf(long bytes)
    {
        if (bytes <= MinClass) return MinClass;
        long step = 1L << (System.Numerics.BitOperations.Log2((ulong)bytes) - 3);
        return (int)Math.Min(Array.MaxLength, (bytes + step - 1) / step * step);
    }

    /// <summary>A free array of <paramref name="classBytes"/> (a ClassOf value), or null when none is held.</summary>
    public byte[]? TryRent(int classBytes)
    {
        lock (_lock)
        {
            if (_free.TryGetValue(classBytes, out var stack) && stack.Count > 0)
            {
                _hits++;
                _cachedBytes -= classBytes;
                return stack.Pop();
            }
            _misses++;
            return null;
        }
    }

    /// <summary>Keeps a freed array for reuse, or drops it when that would pass the cap. Returns whether it was kept.</summary>
    public bool Return(byte[] array)
    {
        lock (_lock)
        {
            if (_cachedBytes + array.Length > _capBytes) return false;
            if (!_free.TryGetValue(array.Length, out var stack)) _free[array.Length] = stack = new();
            stack.Push(array);
            _cachedBytes += array.Length;
            return true;
        }
    }

    /// <summary>Drops every free array (the GC takes them).</summary>
    public void Trim()
    {
        lock (_lock) TrimLocked();
    }

    private void TrimLocked()
    {
        _free.Clear();
        _cachedBytes = 0;
    }
}
