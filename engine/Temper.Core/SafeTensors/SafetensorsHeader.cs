// Parses and validates the JSON header of a safetensors file:
//   { "__metadata__": {"k": "v", ...},                                 (optional, strings only)
//     "<name>": {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}, ... }
// with offsets relative to the data section. It reads with Utf8JsonReader straight over the mapped
// bytes, because System.Text.Json's DOM keeps the last of two duplicate keys silently, and a
// duplicate tensor name is an error here. Every check names the file and, where there is one, the
// tensor. Unknown fields inside an entry are skipped, as the reference implementation does.
using System.Text.Json;
using System.Text.Unicode;
using static Temper.Core.SafeTensors.SafetensorsErrors;

namespace Temper.Core.SafeTensors;

internal static class SafetensorsHeader
{
    /// <summary>The largest header accepted (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public static (List<SafetensorsEntry> Entries, Dictionary<string, string> Metadata) Parse(string path, ReadOnlySpan<byte> json, long dataLength)
    {
        if (!Utf8.IsValid(json)) throw InFile(path, "header is not valid UTF-8");
        var entries = new List<SafetensorsEntry>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        Dictionary<string, string>? metadata = null;
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
        try
        {
            if (!reader.Read()) throw InFile(path, "header is empty");
            if (reader.TokenType != JsonTokenType.StartObject)
                throw InFile(path, $"header is not a JSON object (it holds {reader.TokenType})");
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                string key = reader.GetString()!;
                reader.Read();
                if (key == "__metadata__")
                {
                    if (metadata != null) throw InFile(path, "duplicate __metadata__ in header");
                    metadata = ReadMetadata(path, ref reader);
                    continue;
                }
                if (!names.Add(key)) throw InTensor(path, key, "duplicate tensor name in header");
                entries.Add(ReadEntry(path, key, ref reader, dataLength));
            }
            if (reader.Read()) throw InFile(path, "header has content after its JSON object");
        }
        catch (JsonException e)
        {
            throw InFile(path, $"header is not valid JSON: {e.Message}");
        }
        CheckNoOverlaps(path, entries);
        return (entries, metadata ?? []);
    }

    private static Dictionary<string, string> ReadMetadata(string path, ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw InFile(path, "__metadata__ is not a JSON object of strings");
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            string key = reader.GetString()!;
            reader.Read();
            if (reader.TokenType != JsonTokenType.String) throw InFile(path, $"__metadata__ value of '{key}' is {reader.TokenType}, not a string");
            if (!metadata.TryAdd(key, reader.GetString()!)) throw InFile(path, $"duplicate __metadata__ key '{key}'");
        }
        return metadata;
    }

    private static SafetensorsEntry ReadEntry(string path, string name, ref Utf8JsonReader reader, long dataLength)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw InTensor(path, name, $"entry is {reader.TokenType}, not a JSON object");
        DType? dtype = null;
        int[]? shape = null;
        long[]? offsets = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            string field = reader.GetString()!;
            reader.Read();
            switch (field)
            {
                case "dtype":
                    if (dtype != null) throw InTensor(path, name, "duplicate field dtype");
                    if (reader.TokenType != JsonTokenType.String) throw InTensor(path, name, $"dtype is {reader.TokenType}, not a string");
                    string spelled = reader.GetString()!;
                    if (!DTypeInfo.TryParseSafetensors(spelled, out var parsed)) throw InTensor(path, name, $"unknown dtype '{spelled}'");
                    dtype = parsed;
                    break;
                case "shape":
                    if (shape != null) throw InTensor(path, name, "duplicate field shape");
                    shape = ReadShape(path, name, ref reader);
                    break;
                case "data_offsets":
                    if (offsets != null) throw InTensor(path, name, "duplicate field data_offsets");
                    offsets = ReadOffsets(path, name, ref reader);
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }
        if (dtype == null) throw InTensor(path, name, "missing dtype");
        if (shape == null) throw InTensor(path, name, "missing shape");
        if (offsets == null) throw InTensor(path, name, "missing data_offsets");

        long begin = offsets[0], end = offsets[1];
        string range = $"data_offsets [{begin},{end}]";
        if (begin > end) throw InTensor(path, name, $"{range} has begin after end");
        if (end > dataLength) throw InTensor(path, name, $"{range} lie outside the data section of {dataLength} bytes");
        long need;
        try
        {
            long elements = 1;
            foreach (int d in shape) elements = checked(elements * d);
            need = checked(elements * (dtype.Value.Bits() / 8));
        }
        catch (OverflowException)
        {
            throw InTensor(path, name, $"shape {new Shape(shape)} of {dtype.Value.SafetensorsName()} overflows a 64-bit byte count");
        }
        if (end - begin != need)
            throw InTensor(path, name, $"{range} span {end - begin} bytes but shape {new Shape(shape)} of {dtype.Value.SafetensorsName()} needs {need}");
        return new SafetensorsEntry(name, dtype.Value, new Shape(shape), begin, end);
    }

    private static int[] ReadShape(string path, string name, ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartArray) throw InTensor(path, name, $"shape is {reader.TokenType}, not an array of integers");
        var dims = new List<int>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long d))
                throw InTensor(path, name, $"shape has a non-integer dimension ({TokenText(ref reader)})");
            if (d < 0) throw InTensor(path, name, $"shape has a negative dimension ({d})");
            if (d > int.MaxValue) throw InTensor(path, name, $"shape dimension {d} exceeds {int.MaxValue}");
            dims.Add((int)d);
        }
        return [.. dims];
    }

    private static long[] ReadOffsets(string path, string name, ref Utf8JsonReader reader)
    {
        const string Expected = "data_offsets must be [begin, end], two non-negative integers";
        if (reader.TokenType != JsonTokenType.StartArray) throw InTensor(path, name, Expected);
        var values = new List<long>(2);
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long v) || v < 0)
                throw InTensor(path, name, $"{Expected} ({TokenText(ref reader)})");
            values.Add(v);
        }
        if (values.Count != 2) throw InTensor(path, name, $"{Expected} (it has {values.Count} values)");
        return [.. values];
    }

    // The offending token as it appears in the header (a string in quotes), cut to 64 bytes.
    private static string TokenText(ref Utf8JsonReader reader)
    {
        if (reader.TokenType is not (JsonTokenType.Number or JsonTokenType.String)) return reader.TokenType.ToString();
        var raw = reader.ValueSpan.Length > 64 ? reader.ValueSpan[..64] : reader.ValueSpan;
        string text = System.Text.Encoding.UTF8.GetString(raw);
        return reader.TokenType == JsonTokenType.String ? $"\"{text}\"" : text;
    }

    // Two tensors must not share bytes. Empty tensors occupy nothing and cannot overlap.
    private static void CheckNoOverlaps(string path, List<SafetensorsEntry> entries)
    {
        var byBegin = entries.Where(e => e.End > e.Begin).OrderBy(e => e.Begin).ToList();
        for (int i = 1; i < byBegin.Count; i++)
        {
            var previous = byBegin[i - 1];
            var current = byBegin[i];
            if (current.Begin < previous.End)
                throw InTensor(path, current.Name,
                    $"data_offsets [{current.Begin},{current.End}] overlap tensor '{previous.Name}' [{previous.Begin},{previous.End}]");
        }
    }
}
