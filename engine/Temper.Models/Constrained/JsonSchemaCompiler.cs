// Compiles the JSON Schema subset structured output takes (what OpenAI's strict mode and vLLM/xgrammar's
// JSON schemas use) into a JsonSpec: type (a name or a list, e.g. ["string", "null"]); object with
// properties (written in the schema's order), required, and additionalProperties (absent or false beside
// properties: no other keys, as strict mode implies; true or a schema without properties: a map of any
// keys); array with items, minItems, maxItems; string with minLength, maxLength; integer, number,
// boolean, null; enum and const (their values written compactly); anyOf (oneOf read as anyOf); $ref to
// "#/..." (e.g. #/$defs/X, #/definitions/X), recursion included as long as an object or array lies
// between. Annotations (title, description, default, examples, $schema, $id, $comment) are ignored;
// any other keyword (pattern, format, minimum, allOf, ...) is refused with a TemperException naming it,
// never silently dropped.
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Temper.Models.Constrained;

internal static class JsonSchemaCompiler
{
    private static readonly HashSet<string> Annotations = ["title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly"];
    private static readonly HashSet<string> Known = ["type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "$ref", "$defs", "definitions"];
    private static readonly string[] TypeNames = ["object", "array", "string", "integer", "number", "boolean", "null"];

    /// <summary>A string as compact JSON, non-ASCII kept as it is (what a model writes).</summary>
    public static string Compact(string s) => Write(w => w.WriteStringValue(s));

    private static string Compact(JsonElement e) => Write(e.WriteTo);

    private static string Write(Action<Utf8JsonWriter> write)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping })) write(w);
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    public static JsonSpec Compile(JsonElement root)
    {
        var refs = new Dictionary<string, JsonSpec>(StringComparer.Ordinal);
        var spec = Node(root, root, "#", refs);
        CheckNoEmptyCycle(spec);
        return spec;
    }

    private static Core.TemperException Error(string path, string message) => new($"JSON schema at {path}: {message}");

    private static JsonSpec Node(JsonElement s, JsonElement root, string path, Dictionary<string, JsonSpec> refs)
    {
        if (s.ValueKind == JsonValueKind.True) return JsonSpec.Any();
        if (s.ValueKind == JsonValueKind.False) throw Error(path, "the schema false allows nothing");
        if (s.ValueKind != JsonValueKind.Object) throw Error(path, $"a schema must be an object or a boolean (got {s.ValueKind})");
        foreach (var p in s.EnumerateObject())
            if (!Known.Contains(p.Name) && !Annotations.Contains(p.Name))
                throw Error(path, $"the keyword '{p.Name}' is not supported by structured output");
        var constraints = s.EnumerateObject().Select(p => p.Name).Where(n => Known.Contains(n) && n is not ("$defs" or "definitions")).ToList();

        if (s.TryGetProperty("$ref", out var r))
        {
            if (constraints.Count > 1) throw Error(path, $"'$ref' beside other keywords ({string.Join(", ", constraints.Where(c => c != "$ref"))}) is not supported");
            return Ref(r, root, path, refs);
        }
        if (s.TryGetProperty("anyOf", out var any) || s.TryGetProperty("oneOf", out any))
        {
            string key = s.TryGetProperty("anyOf", out _) ? "anyOf" : "oneOf";
            if (constraints.Count > 1) throw Error(path, $"'{key}' beside other keywords ({string.Join(", ", constraints.Where(c => c != key))}) is not supported");
            if (any.ValueKind != JsonValueKind.Array || any.GetArrayLength() == 0) throw Error(path, $"'{key}' must be a non-empty array");
            var union = new JsonSpec { Kind = SpecKind.Union };
            int i = 0;
            foreach (var alt in any.EnumerateArray()) union.Alternatives.Add(Node(alt, root, $"{path}/{key}/{i++}", refs));
            return union.Alternatives.Count == 1 ? union.Alternatives[0] : union;
        }
        if (s.TryGetProperty("const", out var c)) return JsonSpec.LiteralsOf(Compact(c));
        if (s.TryGetProperty("enum", out var e))
        {
            if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() == 0) throw Error(path, "'enum' must be a non-empty array");
            return JsonSpec.LiteralsOf(e.EnumerateArray().Select(Compact).Distinct().ToArray());
        }

        List<string> types;
        if (s.TryGetProperty("type", out var t))
        {
            types = t.ValueKind switch
            {
                JsonValueKind.String => [t.GetString()!],
                JsonValueKind.Array when t.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String) => t.EnumerateArray().Select(x => x.GetString()!).Distinct().ToList(),
                _ => throw Error(path, "'type' must be a type name or an array of them"),
            };
            foreach (var name in types)
                if (!TypeNames.Contains(name)) throw Error(path, $"unknown type '{name}' (one of {string.Join(", ", TypeNames)})");
            if (types.Count == 0) throw Error(path, "'type' is an empty array");
        }
        else if (s.TryGetProperty("properties", out _) || s.TryGetProperty("additionalProperties", out _)) types = ["object"];
        else if (s.TryGetProperty("items", out _)) types = ["array"];
        else if (constraints.Count == 0) return JsonSpec.Any();
        else if (s.TryGetProperty("minLength", out _) || s.TryGetProperty("maxLength", out _)) types = ["string"];
        else types = [.. TypeNames];

        var specs = types.Select(type => type switch
        {
            "object" => ObjectNode(s, root, path, refs),
            "array" => ArrayNode(s, root, path, refs),
            "string" => StringNode(s, path),
            "integer" => new JsonSpec { Kind = SpecKind.Integer },
            "number" => new JsonSpec { Kind = SpecKind.Number },
            "boolean" => JsonSpec.LiteralsOf("true", "false"),
            _ => JsonSpec.LiteralsOf("null"),
        }).ToList();
        if (specs.Count == 1) return specs[0];
        var u = new JsonSpec { Kind = SpecKind.Union };
        u.Alternatives.AddRange(specs);
        return u;
    }

    // A $ref to a JSON pointer in this document, compiled once (a placeholder first, so recursion ends).
    private static JsonSpec Ref(JsonElement r, JsonElement root, string path, Dictionary<string, JsonSpec> refs)
    {
        if (r.ValueKind != JsonValueKind.String) throw Error(path, "'$ref' must be a string");
        string target = r.GetString()!;
        if (!target.StartsWith('#')) throw Error(path, $"'$ref' {target}: only references inside the schema (#/$defs/..., #/definitions/...) are supported");
        if (refs.TryGetValue(target, out var known)) return known;
        var at = root;
        foreach (string raw in target.Length <= 1 ? [] : target[2..].Split('/'))
        {
            string part = Uri.UnescapeDataString(raw).Replace("~1", "/", StringComparison.Ordinal).Replace("~0", "~", StringComparison.Ordinal);
            if (at.ValueKind == JsonValueKind.Object && at.TryGetProperty(part, out var child)) at = child;
            else if (at.ValueKind == JsonValueKind.Array && int.TryParse(part, out int index) && index >= 0 && index < at.GetArrayLength()) at = at[index];
            else throw Error(path, $"'$ref' {target} points at nothing");
        }
        var placeholder = new JsonSpec();
        refs[target] = placeholder;
        var compiled = Node(at, root, target, refs);
        if (compiled == placeholder) throw Error(path, $"'$ref' {target} refers to itself");
        Copy(compiled, placeholder);
        return placeholder;
    }

    private static void Copy(JsonSpec from, JsonSpec to)
    {
        to.Kind = from.Kind;
        to.Properties.AddRange(from.Properties);
        to.MapValues = from.MapValues;
        to.Items = from.Items;
        to.MinItems = from.MinItems;
        to.MaxItems = from.MaxItems;
        to.MinLength = from.MinLength;
        to.MaxLength = from.MaxLength;
        to.Literals = from.Literals;
        to.Alternatives.AddRange(from.Alternatives);
    }

    private static JsonSpec ObjectNode(JsonElement s, JsonElement root, string path, Dictionary<string, JsonSpec> refs)
    {
        var spec = new JsonSpec { Kind = SpecKind.Object };
        var required = new HashSet<string>(StringComparer.Ordinal);
        if (s.TryGetProperty("required", out var req))
        {
            if (req.ValueKind != JsonValueKind.Array || req.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.String))
                throw Error(path, "'required' must be an array of property names");
            foreach (var x in req.EnumerateArray()) required.Add(x.GetString()!);
        }
        bool hasProperties = s.TryGetProperty("properties", out var props);
        if (hasProperties)
        {
            if (props.ValueKind != JsonValueKind.Object) throw Error(path, "'properties' must be an object");
            foreach (var p in props.EnumerateObject())
                spec.Properties.Add((p.Name, Node(p.Value, root, $"{path}/properties/{p.Name}", refs), required.Contains(p.Name)));
        }
        foreach (string name in required)
            if (!spec.Properties.Any(p => p.Name == name)) throw Error(path, $"required property '{name}' is not in 'properties'");
        if (s.TryGetProperty("additionalProperties", out var extra) && extra.ValueKind != JsonValueKind.False)
        {
            if (hasProperties && props.EnumerateObject().Any())
                throw Error(path, "'additionalProperties' other than false beside 'properties' is not supported (strict mode: set it to false)");
            spec.MapValues = extra.ValueKind == JsonValueKind.True ? JsonSpec.Any() : Node(extra, root, $"{path}/additionalProperties", refs);
        }
        else if (!hasProperties && extra.ValueKind != JsonValueKind.False) spec.MapValues = JsonSpec.Any(); // {"type": "object"}: any object
        return spec;
    }

    private static JsonSpec ArrayNode(JsonElement s, JsonElement root, string path, Dictionary<string, JsonSpec> refs)
    {
        var spec = new JsonSpec
        {
            Kind = SpecKind.Array,
            Items = s.TryGetProperty("items", out var items) ? Node(items, root, $"{path}/items", refs) : JsonSpec.Any(),
            MinItems = Count(s, "minItems", path) ?? 0,
            MaxItems = Count(s, "maxItems", path) ?? int.MaxValue,
        };
        if (spec.MinItems > spec.MaxItems) throw Error(path, $"minItems {spec.MinItems} > maxItems {spec.MaxItems}");
        return spec;
    }

    private static JsonSpec StringNode(JsonElement s, string path)
    {
        var spec = new JsonSpec { Kind = SpecKind.String, MinLength = Count(s, "minLength", path) ?? 0, MaxLength = Count(s, "maxLength", path) ?? int.MaxValue };
        if (spec.MinLength > spec.MaxLength) throw Error(path, $"minLength {spec.MinLength} > maxLength {spec.MaxLength}");
        return spec;
    }

    private static int? Count(JsonElement s, string key, string path)
    {
        if (!s.TryGetProperty(key, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n) || n < 0) throw Error(path, $"'{key}' must be a non-negative integer");
        return n;
    }

    // A cycle through anyOf/$ref alone (no object or array between) would never read a byte: refuse it.
    private static void CheckNoEmptyCycle(JsonSpec root)
    {
        var done = new HashSet<JsonSpec>();
        var onPath = new HashSet<JsonSpec>();
        var all = new HashSet<JsonSpec>();
        var pending = new Stack<JsonSpec>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            var s = pending.Pop();
            if (!all.Add(s)) continue;
            Visit(s);
            foreach (var child in s.Properties.Select(p => p.Value).Concat(s.Alternatives).Append(s.Items).Append(s.MapValues))
                if (child != null) pending.Push(child);
        }

        void Visit(JsonSpec s)
        {
            if (s.Kind != SpecKind.Union || done.Contains(s)) return;
            if (!onPath.Add(s)) throw new Core.TemperException("JSON schema: a $ref recursion without an object or array between (it would never write anything) is not supported");
            foreach (var alt in s.Alternatives) Visit(alt);
            onPath.Remove(s);
            done.Add(s);
        }
    }
}
