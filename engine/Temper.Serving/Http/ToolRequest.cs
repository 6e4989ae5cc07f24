// The tool fields of a chat request, read as vLLM reads them:
//   tools        a list of {"type": "function", "function": {"name", "description"?, "parameters"?}}, given to the
//                chat template (which writes them into the prompt in the model's own form).
//   tool_choice  "auto" (the default with tools): the answer may call them; the server finds the calls with its
//                --tool-call-parser, which needs --enable-auto-tool-choice as in vLLM. "none" (the default
//                without tools): the tools are left out of the prompt and the answer is text. "required" and
//                a named function (vLLM forces them by guided decoding) are refused.
// Assistant messages that carry tool_calls (arguments as JSON text, as OpenAI sends them) reach the template
// with the arguments as objects, which templates such as Llama 3.1's and Qwen2.5's render with tojson.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Serving.Http;

internal static class ToolRequest
{
    /// <summary>The tools to render (null: none), and whether answers are to be searched for calls; refuses a bad
    /// tools list or tool_choice. <paramref name="autoEnabled"/>: the server has a tool call parser.</summary>
    public static JsonArray? Tools(JsonObject body, bool autoEnabled, out bool parseCalls)
    {
        parseCalls = false;
        var tools = body["tools"] switch
        {
            null => null,
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
            JsonArray a => a,
            _ => throw new TemperException("'tools' must be an array of {\"type\": \"function\", \"function\": {...}}"),
        };
        for (int i = 0; i < (tools?.Count ?? 0); i++) Check(tools![i], $"tools[{i}]");
        bool any = tools is { Count: > 0 };
        string choice = body["tool_choice"] switch
        {
            null => any ? "auto" : "none",
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => any ? "auto" : "none",
            JsonValue v when v.GetValueKind() == JsonValueKind.String && v.GetValue<string>() is "none" or "auto" or "required" => v.GetValue<string>(),
            JsonObject o when o["function"] is JsonObject f && f["name"] is JsonValue n && n.GetValueKind() == JsonValueKind.String => "named",
            _ => throw new TemperException("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}"),
        };
        if (choice == "none") return null;
        if (!any) throw new TemperException($"'tool_choice' {choice} needs 'tools'");
        if (choice != "auto")
            throw new TemperException($"'tool_choice' {(choice == "named" ? "naming a function" : "\"required\"")} is not supported by this server; use \"auto\"");
        if (!autoEnabled) throw new TemperException("\"auto\" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set");
        parseCalls = true;
        return tools;
    }

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
