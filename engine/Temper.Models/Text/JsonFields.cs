// Small readers for optional fields of tokenizer.json objects, with HF's defaults supplied by the caller.
using System.Text.Json;

namespace Temper.Models.Text;

internal static class JsonFields
{
    public static JsonElement? Optional(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    public static string TypeOf(JsonElement e, string what) =>
        e.ValueKind == JsonValueKind.Object && Str(e, "type") is { } t ? t : throw new InvalidDataException($"a {what} has no 'type'");

    public static string? Str(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public static bool Bool(JsonElement obj, string name, bool fallback) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;

    public static int Int(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.TryGetInt32(out int i) ? i : 0;

    public static char SingleChar(JsonElement obj, string name, string what) =>
        Str(obj, name) is { Length: 1 } s ? s[0] : throw new NotSupportedException($"{what} '{name}' is not a single char");

    public static IEnumerable<JsonElement> Items(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array
            ? v.EnumerateArray().ToList()
            : throw new InvalidDataException($"'{name}' is missing or not an array");
}
