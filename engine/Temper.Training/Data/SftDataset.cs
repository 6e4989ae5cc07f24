// Supervised fine-tuning data: TRL's JSONL forms read into token ids and labels, one line one example,
// the form detected per line:
//   {"messages": [...]}            loss on what each assistant message adds: for message i, the ids of
//                                  render(msgs[:i+1]) past those of render(msgs[:i], add_generation_prompt)
//                                  (its content, end-of-turn token and whatever the template puts after)
//   {"prompt": P, "completion": C} both text: loss on the tokens of P+C past those of P, EOS appended (as
//                                  TRL appends it); both lists of messages: P rendered with the generation
//                                  prompt, loss on what rendering P+C adds after it
//   {"text": T}                    continued pre-training: every token a label, EOS appended
// A line may carry "tools" (a list), passed to the chat template. Roles: system, user, assistant, tool; an
// assistant message may carry OpenAI-style "tool_calls" (content then may be null), rendered by the template and learned.
// TRL's assistant_only_loss=False / completion_only_loss=False (SftDataOptions) label every token instead.
// Token ids are taken from tokenizing the whole rendering once; a shorter rendering must tokenize to a
// prefix of it (else the label boundary would fall inside a token) or the line is an error.
// Bad input is a TemperException "FILE:LINE: what is wrong"; with SkipBadLines such lines are counted
// and skipped. Empty lines are ignored. Examples over MaxLength follow Truncation; an example left with no
// predicted label (truncation cut them all) is dropped too. With Packing, Examples are packed rows.
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Training.Data;

public sealed class SftDataset
{
    private static readonly string[] Roles = ["system", "user", "assistant", "tool"];
    private static readonly UTF8Encoding StrictUtf8 = new(false, true);

    private readonly string _path;
    private readonly HfTokenizer _tok;
    private readonly ChatTemplate? _tpl;
    private readonly SftDataOptions _options;
    private int _line;

    private SftDataset(string path, HfTokenizer tok, ChatTemplate? tpl, SftDataOptions? options = null)
    {
        _path = path;
        _tok = tok;
        _tpl = tpl;
        _options = options ?? new();
    }

    /// <summary>The examples (packed rows when packing), in file order.</summary>
    public IReadOnlyList<SftExample> Examples { get; private set; } = [];
    /// <summary>Examples cut to MaxLength (Right or Left).</summary>
    public int TruncatedCount { get; private set; }
    /// <summary>Examples skipped for length (Drop) or for having no predicted label left.</summary>
    public int DroppedCount { get; private set; }
    public int SkippedBadLines { get; private set; }
    /// <summary>Non-empty lines read: examples before packing + DroppedCount + SkippedBadLines.</summary>
    public int LineCount { get; private set; }
    /// <summary>SHA-256 of the file's bytes, lower-case hex.</summary>
    public string Sha256 { get; private set; } = "";
    /// <summary>Predicted label tokens over all Examples (see SftExample.LabelTokens).</summary>
    public long LabelTokenCount { get; private set; }

    public static SftDataset Load(string path, HfTokenizer tok, ChatTemplate? tpl, SftDataOptions o)
    {
        if (!File.Exists(path)) throw new TemperException($"{path}: data file not found");
        if (o.MaxLength is < 2) throw new TemperException($"{path}: max length must be at least 2, not {o.MaxLength}");
        if (o.Packing && o.MaxLength == null) throw new TemperException($"{path}: packing needs a max length");

        var bytes = File.ReadAllBytes(path);
        var ds = new SftDataset(path, tok, tpl, o) { Sha256 = Convert.ToHexStringLower(SHA256.HashData(bytes)) };
        var examples = new List<SftExample>();
        int start = 0;
        while (start < bytes.Length)
        {
            int end = Array.IndexOf(bytes, (byte)'\n', start);
            if (end < 0) end = bytes.Length;
            ds._line++;
            var line = bytes.AsSpan(start, end - start);
            start = end + 1;
            if (ds._line == 1 && line.StartsWith("\uFEFF"u8)) line = line[3..];
            if (line.Trim(" \t\r"u8).IsEmpty) continue;
            ds.LineCount++;

            int[] ids, labels;
            try
            {
                (ids, labels) = ds.Tokenize(line);
            }
            catch (TemperException) when (o.SkipBadLines)
            {
                ds.SkippedBadLines++;
                continue;
            }
            if (o.MaxLength is int max && ids.Length > max)
            {
                switch (o.Truncation)
                {
                    case Truncation.Drop: ds.DroppedCount++; continue;
                    case Truncation.Error: throw ds.Bad($"example has {ids.Length} tokens, more than the max length {max}");
                    case Truncation.Left: (ids, labels) = (ids[^max..], labels[^max..]); break;
                    default: (ids, labels) = (ids[..max], labels[..max]); break;
                }
                ds.TruncatedCount++;
            }
            var example = new SftExample(ids, labels, ds._line);
            if (example.LabelTokens == 0) { ds.DroppedCount++; continue; }
            examples.Add(example);
        }
        ds.Examples = o.Packing ? SftPacker.Pack(examples, o.MaxLength!.Value) : examples;
        ds.LabelTokenCount = ds.Examples.Sum(e => (long)e.LabelTokens);
        return ds;
    }

    private TemperException Bad(string what) => new($"{_path}:{_line}: {what}");

    private (int[] Ids, int[] Labels) Tokenize(ReadOnlySpan<byte> line)
    {
        JsonObject obj;
        try
        {
            obj = JsonNode.Parse(StrictUtf8.GetString(line)) as JsonObject ?? throw Bad("not a JSON object");
            _ = obj.Count; // materialises the properties, so a duplicate key fails here
        }
        catch (Exception e) when (e is JsonException or DecoderFallbackException or ArgumentException)
        {
            throw Bad($"not valid JSON: {e.Message.Split('\n')[0]}");
        }
        return TokenizeObject(obj);
    }

    /// <summary>A tokenizer for single objects in this file's forms (the preference datasets build prompt/completion objects).</summary>
    internal static SftDataset ForObjects(string path, HfTokenizer tok, ChatTemplate? tpl) => new(path, tok, tpl);

    /// <summary>Tokenizes one example object; errors name the file and <paramref name="line"/>.</summary>
    internal (int[] Ids, int[] Labels) TokenizeObject(JsonObject obj, int line)
    {
        _line = line;
        return TokenizeObject(obj);
    }

    private (int[] Ids, int[] Labels) TokenizeObject(JsonObject obj)
    {
        var tools = obj["tools"] as JsonArray;

        if (obj.TryGetPropertyValue("messages", out var messagesNode))
        {
            var msgs = Messages(messagesNode, "messages");
            var turns = Enumerable.Range(0, msgs.Count).Where(i => Role(msgs[i]) == "assistant").Select(i => (i, i + 1)).ToList();
            if (turns.Count == 0) throw Bad("no assistant message, so nothing to learn");
            return AllTokensUnless(_options.AssistantOnlyLoss, Chat(msgs, tools, turns));
        }
        bool hasPrompt = obj.TryGetPropertyValue("prompt", out var prompt);
        bool hasCompletion = obj.TryGetPropertyValue("completion", out var completion);
        if (hasPrompt != hasCompletion) throw Bad(hasPrompt ? "\"prompt\" without \"completion\"" : "\"completion\" without \"prompt\"");
        if (hasPrompt)
        {
            if (prompt is JsonArray && completion is JsonArray)
            {
                var p = Messages(prompt, "prompt");
                var c = Messages(completion, "completion");
                if (c.Count == 0) throw Bad("completion has no messages");
                return AllTokensUnless(_options.CompletionOnlyLoss, Chat([.. p, .. c], tools, [(p.Count, p.Count + c.Count)]));
            }
            if (Text(prompt) is { } pt && Text(completion) is { } ct)
            {
                if (ct.Length == 0) throw Bad("empty completion");
                return AllTokensUnless(_options.CompletionOnlyLoss, PromptCompletion(pt, ct));
            }
            throw Bad("\"prompt\" and \"completion\" must both be strings or both be lists of messages");
        }
        if (obj.TryGetPropertyValue("text", out var textNode))
        {
            var text = Text(textNode) ?? throw Bad("\"text\" is not a string");
            if (text.Length == 0) throw Bad("empty \"text\"");
            var ids = WithEos(_tok.Encode(text));
            return (ids, (int[])ids.Clone());
        }
        var found = obj.Count == 0 ? "none" : string.Join(", ", obj.Select(kv => kv.Key));
        throw Bad($"no \"messages\", \"prompt\"+\"completion\" or \"text\" field (found: {found})");
    }

    // TRL's assistant_only_loss / completion_only_loss off: every token of the example is a label.
    private static (int[] Ids, int[] Labels) AllTokensUnless(bool onlySome, (int[] Ids, int[] Labels) example) =>
        onlySome ? example : (example.Ids, (int[])example.Ids.Clone());

    private static string? Text(JsonNode? node) =>
        node is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : null;

    private static string Role(JsonObject m) => m["role"]!.GetValue<string>();

    // The messages of a list, each {"role": one of Roles, "content": a string}; an assistant's not blank, unless it
    // makes tool calls (OpenAI's form, which TRL passes to the template: "tool_calls": [{"type": "function",
    // "function": {"name": N, "arguments": {...} or a JSON string}}], content null, absent or text).
    private List<JsonObject> Messages(JsonNode? node, string field)
    {
        if (node is not JsonArray list) throw Bad($"\"{field}\" is not a list of messages");
        var msgs = new List<JsonObject>();
        for (int i = 0; i < list.Count; i++)
        {
            if (list[i] is not JsonObject m) throw Bad($"{field}[{i}] is not an object");
            var role = Text(m["role"]) ?? throw Bad($"{field}[{i}] has no \"role\" string");
            if (!Roles.Contains(role)) throw Bad($"{field}[{i}]: unknown role '{role}' (expected system, user, assistant or tool)");
            bool calls = role == "assistant" && ToolCalls(m["tool_calls"], $"{field}[{i}]");
            var content = Text(m["content"]);
            if (content == null && !(calls && m["content"] is null))
                throw Bad($"{field}[{i}] ({role}): content is not a string{(role == "assistant" ? " (it may be null in a message with tool_calls)" : "")}");
            if (role == "assistant" && !calls && string.IsNullOrWhiteSpace(content)) throw Bad($"{field}[{i}]: empty assistant turn");
            msgs.Add(m);
        }
        return msgs;
    }

    // Whether an assistant message's "tool_calls" holds calls (absent, null or empty: none); each must name its function.
    private bool ToolCalls(JsonNode? node, string where)
    {
        if (node is null) return false;
        if (node is not JsonArray calls) throw Bad($"{where}: \"tool_calls\" is not a list");
        for (int c = 0; c < calls.Count; c++)
        {
            var call = calls[c] as JsonObject ?? throw Bad($"{where}.tool_calls[{c}] is not an object");
            var fn = call["function"] as JsonObject ?? call;
            if (Text(fn["name"]) is not { Length: > 0 }) throw Bad($"{where}.tool_calls[{c}] has no function name");
            if (fn["arguments"] is not (JsonObject or null) && Text(fn["arguments"]) == null)
                throw Bad($"{where}.tool_calls[{c}]: arguments must be an object or a JSON string");
        }
        return calls.Count > 0;
    }

    // Ids of the whole rendered conversation; labelled: for each (from, to), the ids that messages
    // [from, to) add after render(msgs[:from], add_generation_prompt=true).
    private (int[] Ids, int[] Labels) Chat(List<JsonObject> msgs, JsonArray? tools, List<(int From, int To)> spans)
    {
        if (_tpl == null) throw Bad("a conversational example needs a chat template and the model has none");
        var ids = _tok.Encode(Render(msgs, msgs.Count, false, tools)).ToArray();
        var labels = Enumerable.Repeat(SftExample.IgnoreIndex, ids.Length).ToArray();
        foreach (var (from, to) in spans)
        {
            int s = PrefixLength(Render(msgs, from, true, tools), ids, $"messages[:{from}] rendered with the generation prompt", Unstable);
            int e = to == msgs.Count ? ids.Length : PrefixLength(Render(msgs, to, false, tools), ids, $"messages[:{to}] rendered", Unstable);
            if (e <= s) throw Bad($"message {from} adds no tokens after the generation prompt");
            Array.Copy(ids, s, labels, s, e - s);
        }
        return (ids, labels);
    }

    private string Render(List<JsonObject> msgs, int count, bool generationPrompt, JsonArray? tools)
    {
        var prefix = new JsonArray(msgs.Take(count).Select(m => m.DeepClone()).ToArray());
        try
        {
            return _tpl!.Render(prefix, generationPrompt, tools);
        }
        catch (TemperException e)
        {
            throw Bad($"chat template failed: {e.Message}");
        }
    }

    private const string Unstable = "the chat template does not render prefix-stably";

    // How many leading ids of `full` the text tokenizes to; an error when they are not a prefix.
    private int PrefixLength(string text, int[] full, string what, string why)
    {
        var ids = _tok.Encode(text);
        if (ids.Count > full.Length || !full.AsSpan(0, ids.Count).SequenceEqual(ids.ToArray()))
            throw Bad($"the tokens of {what} are not a prefix of the whole example's tokens ({why})");
        return ids.Count;
    }

    private (int[] Ids, int[] Labels) PromptCompletion(string prompt, string completion)
    {
        var ids = WithEos(_tok.Encode(prompt + completion));
        int p = PrefixLength(prompt, ids, "the prompt", "its last token merges with the completion's first");
        if (p == ids.Length) throw Bad("completion adds no tokens");
        var labels = (int[])ids.Clone();
        Array.Fill(labels, SftExample.IgnoreIndex, 0, p);
        return (ids, labels);
    }

    private int[] WithEos(IReadOnlyList<int> ids) =>
        _tok.EosId is int eos && (ids.Count == 0 || ids[^1] != eos) ? [.. ids, eos] : [.. ids];
}
