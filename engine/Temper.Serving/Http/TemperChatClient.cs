// A Microsoft.Extensions.AI IChatClient over the serving engine, for in-process .NET apps: the same
// model ids (ChatOptions.ModelId selects an adapter), chat template, sampling (temperature 0 or
// unset = greedy; frequency and presence penalties), stop sequences and token limits as the HTTP server,
// whole or streamed. ChatOptions.AdditionalProperties["chat_template_kwargs"] (an object of template
// variables, e.g. Qwen3's enable_thinking) reaches the chat template as the server's request field does;
// ChatOptions.ResponseFormat (ChatResponseFormat.Json, ForJsonSchema) constrains the answer as response_format does; with
// the model's reasoning parser the thinking comes as TextReasoningContent, apart from the answer's text.
using System.Runtime.CompilerServices;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Temper.Models;
using Temper.Models.Text;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Http;

public sealed class TemperChatClient(ServedModel model) : IChatClient
{
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (handle, stops, modelId) = Submit(messages, options);
        using var reg = cancellationToken.Register(handle.Cancel);
        var text = new TextStream(model.Tokenizer, stops);
        int tokens = 0;
        var finish = ServingFinish.Length;
        await foreach (var e in handle.Events.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            if (e.Error != null) throw new InvalidOperationException(e.Error);
            if (e.Token >= 0)
            {
                text.Push(e.Token);
                tokens++;
            }
            if (e.Finish is { } f) finish = f;
        }
        return new ChatResponse(Answer(text.Text))
        {
            ModelId = modelId, ResponseId = "chatcmpl-" + handle.Id, FinishReason = Reason(finish),
            Usage = new UsageDetails { InputTokenCount = handle.Request.PromptIds.Count, OutputTokenCount = tokens, TotalTokenCount = handle.Request.PromptIds.Count + tokens },
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (handle, stops, modelId) = Submit(messages, options);
        using var reg = cancellationToken.Register(handle.Cancel);
        var text = new TextStream(model.Tokenizer, stops);
        var reasoning = model.Reasoning?.NewStream();
        await foreach (var e in handle.Events.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            if (e.Error != null) throw new InvalidOperationException(e.Error);
            string delta = e.Token >= 0 ? text.Push(e.Token) : "";
            if (e.Finish != null) delta += text.Finish();
            var contents = new List<AIContent>();
            if (reasoning != null)
            {
                var (r, c) = reasoning.Push(delta, last: e.Finish != null);
                if (r.Length > 0) contents.Add(new TextReasoningContent(r));
                delta = c;
            }
            contents.Add(new TextContent(delta));
            yield return new ChatResponseUpdate(ChatRole.Assistant, contents)
            {
                ModelId = modelId, ResponseId = "chatcmpl-" + handle.Id, FinishReason = e.Finish is { } f ? Reason(f) : null,
            };
        }
    }

    private (RequestHandle, IReadOnlyList<string>, string) Submit(IEnumerable<ChatMessage> messages, ChatOptions? o)
    {
        string modelId = o?.ModelId ?? model.BaseName;
        var json = new JsonArray(messages.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role.Value, ["content"] = m.Text }).ToArray());
        var stops = o?.StopSequences?.ToArray() ?? [];
        float t = o?.Temperature ?? 0f;
        var request = new ServingRequest
        {
            PromptIds = model.EncodeChat(json, PromptOptions(o)), Adapter = model.AdapterFor(modelId), MaxNewTokens = o?.MaxOutputTokens ?? 256, EosIds = model.EosIds, StopStrings = stops,
            Sampling = (t == 0 ? new SamplingOptions { Greedy = true }
                : new SamplingOptions { Greedy = false, Temperature = t, TopP = o?.TopP ?? 1f, TopK = o?.TopK ?? 0, Seed = (ulong)(o?.Seed ?? Random.Shared.NextInt64()) })
                with { FrequencyPenalty = o?.FrequencyPenalty ?? 0f, PresencePenalty = o?.PresencePenalty ?? 0f, Constraint = Constraint(o?.ResponseFormat) },
        };
        return (model.Engine.Submit(request), stops, modelId);
    }

    // ChatResponseFormat.Json: any JSON object; ForJsonSchema: JSON matching the schema; text or none: free text.
    private Temper.Models.Constrained.JsonConstraint? Constraint(ChatResponseFormat? format) => format switch
    {
        ChatResponseFormatJson { Schema: { } schema } => model.SchemaConstraint(schema.GetRawText()),
        ChatResponseFormatJson => model.JsonObjectConstraint,
        _ => null,
    };

    // The answer message: with a reasoning parser, the thinking as TextReasoningContent before the answer's TextContent.
    private ChatMessage Answer(string text)
    {
        if (model.Reasoning == null) return new ChatMessage(ChatRole.Assistant, text);
        var (reasoning, content) = model.Reasoning.Split(text);
        var contents = new List<AIContent>();
        if (reasoning != null) contents.Add(new TextReasoningContent(reasoning));
        contents.Add(new TextContent(content ?? ""));
        return new ChatMessage(ChatRole.Assistant, contents);
    }

    private static ChatPromptOptions? PromptOptions(ChatOptions? o)
    {
        if (o?.AdditionalProperties?.TryGetValue("chat_template_kwargs", out var kwargs) != true || kwargs == null) return null;
        var node = kwargs as JsonNode ?? System.Text.Json.JsonSerializer.SerializeToNode(kwargs, kwargs.GetType());
        return new ChatPromptOptions { TemplateKwargs = ChatPromptOptions.KwargsFrom(node, "chat_template_kwargs") };
    }

    private static ChatFinishReason Reason(ServingFinish f) => f == ServingFinish.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    public object? GetService(Type serviceType, object? serviceKey = null) => serviceKey == null && serviceType.IsInstanceOfType(this) ? this : null;

    public void Dispose() { }
}
