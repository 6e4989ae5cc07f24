// A whole file mapped copy-on-write, and the Memory<byte> windows handed out over it.
// Copy-on-write (MAP_PRIVATE on Unix) lets a caller write into a tensor's span without the file ever
// changing, and works on read-only files; a plain read-only mapping would crash the process on the
// first write instead. The windows check that the owner is still open each time a span is taken, so
// most use after Dispose is an ObjectDisposedException rather than a read of unmapped memory (a span
// already taken before Dispose cannot be guarded).
using System.Buffers;
using System.IO.MemoryMappedFiles;

namespace Temper.Core.SafeTensors;

internal sealed unsafe class MappedFileView : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private byte* _base;

    /// <summary>Maps all <paramref name="length"/> bytes of <paramref name="stream"/>, which it takes over.</summary>
    public MappedFileView(FileStream stream, long length)
    {
        _map = MemoryMappedFile.CreateFromFile(stream, mapName: null, 0, MemoryMappedFileAccess.CopyOnWrite, HandleInheritability.None, leaveOpen: false);
        try
        {
            _view = _map.CreateViewAccessor(0, length, MemoryMappedFileAccess.CopyOnWrite);
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref _base);
            _base += _view.PointerOffset;
        }
        catch
        {
            _view?.Dispose();
            _map.Dispose();
            throw;
        }
        Length = length;
    }

    public long Length { get; }
    public bool IsDisposed => _base == null;

    /// <summary>Bytes [offset, offset+length) for reading here and now (the header).</summary>
    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset + length, Length);
        return new ReadOnlySpan<byte>(_base + offset, length);
    }

    /// <summary>A Memory&lt;byte&gt; over bytes [offset, offset+length), valid while this view is open.</summary>
    public Memory<byte> Window(long offset, int length)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset + length, Length);
        return new MappedWindow(this, _base + offset, length).Memory;
    }

    public void Dispose()
    {
        if (_base == null) return;
        _base = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}

/// <summary>One tensor's bytes inside a mapping; owns nothing (the mapping belongs to the file).</summary>
internal sealed unsafe class MappedWindow(MappedFileView owner, byte* start, int length) : MemoryManager<byte>
{
    public override Span<byte> GetSpan()
    {
        ObjectDisposedException.ThrowIf(owner.IsDisposed, owner);
        return new Span<byte>(start, length);
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ObjectDisposedException.ThrowIf(owner.IsDisposed, owner);
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)elementIndex, (uint)length);
        return new MemoryHandle(start + elementIndex);
    }

    public override void Unpin() { }
    protected override void Dispose(bool disposing) { }
}
