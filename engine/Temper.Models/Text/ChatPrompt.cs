// How a conversation becomes prompt text, with the options of transformers' apply_chat_template and of
// vLLM's chat requests: add_generation_prompt (end with the assistant turn's opening), continue_final_message
// (end inside the last message, so the model continues it: the rendered text is cut right after that
// message's content, as transformers cuts it) and template variables (chat_template_kwargs, e.g. Qwen3's
// enable_thinking), which the template sees beside messages and tools.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models.Text;

public sealed record ChatPromptOptions
{
    public bool AddGenerationPrompt { get; init; } = true;
    public bool ContinueFinalMessage { get; init; }
    /// <summary>Extra variables the template sees (they win over the built-in ones, as transformers' kwargs do).</summary>
    public IReadOnlyDictionary<string, JsonNode?>? TemplateKwargs { get; init; }

    /// <summary>Template variables from a JSON object's text (a CLI flag); <paramref name="what"/> names it in errors.</summary>
    public static IReadOnlyDictionary<string, JsonNode?> ParseKwargs(string json, string what)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(json); }
        catch (JsonException e) { throw new TemperException($"{what}: malformed JSON: {e.Message.Split('\n')[0]}"); }
        return KwargsFrom(node, what);
    }

    /// <summary>Template variables from a JSON object (a request field); anything else is refused naming <paramref name="what"/>.</summary>
    public static IReadOnlyDictionary<string, JsonNode?> KwargsFrom(JsonNode? node, string what)
    {
        if (node is not JsonObject o) throw new TemperException($"{what} must be a JSON object of template variables");
        return o.ToDictionary(kv => kv.Key, kv => kv.Value?.DeepClone());
    }
}

public static class ChatPrompt
{
    /// <summary>The prompt text for <paramref name="messages"/> (and <paramref name="tools"/>) under <paramref name="o"/>.</summary>
    public static string Render(ChatTemplate template, JsonArray messages, ChatPromptOptions o, JsonArray? tools = null)
    {
        if (o.AddGenerationPrompt && o.ContinueFinalMessage)
            throw new TemperException("add_generation_prompt and continue_final_message cannot both be true");
        string text = template.Render(messages, o.AddGenerationPrompt, tools, o.TemplateKwargs);
        return o.ContinueFinalMessage ? CutAfterFinalMessage(text, messages) : text;
    }

    // transformers: cut after the last occurrence of the final message's content (its last text part), or of
    // that content stripped (templates such as Llama 3.1's strip messages before rendering them).
    private static string CutAfterFinalMessage(string text, JsonArray messages)
    {
        if (messages.Count == 0 || messages[^1] is not JsonObject last) throw new TemperException("continue_final_message needs a final message");
        string content = last["content"] switch
        {
            JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
            JsonArray parts when parts.Count > 0 && parts[^1] is JsonObject p && p["text"] is JsonValue t => t.GetValue<string>(),
            _ => throw new TemperException("continue_final_message: the final message has no text content to continue"),
        };
        if (content.Length == 0) return text; // Python's rindex("") is the text's length
        int at = text.LastIndexOf(content, StringComparison.Ordinal);
        if (at < 0)
        {
            content = content.Trim();
            at = text.LastIndexOf(content, StringComparison.Ordinal);
        }
        if (at < 0) throw new TemperException("continue_final_message: the chat template did not render the final message's content");
        return text[..(at + content.Length)];
    }
}
