// Reads a GGUF file (versions 2 and 3) as llama.cpp writes it: the header, the typed key/value metadata, the tensor
// infos, and each tensor's bytes on demand, decoded to f32 by GgmlDequant. The header is untrusted: every count,
// string length, array length, dimension and offset is checked against the bytes the file has before anything is
// allocated from it, and any fault is one TemperException naming the file and what is wrong (never a huge allocation,
// never a read past the end). Shapes are returned row-major (outermost first, as safetensors), the reverse of ggml's ne[].
using System.Text;

namespace Temper.Core.Gguf;

public sealed class GgufReader : IDisposable
{
    public sealed record TensorInfo(string Name, long[] Shape, GgmlType Type, long Offset, long ByteCount)
    {
        public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
    }

    private readonly FileStream _file;
    private readonly Dictionary<string, object> _metadata = [];
    private readonly Dictionary<string, TensorInfo> _tensors = [];

    public string Path { get; }
    public uint Version { get; }
    public IReadOnlyDictionary<string, object> Metadata => _metadata;
    public IReadOnlyCollection<TensorInfo> Tensors => _tensors.Values;

    private GgufReader(string path)
    {
        Path = path;
        _file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            var r = new Cursor(this, new BinaryReader(_file, Encoding.UTF8, leaveOpen: true), _file.Length);
            if (_file.Length < 24 || !r.Bytes(4).SequenceEqual("GGUF"u8.ToArray())) throw Fault("not a GGUF file (no GGUF magic)");
            Version = r.UInt32();
            if (Version is not (2 or 3)) throw Fault($"GGUF version {Version}; Temper reads versions 2 and 3");
            long tensorCount = r.Count(32, "tensor count"), keyCount = r.Count(13, "key count");
            for (long i = 0; i < keyCount; i++)
            {
                string key = r.String("key");
                if (!_metadata.TryAdd(key, r.Value(r.UInt32(), key))) throw Fault($"key '{key}' appears twice");
            }
            var infos = new List<(string Name, long[] Shape, GgmlType Type, long Offset)>();
            for (long i = 0; i < tensorCount; i++)
            {
                string name = r.String("tensor name");
                uint dims = r.UInt32();
                if (dims is 0 or > 4) throw Fault($"tensor '{name}' has {dims} dimensions (1 to 4)");
                var shape = new long[dims];
                long elements = 1;
                for (int d = 0; d < dims; d++)
                {
                    ulong ne = r.UInt64();
                    if (ne == 0 || ne > int.MaxValue) throw Fault($"tensor '{name}' dimension {d} is {ne}");
                    shape[dims - 1 - d] = (long)ne;
                    elements = elements <= long.MaxValue / (long)ne ? elements * (long)ne : throw Fault($"tensor '{name}' has too many elements");
                }
                var type = (GgmlType)r.UInt32();
                if (!GgmlDequant.IsSupported(type)) throw Fault($"tensor '{name}' has ggml type {(uint)type}, which Temper does not read");
                infos.Add((name, shape, type, (long)Math.Min(r.UInt64(), long.MaxValue)));
            }
            long alignment = Metadata.TryGetValue("general.alignment", out var a) ? Convert.ToInt64(a) : 32;
            if (alignment <= 0 || (alignment & (alignment - 1)) != 0) throw Fault($"general.alignment {alignment} is not a power of two");
            long dataStart = (_file.Position + alignment - 1) / alignment * alignment;
            foreach (var (name, shape, type, offset) in infos)
            {
                long elements = shape.Aggregate(1L, (x, y) => x * y);
                long bytes;
                try { bytes = GgmlDequant.ByteCount(type, elements); }
                catch (TemperException e) { throw Fault($"tensor '{name}': {e.Message}"); }
                if (offset % alignment != 0 || offset > _file.Length - dataStart || bytes > _file.Length - dataStart - offset)
                    throw Fault($"tensor '{name}' ({bytes} bytes at data offset {offset}) lies outside the file's {_file.Length} bytes");
                if (!_tensors.TryAdd(name, new TensorInfo(name, shape, type, dataStart + offset, bytes))) throw Fault($"tensor '{name}' appears twice");
            }
        }
        catch
        {
            _file.Dispose();
            throw;
        }
    }

    public static GgufReader Open(string path)
    {
        if (!File.Exists(path)) throw new TemperException($"{path}: file not found");
        return new GgufReader(path);
    }

    public bool Has(string tensor) => _tensors.ContainsKey(tensor);

    public TensorInfo Tensor(string name) => _tensors.TryGetValue(name, out var t) ? t : throw Fault($"tensor '{name}' missing");

    /// <summary>A tensor's values as f32, row-major.</summary>
    public float[] ReadFloats(TensorInfo t)
    {
        var bytes = new byte[t.ByteCount];
        RandomAccess.Read(_file.SafeFileHandle, bytes, t.Offset);
        var values = new float[t.Elements];
        GgmlDequant.ToFloats(t.Type, bytes, values);
        return values;
    }

    public string? String(string key) => Metadata.TryGetValue(key, out var v) ? v as string ?? throw Fault($"'{key}' is not a string") : null;

    public long? Integer(string key) => Metadata.TryGetValue(key, out var v)
        ? v switch { byte or sbyte or ushort or short or uint or int or long => Convert.ToInt64(v), ulong u when u <= long.MaxValue => (long)u, _ => throw Fault($"'{key}' is not an integer") }
        : null;

    public double? Number(string key) => Metadata.TryGetValue(key, out var v)
        ? v switch { float f => f, double d => d, bool => throw Fault($"'{key}' is not a number"), string or object[] => throw Fault($"'{key}' is not a number"), _ => Convert.ToDouble(v) }
        : null;

    public bool? Bool(string key) => Metadata.TryGetValue(key, out var v) ? v as bool? ?? throw Fault($"'{key}' is not a bool") : null;

    public object[]? Array(string key) => Metadata.TryGetValue(key, out var v) ? v as object[] ?? throw Fault($"'{key}' is not an array") : null;

    public TemperException Fault(string what) => new($"{Path}: {what}");

    public void Dispose() => _file.Dispose();

    // Reads the header, checking each length against the bytes left.
    private sealed class Cursor(GgufReader owner, BinaryReader r, long length)
    {
        private long Left => length - r.BaseStream.Position;

        private void Need(long bytes, string what)
        {
            if (bytes < 0 || bytes > Left) throw owner.Fault($"{what} runs past the end of the file (header truncated or corrupt)");
        }

        public byte[] Bytes(int n) { Need(n, "the header"); return r.ReadBytes(n); }
        public uint UInt32() { Need(4, "the header"); return r.ReadUInt32(); }
        public ulong UInt64() { Need(8, "the header"); return r.ReadUInt64(); }

        /// <summary>A count of items each taking at least minBytes.</summary>
        public long Count(int minBytes, string what)
        {
            ulong n = UInt64();
            if (n > (ulong)(Left / minBytes)) throw owner.Fault($"{what} {n} is more than the file's {length} bytes can hold");
            return (long)n;
        }

        public string String(string what)
        {
            ulong n = UInt64();
            if (n > (ulong)Left) throw owner.Fault($"a {what} of {n} bytes runs past the end of the file");
            return Encoding.UTF8.GetString(r.ReadBytes((int)n));
        }

        public object Value(uint type, string key)
        {
            switch (type)
            {
                case 0: Need(1, key); return r.ReadByte();
                case 1: Need(1, key); return r.ReadSByte();
                case 2: Need(2, key); return r.ReadUInt16();
                case 3: Need(2, key); return r.ReadInt16();
                case 4: Need(4, key); return r.ReadUInt32();
                case 5: Need(4, key); return r.ReadInt32();
                case 6: Need(4, key); return r.ReadSingle();
                case 7: Need(1, key); return r.ReadByte() != 0;
                case 8: return String($"value of '{key}'");
                case 9:
                    uint itemType = UInt32();
                    if (itemType == 9) throw owner.Fault($"'{key}' is an array of arrays");
                    int size = itemType switch { 0 or 1 or 7 => 1, 2 or 3 => 2, 4 or 5 or 6 => 4, 8 or 10 or 11 or 12 => 8, _ => throw owner.Fault($"'{key}' has unknown item type {itemType}") };
                    long n = Count(size, $"'{key}' item count");
                    var items = new object[n];
                    for (long i = 0; i < n; i++) items[i] = Value(itemType, key);
                    return items;
                case 10: Need(8, key); return r.ReadUInt64();
                case 11: Need(8, key); return r.ReadInt64();
                case 12: Need(8, key); return r.ReadDouble();
                default: throw owner.Fault($"'{key}' has unknown value type {type}");
            }
        }
    }
}
