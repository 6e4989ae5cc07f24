// Writes host tensors to a .safetensors file, atomically: the bytes go to "<path>.tmp-<random>",
// are flushed to disk, and the temporary file is renamed over <path>, so a reader never sees half a
// file and a failed write leaves nothing behind.
//
// Layout, as the reference implementation (huggingface/safetensors) writes it and requires to read:
// - the header is compact JSON ("__metadata__" first, then the tensors in the given order), padded
//   with spaces to a multiple of 8 bytes, so the data section starts 8-byte aligned;
// - the data section is contiguous, with no gaps: the reference reader rejects a gap between
//   tensors ("InvalidOffset") or after the last one, so tensors cannot be padded to 8 bytes each.
//   Instead the data are laid out widest dtype first (stable: the given order within one width),
//   which puts every tensor at an offset that is a multiple of its element size; PyTorch needs that
//   to view the bytes as the dtype. When all tensors have one width the data follow the given order.
using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;
using static Temper.Core.SafeTensors.SafetensorsErrors;

namespace Temper.Core.SafeTensors;

public static class SafetensorsWriter
{
    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        string full = Path.GetFullPath(path);
        foreach (var (name, tensor) in list)
            if (!tensor.IsHost) throw InTensor(full, name, $"lives on {tensor.Storage.Device?.Name}; copy it to the host before writing");
        Write(path, list.Select(kv => (kv.Key, kv.Value.Shape, kv.Value.DType)).ToList(), i => list[i].Value, metadata, disposeProduced: false);
    }

    /// <summary>Streams tensors known up front by name, shape and dtype: produce(i) makes entry i's host tensor when the
    /// data section reaches it (widest dtype first, as above), and it is disposed once written, so one tensor at a time
    /// is in memory (a model far larger than the memory can be written).</summary>
    public static void Write(string path, IReadOnlyList<(string Name, Shape Shape, DType DType)> entries, Func<int, Tensor> produce,
        IReadOnlyDictionary<string, string>? metadata = null) => Write(path, entries, produce, metadata, disposeProduced: true);

    private static void Write(string path, IReadOnlyList<(string Name, Shape Shape, DType DType)> entries, Func<int, Tensor> produce,
        IReadOnlyDictionary<string, string>? metadata, bool disposeProduced)
    {
        string full = Path.GetFullPath(path);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, _, dtype) in entries)
        {
            if (name == "__metadata__") throw InTensor(full, name, "the name is reserved for the header's metadata");
            if (!names.Add(name)) throw InTensor(full, name, "given twice");
            try { _ = dtype.SafetensorsName(); }
            catch (TemperException) { throw InTensor(full, name, $"dtype {dtype} has no safetensors form"); }
        }

        // Widest first (OrderByDescending is stable), offsets contiguous.
        var dataOrder = Enumerable.Range(0, entries.Count).OrderByDescending(i => entries[i].DType.Bits()).ToList();
        var offsets = new (long Begin, long End)[entries.Count];
        long offset = 0;
        foreach (int i in dataOrder)
        {
            long end = checked(offset + entries[i].DType.ByteCount(entries[i].Shape.Elements));
            offsets[i] = (offset, end);
            offset = end;
        }

        byte[] header = HeaderBytes(entries, offsets, metadata);
        try
        {
            AtomicFile.Write(full, stream =>
            {
                var length = new byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
                stream.Write(length);
                stream.Write(header);
                foreach (int i in dataOrder)
                {
                    var t = produce(i);
                    try
                    {
                        if (!t.IsHost || t.Shape != entries[i].Shape || t.DType != entries[i].DType)
                            throw InTensor(full, entries[i].Name, $"made as {t.DType} {t.Shape}, announced as {entries[i].DType} {entries[i].Shape}");
                        stream.Write(t.Bytes);
                    }
                    finally
                    {
                        if (disposeProduced) t.Dispose();
                    }
                }
            });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw InFile(full, $"cannot write: {e.Message}");
        }
    }

    /// <summary>The header JSON, space padded to a multiple of 8 bytes.</summary>
    private static byte[] HeaderBytes(IReadOnlyList<(string Name, Shape Shape, DType DType)> entries, (long Begin, long End)[] offsets, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        // Relaxed escaping keeps names such as "a+b" readable; the header is never embedded in HTML.
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata) json.WriteString(key, value);
                json.WriteEndObject();
            }
            for (int i = 0; i < entries.Count; i++)
            {
                var (name, shape, dtype) = entries[i];
                json.WriteStartObject(name);
                json.WriteString("dtype", dtype.SafetensorsName());
                json.WriteStartArray("shape");
                foreach (int d in shape.Dims) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offsets[i].Begin);
                json.WriteNumberValue(offsets[i].End);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        int padded = (buffer.WrittenCount + 7) / 8 * 8;
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }
}
