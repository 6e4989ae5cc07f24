// A GGUF reader for the tests, written from the format's description (ggml's docs/gguf.md), apart from Temper's
// writer: header (magic "GGUF", version, tensor count, key count), typed key/value pairs (scalars, strings and
// arrays of them), tensor infos (name, dimensions innermost first, ggml type, offset), then the data section at the
// next multiple of general.alignment. Values come back as object (uint, int, float, bool, string, or an array of them).
using System.Text;

namespace Temper.Tests;

public sealed class GgufFile
{
    public sealed record TensorInfo(string Name, long[] Ne, uint Type, long Offset);

    public string Path { get; }
    public uint Version { get; }
    public Dictionary<string, object> Metadata { get; } = [];
    public List<TensorInfo> Tensors { get; } = [];
    public long DataStart { get; }
    private readonly byte[] _bytes;

    public GgufFile(string path)
    {
        Path = path;
        _bytes = File.ReadAllBytes(path);
        using var r = new BinaryReader(new MemoryStream(_bytes), Encoding.UTF8);
        if (Encoding.ASCII.GetString(r.ReadBytes(4)) != "GGUF") throw new InvalidDataException($"{path}: no GGUF magic");
        Version = r.ReadUInt32();
        long tensors = (long)r.ReadUInt64(), keys = (long)r.ReadUInt64();
        for (long i = 0; i < keys; i++)
        {
            string key = ReadString(r);
            Metadata[key] = ReadValue(r, r.ReadUInt32());
        }
        for (long i = 0; i < tensors; i++)
        {
            string name = ReadString(r);
            var ne = new long[r.ReadUInt32()];
            for (int d = 0; d < ne.Length; d++) ne[d] = (long)r.ReadUInt64();
            Tensors.Add(new TensorInfo(name, ne, r.ReadUInt32(), (long)r.ReadUInt64()));
        }
        long alignment = Metadata.TryGetValue("general.alignment", out var a) ? (uint)a : 32;
        DataStart = (r.BaseStream.Position + alignment - 1) / alignment * alignment;
    }

    public T Get<T>(string key) => (T)Metadata[key];

    public TensorInfo Tensor(string name) => Tensors.Single(t => t.Name == name);

    public ReadOnlySpan<byte> Data(string name, long byteCount) => _bytes.AsSpan((int)(DataStart + Tensor(name).Offset), (int)byteCount);

    /// <summary>An F32 tensor's values.</summary>
    public float[] Floats(string name)
    {
        var t = Tensor(name);
        if (t.Type != 0) throw new InvalidDataException($"{name} is ggml type {t.Type}, not F32");
        long n = t.Ne.Aggregate(1L, (x, y) => x * y);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(Data(name, n * 4)).ToArray();
    }

    /// <summary>An F16 (type 1) or BF16 (type 30) tensor's 16-bit words.</summary>
    public ushort[] Halves(string name)
    {
        var t = Tensor(name);
        if (t.Type is not (1 or 30)) throw new InvalidDataException($"{name} is ggml type {t.Type}, not F16/BF16");
        long n = t.Ne.Aggregate(1L, (x, y) => x * y);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(Data(name, n * 2)).ToArray();
    }

    private static string ReadString(BinaryReader r) => Encoding.UTF8.GetString(r.ReadBytes(checked((int)r.ReadUInt64())));

    private static object ReadValue(BinaryReader r, uint type) => type switch
    {
        0 => r.ReadByte(),
        1 => r.ReadSByte(),
        2 => r.ReadUInt16(),
        3 => r.ReadInt16(),
        4 => r.ReadUInt32(),
        5 => r.ReadInt32(),
        6 => r.ReadSingle(),
        7 => r.ReadByte() != 0,
        8 => ReadString(r),
        9 => ReadArray(r),
        10 => r.ReadUInt64(),
        11 => r.ReadInt64(),
        12 => r.ReadDouble(),
        _ => throw new InvalidDataException($"unknown GGUF value type {type}"),
    };

    private static object[] ReadArray(BinaryReader r)
    {
        uint type = r.ReadUInt32();
        var items = new object[checked((int)r.ReadUInt64())];
        for (int i = 0; i < items.Length; i++) items[i] = ReadValue(r, type);
        return items;
    }
}
