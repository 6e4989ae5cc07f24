// Finds function calls in a chat answer's text, as vLLM's --tool-call-parser does, so that clients get
// message.tool_calls (finish_reason "tool_calls") rather than the call written out as text:
//   hermes       Hermes 2 Pro, Qwen2.5, Qwen3, QwQ: each call is {"name": ..., "arguments": ...} between
//                <tool_call> and </tool_call> (the last may be unclosed at the end of the text); the text
//                before the first tag is content (null when empty); text between and after calls is dropped.
//   llama3_json  Llama 3.1-3.3 JSON tool calling: the answer is one or more {"name": ..., "parameters" (or
//                "arguments"): ...} objects separated by ';' (the <|python_tag|> Llama may put first is a
//                special token, not in the text); content is then null.
//   mistral      Mistral 7B Instruct v0.3 and others of its tokenizer (before v11): [TOOL_CALLS] then a JSON list
//                of {"name": ..., "arguments": ...}; the text before [TOOL_CALLS] is content. [TOOL_CALLS] is a
//                special token, so the answer is decoded keeping it (Marker); call ids are 9 letters and digits,
//                as Mistral's chat templates require of the ids sent back to them.
// A text whose calls do not all parse in that form is all content, as vLLM falls back. Arguments are
// serialised as compact JSON text (OpenAI's form, non-ASCII kept); each call gets an id
// "chatcmpl-tool-<32 hex digits>" as vLLM's (mistral: 9 letters and digits).
// Streaming sends content as it comes, holding back a tail that could begin a call, and each call whole
// (id, name and arguments in one delta) once its closing tag has come (hermes) or at the end (llama3_json,
// mistral).
// A well-formed answer streams to the same content and calls as the whole text parses to; a malformed call
// met while streaming is sent as content, since the calls before it have gone out already.
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Serving.Http;

/// <summary>One function call: its id, the function's name and the arguments as JSON text.</summary>
public sealed record ToolCall(string Id, string Name, string Arguments);

/// <summary>Finds the calls of one streamed answer: each text delta gives the content to send and the calls completed.</summary>
public interface IToolCallStream
{
    /// <summary>The content delta (maybe empty) and the calls the next text delta completes; <paramref name="last"/>
    /// (the answer has finished) also gives back everything held.</summary>
    (string Content, IReadOnlyList<ToolCall> Calls) Push(string delta, bool last = false);
}

public sealed class ToolCallParser
{
    public static readonly string[] Names = ["hermes", "llama3_json", "mistral"];

    private const string Start = "<tool_call>", End = "</tool_call>", MistralMarker = "[TOOL_CALLS]";
    private readonly bool _hermes, _mistral;

    private ToolCallParser(string name)
    {
        Name = name;
        _hermes = name == "hermes";
        _mistral = name == "mistral";
    }

    public string Name { get; }

    /// <summary>The special token the answer must be decoded with (mistral's [TOOL_CALLS]); null: none.</summary>
    public string? Marker => _mistral ? MistralMarker : null;

    public static ToolCallParser Create(string name) => Names.Contains(name)
        ? new(name)
        : throw new TemperException($"--tool-call-parser '{name}' is not one of {string.Join(", ", Names)}");

    /// <summary>The whole answer's content (null when there is none) and calls (empty: the text is all content).</summary>
    public (string? Content, IReadOnlyList<ToolCall> Calls) Parse(string text)
    {
        var calls = _hermes ? HermesCalls(text) : _mistral ? MistralCalls(text) : Llama3Calls(text);
        if (calls == null) return (text, []);
        string? content = _hermes || _mistral ? text[..text.IndexOf(_hermes ? Start : MistralMarker, StringComparison.Ordinal)] : null;
        return (string.IsNullOrEmpty(content) ? null : content, calls);
    }

    /// <summary>A parser for one streamed choice.</summary>
    public Stream NewStream() => new(this);

    // Every <tool_call> body (to </tool_call>, or to the end for the last), or null when there is none or one fails.
    private static List<ToolCall>? HermesCalls(string text)
    {
        int at = text.IndexOf(Start, StringComparison.Ordinal);
        if (at < 0) return null;
        var calls = new List<ToolCall>();
        while (at >= 0)
        {
            int body = at + Start.Length, end = text.IndexOf(End, body, StringComparison.Ordinal);
            if (Call(end < 0 ? text[body..] : text[body..end], "arguments", null) is not { } call) return null;
            calls.Add(call);
            at = end < 0 ? -1 : text.IndexOf(Start, end + End.Length, StringComparison.Ordinal);
        }
        return calls;
    }

    // After the first [TOOL_CALLS] (any further markers removed, as vLLM removes them): a JSON list of calls, else the
    // first "[{" to the last "}]" parsed as one; null when there is no marker or the list does not parse.
    private static List<ToolCall>? MistralCalls(string text)
    {
        int at = text.IndexOf(MistralMarker, StringComparison.Ordinal);
        if (at < 0) return null;
        string rest = text[(at + MistralMarker.Length)..].Replace(MistralMarker, "", StringComparison.Ordinal).Trim();
        if (List(rest) is { } calls) return calls;
        int open = rest.IndexOf("[{", StringComparison.Ordinal), close = rest.LastIndexOf("}]", StringComparison.Ordinal);
        return open >= 0 && close > open ? List(rest[open..(close + 2)]) : null;

        List<ToolCall>? List(string json)
        {
            JsonNode? node;
            try { node = JsonNode.Parse(json); }
            catch (JsonException) { return null; }
            if (node is not JsonArray items) return null;
            var r = new List<ToolCall>();
            foreach (var item in items)
            {
                if (item is not JsonObject o || Call(o, "arguments", null) is not { } call) return null;
                r.Add(call with { Id = MistralId() });
            }
            return r;
        }
    }

    // The objects of "{...}; {...}" filling the whole text (whitespace aside), or null.
    private static List<ToolCall>? Llama3Calls(string text)
    {
        var calls = new List<ToolCall>();
        int i = SkipSpace(text, 0);
        while (true)
        {
            if (i >= text.Length || text[i] != '{') return null;
            int end = ObjectEnd(text, i);
            if (end < 0 || Call(text[i..end], "arguments", "parameters") is not { } call) return null;
            calls.Add(call);
            i = SkipSpace(text, end);
            if (i == text.Length) return calls;
            if (text[i] != ';') return null;
            i = SkipSpace(text, i + 1);
        }
    }

    private static int SkipSpace(string s, int i)
    {
        while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
        return i;
    }

    // The index just past the object that opens at s[start] ('{'), or -1 if it does not close.
    private static int ObjectEnd(string s, int start)
    {
        int depth = 0;
        bool inString = false;
        for (int i = start; i < s.Length; i++)
        {
            char c = s[i];
            if (inString)
            {
                if (c == '\\') i++;
                else if (c == '"') inString = false;
            }
            else if (c == '"') inString = true;
            else if (c == '{' || c == '[') depth++;
            else if ((c == '}' || c == ']') && --depth == 0) return i + 1;
        }
        return -1;
    }

    internal static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    // {"name": string, args: any JSON} (args named argsKey, or altKey) as a call, or null when it is not that.
    private static ToolCall? Call(string json, string argsKey, string? altKey)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (JsonException) { return null; }
        return node is JsonObject o ? Call(o, argsKey, altKey) : null;
    }

    private static ToolCall? Call(JsonObject o, string argsKey, string? altKey)
    {
        if (o["name"] is not JsonValue name || name.GetValueKind() != JsonValueKind.String) return null;
        if (!o.TryGetPropertyValue(argsKey, out var args) && (altKey == null || !o.TryGetPropertyValue(altKey, out args))) return null;
        return new ToolCall(NewId(), name.GetValue<string>(), args?.ToJsonString(Compact) ?? "null");
    }

    /// <summary>vLLM's tool call id form.</summary>
    public static string NewId() => "chatcmpl-tool-" + Guid.NewGuid().ToString("N");

    /// <summary>Mistral's: 9 letters and digits.</summary>
    private static string MistralId() => string.Concat(Enumerable.Range(0, 9).Select(_ => Alphanumeric[Random.Shared.Next(Alphanumeric.Length)]));

    private const string Alphanumeric = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

    public sealed class Stream(ToolCallParser p) : IToolCallStream
    {
        private enum State { Content, InCall, AfterCall, Plain, Json }

        private State _state = State.Content;
        private string _pending = "";

        /// <summary>The content delta (maybe empty) and the calls completed by the next text delta; <paramref name="last"/>
        /// (the choice has finished) also gives back everything held.</summary>
        public (string Content, IReadOnlyList<ToolCall> Calls) Push(string delta, bool last = false)
        {
            string text = _pending + delta;
            _pending = "";
            var content = new System.Text.StringBuilder();
            var calls = new List<ToolCall>();
            if (p._hermes) Hermes(text, last, content, calls);
            else if (p._mistral) Mistral(text, last, content, calls);
            else Llama3(text, last, content, calls);
            return (content.ToString(), calls);
        }

        private void Hermes(string text, bool last, System.Text.StringBuilder content, List<ToolCall> calls)
        {
            while (true)
            {
                if (_state == State.InCall)
                {
                    int end = text.IndexOf(End, StringComparison.Ordinal);
                    if (end < 0 && !last)
                    {
                        _pending = text;
                        return;
                    }
                    string body = end < 0 ? text : text[..end];
                    if (Call(body, "arguments", null) is { } call) calls.Add(call);
                    else content.Append(Start).Append(body).Append(end < 0 ? "" : End);
                    if (end < 0) return;
                    text = text[(end + End.Length)..];
                    _state = State.AfterCall;
                    continue;
                }
                int at = text.IndexOf(Start, StringComparison.Ordinal);
                if (at >= 0)
                {
                    if (_state == State.Content) content.Append(text[..at]); // after a call, text outside the tags is dropped
                    text = text[(at + Start.Length)..];
                    _state = State.InCall;
                    continue;
                }
                int hold = last ? 0 : TextStream.HeldTail(text, Start);
                if (_state == State.Content) content.Append(text[..^hold]);
                _pending = text[^hold..];
                return;
            }
        }

        // Content until [TOOL_CALLS]; from there on everything is held and parsed at the end.
        private void Mistral(string text, bool last, System.Text.StringBuilder content, List<ToolCall> calls)
        {
            if (_state == State.Content)
            {
                int at = text.IndexOf(MistralMarker, StringComparison.Ordinal);
                if (at < 0)
                {
                    int hold = last ? 0 : TextStream.HeldTail(text, MistralMarker);
                    content.Append(text[..^hold]);
                    _pending = text[^hold..];
                    return;
                }
                content.Append(text[..at]);
                text = text[at..];
                _state = State.Json;
            }
            if (!last)
            {
                _pending = text;
                return;
            }
            if (MistralCalls(text) is { } found) calls.AddRange(found);
            else content.Append(text);
        }

        private void Llama3(string text, bool last, System.Text.StringBuilder content, List<ToolCall> calls)
        {
            if (_state == State.Content)
            {
                int i = SkipSpace(text, 0);
                if (i == text.Length && !last)
                {
                    _pending = text; // only whitespace yet: it may still open a call
                    return;
                }
                _state = i < text.Length && text[i] == '{' ? State.Json : State.Plain;
            }
            if (_state == State.Plain)
            {
                content.Append(text); // no call: content from the first character on
                return;
            }
            if (!last)
            {
                _pending = text;
                return;
            }
            if (Llama3Calls(text) is { } found) calls.AddRange(found);
            else content.Append(text);
        }
    }
}
