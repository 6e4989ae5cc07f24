// Per-call device scratch and argument space: small per-call arguments (token ids, positions, key
// masks, embedding-gradient groups) are uploaded into it, and ops take their temporaries (LoRA's
// dy B, attention backward's lse/delta, cross-entropy chunks, reduction partials) from it. Reset at
// the start of each public op; every use is ordered on the accelerator's one stream, so a region reused
// by the next op is only overwritten after the previous op's kernels have read it. A take that does not fit
// replaces the buffer with one of the take's size (at least 1 MiB): at an op's first take the old buffer is freed
// at once (after a stream sync: earlier ops' kernels may still read it); later in an op it lives until the next
// reset (after a sync), which then also drops the buffer that outgrew it. So an op holds little more than it takes
// (not a doubling past it with the outgrown buffers beside it: a 48 MiB take after a 1 MiB one held 145 MiB), and
// the next take after such a reset allocates one buffer of the most any op has taken, where the arena settles. A growth the device refuses for want
// of memory frees the tensor pool's cache and is tried once more. Every change in the bytes it holds goes to
// `held` (the backend's memory meter counts them with the live tensors).
using ILGPU;
using ILGPU.Runtime;

namespace Temper.Kernels.Ilgpu;

internal sealed class DeviceArena(Accelerator acc, Func<bool> releaseCachedMemory, Action<long>? held = null) : IDisposable
{
    private const long Align = 256;
    private readonly List<MemoryBuffer1D<byte, Stride1D.Dense>> _retired = [];
    private MemoryBuffer1D<byte, Stride1D.Dense>? _buffer;
    private long _used;
    private long _takenThisOp, _largestOp; // bytes taken since the last reset (every buffer), and the most of any op

    /// <summary>Bytes of small per-call arguments uploaded so far (ids, positions, masks, tables).</summary>
    public long UploadedBytes { get; private set; }

    /// <summary>Bytes of device memory the arena holds (its buffer and those it replaced since the last reset).</summary>
    public long HeldBytes { get; private set; }

    public void Reset()
    {
        _used = 0;
        _takenThisOp = 0;
        if (_retired.Count == 0) return;
        acc.DefaultStream.Synchronize();
        foreach (var b in _retired) Free(b);
        _retired.Clear();
        Free(_buffer!); // outgrown during the op: the next take allocates the largest op's size at once
        _buffer = null;
    }

    private void Free(MemoryBuffer1D<byte, Stride1D.Dense> b)
    {
        HeldBytes -= b.Length;
        held?.Invoke(-b.Length);
        b.Dispose();
    }

    /// <summary>The bytes Take&lt;T&gt;(count) uses of the arena (aligned), for what an op's takes add up to.</summary>
    public static long Bytes<T>(long count) where T : unmanaged =>
        (Math.Max(1, count) * System.Runtime.CompilerServices.Unsafe.SizeOf<T>() + Align - 1) / Align * Align;

    /// <summary>An uninitialised region of <paramref name="count"/> elements, valid until the next reset.</summary>
    public ArrayView<T> Take<T>(long count) where T : unmanaged
    {
        long bytes = Bytes<T>(count);
        if (_buffer == null || _used + bytes > _buffer.Length)
        {
            long size = Math.Max(bytes, _buffer == null ? Math.Max(_largestOp, 1 << 20) : 1 << 20);
            if (_buffer != null && _used == 0)
            {
                acc.DefaultStream.Synchronize(); // nothing of this op is in it; the ops before may still read it
                Free(_buffer);
            }
            else if (_buffer != null) _retired.Add(_buffer); // earlier regions of this op stay in it; the new buffer starts empty
            _buffer = DevicePool.Allocate(size, releaseCachedMemory, acc.Allocate1D<byte>);
            HeldBytes += _buffer.Length;
            held?.Invoke(_buffer.Length);
            _used = 0;
        }
        var view = ((ArrayView<byte>)_buffer.View).SubView(_used, bytes).Cast<T>().SubView(0, Math.Max(1, count));
        _used += bytes;
        _takenThisOp += bytes;
        _largestOp = Math.Max(_largestOp, _takenThisOp);
        return view;
    }

    /// <summary>A device copy of a small host argument (stream-ordered).</summary>
    public ArrayView<T> Upload<T>(ReadOnlySpan<T> values) where T : unmanaged
    {
        var view = Take<T>(values.Length);
        if (!values.IsEmpty) view.SubView(0, values.Length).CopyFromCPU(acc.DefaultStream, values);
        UploadedBytes += (long)values.Length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        return view;
    }

    public void Dispose()
    {
        foreach (var b in _retired) Free(b);
        _retired.Clear();
        if (_buffer != null) Free(_buffer);
        _buffer = null;
    }
}
