// The tool fields of a chat request, read as vLLM reads them:
//   tools        a list of {"type": "function", "function": {"name", "description"?, "parameters"?}}, given to the
//                chat template (which writes them into the prompt in the model's own form).
//   tool_choice  "auto" (the default with tools): the answer may call them; the server finds the calls with its
//                --tool-call-parser, which needs --enable-auto-tool-choice as in vLLM. "none" (the default
//                without tools): the tools are left out of the prompt and the answer is text. A named function
//                ({"type": "function", "function": {"name"}}) or "required": the answer is forced, as vLLM
//                forces it, by JSON-constrained decoding: the named function's arguments (its parameters schema),
//                or a list of at least one {"name", "parameters"} of the tools; no parser is needed for either.
// Assistant messages that carry tool_calls (arguments as JSON text, as OpenAI sends them) reach the template
// with the arguments as objects, which templates such as Llama 3.1's and Qwen2.5's render with tojson.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Serving.Http;

/// <summary>What a request's tool fields ask for: the tools to render (null: none), whether answers are searched for
/// calls (auto), and for a forced choice the schema the answer is constrained to and how it reads as calls.</summary>
internal sealed record ToolPlan(JsonArray? Tools, bool Auto, ForcedTools? Forced)
{
    public static readonly ToolPlan None = new(null, false, null);

    /// <summary>Whether answers are read for calls (auto with the server's parser, or forced).</summary>
    public bool ReadsCalls => Auto || Forced != null;

    /// <summary>A whole answer's content (null when calls replace it) and calls.</summary>
    public (string? Content, IReadOnlyList<ToolCall> Calls) Parse(string text, ToolCallParser? parser)
    {
        if (Auto) return parser!.Parse(text);
        if (Forced?.Calls(text) is { Count: > 0 } calls) return (null, calls);
        return (text, []);
    }

    /// <summary>The call finder of one streamed answer; null when answers are plain text.</summary>
    public IToolCallStream? NewStream(ToolCallParser? parser) => Auto ? parser!.NewStream() : Forced != null ? new ForcedStream(Forced) : null;

    // A forced answer is held whole and read as calls at its end (or sent as content if it was cut off).
    private sealed class ForcedStream(ForcedTools forced) : IToolCallStream
    {
        private readonly System.Text.StringBuilder _text = new();

        public (string Content, IReadOnlyList<ToolCall> Calls) Push(string delta, bool last = false)
        {
            _text.Append(delta);
            if (!last) return ("", []);
            var calls = forced.Calls(_text.ToString());
            return calls.Count > 0 ? ("", calls) : (_text.ToString(), []);
        }
    }
}

/// <summary>A forced tool choice: one named function (the answer is its arguments) or any of them ("required": the
/// answer is a list of {"name", "parameters"}); Schema is the JSON Schema text the answer is constrained to.</summary>
internal sealed record ForcedTools(string? Function, string Schema)
{
    /// <summary>The calls a forced answer (constrained to Schema) makes; none when it is not whole (cut by max_tokens).</summary>
    public IReadOnlyList<ToolCall> Calls(string text)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(text); }
        catch (JsonException) { return []; }
        if (Function != null) return [new ToolCall(ToolCallParser.NewId(), Function, node?.ToJsonString(ToolCallParser.Compact) ?? "null")];
        return node is JsonArray list
            ? [.. list.OfType<JsonObject>().Select(c => new ToolCall(ToolCallParser.NewId(), (string)c["name"]!, c["parameters"]?.ToJsonString(ToolCallParser.Compact) ?? "null"))]
            : [];
    }
}

internal static class ToolRequest
{
    /// <summary>The request's tool plan; refuses a bad tools list or tool_choice. <paramref name="autoEnabled"/>: the server
    /// has a tool call parser (needed for "auto" only).</summary>
    public static ToolPlan Plan(JsonObject body, bool autoEnabled)
    {
        var tools = body["tools"] switch
        {
            null => null,
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
            JsonArray a => a,
            _ => throw new TemperException("'tools' must be an array of {\"type\": \"function\", \"function\": {...}}"),
        };
        for (int i = 0; i < (tools?.Count ?? 0); i++) Check(tools![i], $"tools[{i}]");
        bool any = tools is { Count: > 0 };
        string? named = null;
        string choice = body["tool_choice"] switch
        {
            null => any ? "auto" : "none",
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => any ? "auto" : "none",
            JsonValue v when v.GetValueKind() == JsonValueKind.String && v.GetValue<string>() is "none" or "auto" or "required" => v.GetValue<string>(),
            JsonObject o when o["function"] is JsonObject f && f["name"] is JsonValue n && n.GetValueKind() == JsonValueKind.String => Named(named = n.GetValue<string>()),
            _ => throw new TemperException("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}"),
        };
        if (choice == "none") return ToolPlan.None;
        if (!any) throw new TemperException($"'tool_choice' {choice} needs 'tools'");
        var functions = tools!.Select(t => t!["function"]!.AsObject()).ToList();
        JsonNode Parameters(JsonObject f) => f["parameters"] is JsonObject p ? p.DeepClone() : new JsonObject { ["type"] = "object" };
        if (choice == "named")
        {
            var f = functions.FirstOrDefault(x => (string)x["name"]! == named)
                ?? throw new TemperException($"'tool_choice' names function '{named}', which is not in 'tools'");
            return new ToolPlan(tools, false, new ForcedTools(named, Parameters(f).ToJsonString()));
        }
        if (choice == "required")
        {
            var each = functions.Select(f => (JsonNode)new JsonObject
            {
                ["type"] = "object",
                ["properties"] = new JsonObject { ["name"] = new JsonObject { ["type"] = "string", ["enum"] = new JsonArray((string)f["name"]!) }, ["parameters"] = Parameters(f) },
                ["required"] = new JsonArray("name", "parameters"),
                ["additionalProperties"] = false,
            });
            var schema = new JsonObject { ["type"] = "array", ["minItems"] = 1, ["items"] = new JsonObject { ["anyOf"] = new JsonArray([.. each]) } };
            return new ToolPlan(tools, false, new ForcedTools(null, schema.ToJsonString()));
        }
        if (!autoEnabled) throw new TemperException("\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set");
        return new ToolPlan(tools, true, null);
    }

    private static string Named(string name) => name.Length > 0 ? "named" : throw new TemperException("'tool_choice.function.name' must not be empty");

    private static void Check(JsonNode? tool, string where)
    {
        if (tool is not JsonObject t) throw new TemperException($"'{where}' must be an object");
        if (t["type"] is JsonNode type && (type.GetValueKind() != JsonValueKind.String || type.GetValue<string>() != "function"))
            throw new TemperException($"'{where}.type' must be \"function\"");
        if (t["function"] is not JsonObject f) throw new TemperException($"'{where}.function' must be an object");
        if (f["name"] is not JsonValue name || name.GetValueKind() != JsonValueKind.String || name.GetValue<string>().Length == 0)
            throw new TemperException($"'{where}.function.name' must be a non-empty string");
        if (f["parameters"] is JsonNode p && p is not JsonObject && p.GetValueKind() != JsonValueKind.Null)
            throw new TemperException($"'{where}.function.parameters' must be a JSON Schema object");
    }

    /// <summary>An assistant message's tool_calls: each function's arguments parsed from JSON text into the value
    /// the template renders (in place); <paramref name="where"/> names the message in errors.</summary>
    public static void ParseArguments(JsonObject message, string where)
    {
        if (message["tool_calls"] is not JsonNode calls || calls.GetValueKind() == JsonValueKind.Null) return;
        if (calls is not JsonArray list) throw new TemperException($"'{where}.tool_calls' must be an array");
        for (int j = 0; j < list.Count; j++)
        {
            string at = $"{where}.tool_calls[{j}]";
            if (list[j] is not JsonObject call || call["function"] is not JsonObject f || f["name"] is not JsonValue)
                throw new TemperException($"'{at}' must be {{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}");
            if (f["arguments"] is not JsonValue a || a.GetValueKind() != JsonValueKind.String) continue; // already an object, as some clients send
            try { f["arguments"] = JsonNode.Parse(a.GetValue<string>()); }
            catch (JsonException e) { throw new TemperException($"'{at}.function.arguments' is not valid JSON: {e.Message.Split('\n')[0]}"); }
        }
    }
}
