// Writes a GGUF file (version 3), the format llama.cpp, Ollama and LM Studio load: the magic "GGUF", the
// version, the tensor and key counts, typed key/value metadata, then each tensor's name, dimensions
// (innermost first, as ggml's ne[]), ggml type and offset, and the tensor data, each tensor aligned to
// general.alignment (32 bytes). Tensors are given by their shape in row-major order (outermost first, as
// safetensors and torch hold them) and a callback that writes their bytes when the data section reaches them,
// so a model is written one tensor at a time. The file is written to a temp file and renamed (AtomicFile).
using System.Text;

namespace Temper.Core.Gguf;

/// <summary>ggml's tensor types (ggml.h's enum ggml_type) that Temper writes (F32, F16, BF16, Q8) or reads (all, GgmlDequant):
/// Q40, Q41, Q50, Q51 and Q8 are GGML_TYPE_Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0; Q2K..Q6K are GGML_TYPE_Q2_K..Q6_K.</summary>
public enum GgmlType : uint
{
    F32 = 0, F16 = 1, Q40 = 2, Q41 = 3, Q50 = 6, Q51 = 7, Q8 = 8,
    Q2K = 10, Q3K = 11, Q4K = 12, Q5K = 13, Q6K = 14, BF16 = 30,
}

public sealed class GgufWriter
{
    public const int Alignment = 32;
    private enum ValueType : uint { UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9 }

    private readonly List<(string Key, Action<BinaryWriter> Write)> _metadata = [];
    private readonly List<(string Name, long[] Shape, GgmlType Type, Action<Stream> Write)> _tensors = [];

    public void Add(string key, string value) => AddValue(key, w => { w.Write((uint)ValueType.String); WriteString(w, value); });
    public void Add(string key, uint value) => AddValue(key, w => { w.Write((uint)ValueType.UInt32); w.Write(value); });
    public void Add(string key, int value) => AddValue(key, w => { w.Write((uint)ValueType.Int32); w.Write(value); });
    public void Add(string key, float value) => AddValue(key, w => { w.Write((uint)ValueType.Float32); w.Write(value); });
    public void Add(string key, bool value) => AddValue(key, w => { w.Write((uint)ValueType.Bool); w.Write(value ? (byte)1 : (byte)0); });

    public void Add(string key, IReadOnlyList<string> values) => AddArray(key, ValueType.String, values.Count, w => { foreach (var v in values) WriteString(w, v); });
    public void Add(string key, IReadOnlyList<int> values) => AddArray(key, ValueType.Int32, values.Count, w => { foreach (var v in values) w.Write(v); });
    public void Add(string key, IReadOnlyList<float> values) => AddArray(key, ValueType.Float32, values.Count, w => { foreach (var v in values) w.Write(v); });

    /// <summary>A tensor of the given row-major shape whose ByteCount(shape, type) bytes write(stream) writes.</summary>
    public void AddTensor(string name, long[] shape, GgmlType type, Action<Stream> write)
    {
        if (_tensors.Any(t => t.Name == name)) throw new TemperException($"GGUF: tensor '{name}' added twice");
        if (type == GgmlType.Q8 && shape[^1] % GgmlQuant.Q8BlockSize != 0)
            throw new TemperException($"GGUF: tensor '{name}' rows of {shape[^1]} are not whole Q8_0 blocks of {GgmlQuant.Q8BlockSize}");
        _tensors.Add((name, shape, type, write));
    }

    public int TensorCount => _tensors.Count;

    public static long ByteCount(long[] shape, GgmlType type)
    {
        long n = shape.Aggregate(1L, (a, b) => checked(a * b));
        return type switch
        {
            GgmlType.F32 => n * 4,
            GgmlType.F16 or GgmlType.BF16 => n * 2,
            GgmlType.Q8 => n / GgmlQuant.Q8BlockSize * GgmlQuant.Q8BlockBytes,
            _ => throw new ArgumentOutOfRangeException(nameof(type)),
        };
    }

    /// <summary>Writes the file at path (through a temp file renamed over it); returns its length. progress(done, total)
    /// is called after each tensor.</summary>
    public long Write(string path, Action<int, int>? progress = null)
    {
        AtomicFile.Write(path, s => Write(s, progress));
        return new FileInfo(path).Length;
    }

    public void Write(Stream stream, Action<int, int>? progress = null)
    {
        long origin = stream.Position;
        using var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write("GGUF"u8);
        w.Write(3u);
        w.Write((ulong)_tensors.Count);
        w.Write((ulong)_metadata.Count + 1);
        AddValueTo(w, "general.alignment", x => { x.Write((uint)ValueType.UInt32); x.Write((uint)Alignment); });
        foreach (var (key, write) in _metadata) AddValueTo(w, key, write);
        long offset = 0;
        foreach (var (name, shape, type, _) in _tensors)
        {
            WriteString(w, name);
            w.Write((uint)shape.Length);
            for (int d = shape.Length - 1; d >= 0; d--) w.Write((ulong)shape[d]);
            w.Write((uint)type);
            w.Write((ulong)offset);
            offset = Align(offset + ByteCount(shape, type));
        }
        w.Flush();
        Pad(stream, stream.Position - origin);
        long start = stream.Position;
        int done = 0;
        foreach (var (name, shape, type, write) in _tensors)
        {
            long before = stream.Position;
            write(stream);
            long written = stream.Position - before;
            if (written != ByteCount(shape, type)) throw new InvalidOperationException($"GGUF: tensor '{name}' wrote {written} bytes, {ByteCount(shape, type)} expected");
            Pad(stream, stream.Position - start);
            progress?.Invoke(++done, _tensors.Count);
        }
    }

    private void AddValue(string key, Action<BinaryWriter> write)
    {
        if (key == "general.alignment" || _metadata.Any(m => m.Key == key)) throw new TemperException($"GGUF: key '{key}' set twice");
        _metadata.Add((key, write));
    }

    private void AddArray(string key, ValueType type, int count, Action<BinaryWriter> items) =>
        AddValue(key, w => { w.Write((uint)ValueType.Array); w.Write((uint)type); w.Write((ulong)count); items(w); });

    private static void AddValueTo(BinaryWriter w, string key, Action<BinaryWriter> write)
    {
        WriteString(w, key);
        write(w);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static long Align(long n) => (n + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream s, long position)
    {
        int pad = (int)(Align(position) - position);
        if (pad > 0) s.Write(new byte[pad]);
    }
}
