// Structured output fields of a request: OpenAI's response_format ({"type": "text"}, {"type": "json_object"},
// {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}) and vLLM's guided_json (a schema, as an
// object or as JSON text). Each becomes the served model's JsonConstraint (compiled once per distinct schema,
// the json_object one shared), so its mask cache serves every request that asks the same. A schema the
// compiler does not take is a TemperException naming the field and the keyword (HTTP 400).
using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Constrained;

namespace Temper.Serving.Http;

internal static class ResponseFormat
{
    /// <summary>The constraint a request body asks for; null for free text.</summary>
    public static JsonConstraint? Parse(JsonObject body, ServedModel m)
    {
        JsonNode? schema = null;
        bool json = false;
        string field = "'response_format'";
        switch (body["response_format"])
        {
            case null:
                break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.Null:
                break;
            case JsonObject rf:
                string type = rf["type"] is JsonValue t && t.GetValueKind() == JsonValueKind.String ? t.GetValue<string>()
                    : throw new TemperException("'response_format' needs a 'type' (text, json_object or json_schema)");
                if (type == "text") break;
                json = true;
                if (type == "json_object") break;
                if (type != "json_schema") throw new TemperException($"'response_format' type '{type}' is not supported (text, json_object or json_schema)");
                if (rf["json_schema"] is not JsonObject js) throw new TemperException("'response_format' json_schema needs a 'json_schema' object");
                schema = js["schema"] ?? throw new TemperException("'response_format' json_schema needs 'json_schema.schema'");
                field = "'response_format.json_schema.schema'";
                break;
            default:
                throw new TemperException("'response_format' must be an object");
        }
        if (body["guided_json"] is { } guided && guided.GetValueKind() != JsonValueKind.Null)
        {
            if (json) throw new TemperException("give either 'response_format' or 'guided_json', not both");
            json = true;
            schema = guided.GetValueKind() == JsonValueKind.String ? ParseText(guided.GetValue<string>()) : guided;
            field = "'guided_json'";
        }
        if (!json) return null;
        try
        {
            return schema == null ? m.JsonObjectConstraint : m.SchemaConstraint(schema.ToJsonString());
        }
        catch (TemperException e)
        {
            throw new TemperException($"{field}: {e.Message}");
        }
    }

    private static JsonNode ParseText(string text)
    {
        try { return JsonNode.Parse(text) ?? throw new TemperException("'guided_json' is null"); }
        catch (JsonException e) { throw new TemperException($"'guided_json' is not valid JSON: {e.Message}"); }
    }
}

/// <summary>A served model's compiled constraints, by schema text (16 kept, each with up to 8 MB of cached masks; json_object's always). The
/// vocabulary (a byte trie over every token: about 2 s for 200k tokens on 2 cores) is built at the first use.</summary>
internal sealed class ConstraintCache
{
    private const int Limit = 16;
    private readonly Lazy<TokenVocabulary> _vocabulary;
    private readonly Lazy<JsonConstraint> _object;
    private readonly ConcurrentDictionary<string, JsonConstraint> _schemas = new(StringComparer.Ordinal);

    public ConstraintCache(Func<TokenVocabulary> vocabulary)
    {
        _vocabulary = new(vocabulary);
        _object = new(() => JsonConstraint.ForObject(_vocabulary.Value));
    }

    public JsonConstraint JsonObject => _object.Value;

    public JsonConstraint Schema(string schemaJson)
    {
        if (_schemas.TryGetValue(schemaJson, out var c)) return c;
        c = JsonConstraint.ForSchema(_vocabulary.Value, schemaJson);
        if (_schemas.Count >= Limit) _schemas.Clear();
        return _schemas.GetOrAdd(schemaJson, c);
    }
}
