// One .safetensors file, memory-mapped and validated on open:
//   [u64 LE header length N][N bytes of JSON header, space padded][data section: tensor bytes]
// Get returns host tensors whose bytes are the mapping itself (zero copy, copy-on-write so writes
// never reach the file); they are valid while this file is open. A single tensor is limited to
// 2 GiB because a Memory<byte> is int-indexed; a larger one throws a TemperException on Get (the file
// itself may be any size: offsets are long).
using System.Buffers.Binary;
using static Temper.Core.SafeTensors.SafetensorsErrors;

namespace Temper.Core.SafeTensors;

public sealed class SafetensorsFile : IDisposable
{
    private readonly MappedFileView _view;
    private readonly long _dataStart;
    private readonly Dictionary<string, SafetensorsEntry> _byName;

    private SafetensorsFile(string path, MappedFileView view, long dataStart, List<SafetensorsEntry> entries, Dictionary<string, string> metadata)
    {
        Path = path;
        _view = view;
        _dataStart = dataStart;
        Entries = entries;
        Metadata = metadata;
        _byName = entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
    }

    /// <summary>The file's full path.</summary>
    public string Path { get; }
    /// <summary>The tensors in the order the header lists them.</summary>
    public IReadOnlyList<SafetensorsEntry> Entries { get; }
    /// <summary>The header's "__metadata__" (empty when it has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    public static SafetensorsFile Open(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        FileStream stream;
        try
        {
            stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw InFile(full, $"cannot open: {e.Message}");
        }

        MappedFileView view;
        long length;
        try
        {
            length = stream.Length;
            if (length < 8) throw InFile(full, $"file is {length} bytes, shorter than the 8-byte header length");
            view = new MappedFileView(stream, length);
        }
        catch
        {
            stream.Dispose();
            throw;
        }

        try
        {
            // Checked against the file and the cap before the header is touched: the length is untrusted.
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(view.Span(0, 8));
            if (headerLength > (ulong)(length - 8))
                throw InFile(full, $"header length {headerLength} exceeds the file ({length} bytes)");
            if (headerLength > SafetensorsHeader.MaxHeaderBytes)
                throw InFile(full, $"header length {headerLength} exceeds the {SafetensorsHeader.MaxHeaderBytes}-byte limit");
            long dataStart = 8 + (long)headerLength;
            var (entries, metadata) = SafetensorsHeader.Parse(full, view.Span(8, (int)headerLength), length - dataStart);
            return new SafetensorsFile(full, view, dataStart, entries, metadata);
        }
        catch
        {
            view.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public SafetensorsEntry Entry(string name) =>
        _byName.TryGetValue(name, out var e) ? e : throw InTensor(Path, name, "not in this file");

    /// <summary>A host tensor over the mapped bytes of <paramref name="name"/>; valid while this file is open.</summary>
    public Tensor Get(string name)
    {
        ObjectDisposedException.ThrowIf(_view.IsDisposed, this);
        var e = Entry(name);
        if (e.ByteLength > int.MaxValue)
            throw InTensor(Path, name, $"{e.ByteLength} bytes exceed the 2 GiB limit of one host buffer (Memory<byte>)");
        var memory = _view.Window(_dataStart + e.Begin, (int)e.ByteLength);
        return new Tensor(e.Shape, e.DType, new HostStorage(memory), name);
    }

    public void Dispose() => _view.Dispose();
    public override string ToString() => $"{Path} ({Entries.Count} tensors)";
}
