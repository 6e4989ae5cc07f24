// A Microsoft.Extensions.AI IChatClient over the serving engine, for in-process .NET apps: the same
// model ids (ChatOptions.ModelId selects an adapter), chat template, sampling (temperature 0 = greedy; frequency and
// presence penalties), stop sequences and token limits as the HTTP server, whole or streamed. Sampling fields and the
// token limit ChatOptions leaves unset take the request defaults the server applies (RequestSampling: the model's
// generation_config.json, the server's default seed), then greedy and 256 tokens. ChatOptions.AdditionalProperties["chat_template_kwargs"] (an object of template
// variables, e.g. Qwen3's enable_thinking) reaches the chat template as the server's request field does;
// ChatOptions.ResponseFormat (ChatResponseFormat.Json, ForJsonSchema) constrains the answer as response_format does; with
// the model's reasoning parser the thinking comes as TextReasoningContent, apart from the answer's text. With
// ChatOptions.Tools (tool mode auto with the model's tool call parser, or RequireAny / RequireSpecific, forced by
// constrained decoding) the template sees the functions and the answer's calls come as FunctionCallContent
// (FinishReason ToolCalls); FunctionCallContent and
// FunctionResultContent in the messages reach the template as tool_calls and tool messages, so
// FunctionInvokingChatClient can run the loop.
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
        var (handle, stops, modelId, plan) = Submit(messages, options);
        using var reg = cancellationToken.Register(handle.Cancel);
        var text = new TextStream(model.Tokenizer, stops, plan.Auto ? model.ToolCallKeep : null);
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
        var (answer, called) = Answer(text.Text, plan);
        return new ChatResponse(answer)
        {
            ModelId = modelId, ResponseId = "chatcmpl-" + handle.Id, FinishReason = called ? ChatFinishReason.ToolCalls : Reason(finish),
            Usage = new UsageDetails { InputTokenCount = handle.Request.PromptIds.Count, OutputTokenCount = tokens, TotalTokenCount = handle.Request.PromptIds.Count + tokens },
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (handle, stops, modelId, plan) = Submit(messages, options);
        using var reg = cancellationToken.Register(handle.Cancel);
        var text = new TextStream(model.Tokenizer, stops, plan.Auto ? model.ToolCallKeep : null);
        var answer = new ChatAnswer.Stream(model, plan);
        await foreach (var e in handle.Events.ReadAllAsync(cancellationToken).ConfigureAwait(false))
        {
            if (e.Error != null) throw new InvalidOperationException(e.Error);
            string delta = e.Token >= 0 ? text.Push(e.Token) : "";
            if (e.Finish != null) delta += text.Finish();
            var (reasoning, content, calls) = answer.Push(delta, last: e.Finish != null);
            answer.CallsSent += calls.Count;
            var contents = new List<AIContent>();
            if (reasoning.Length > 0) contents.Add(new TextReasoningContent(reasoning));
            contents.AddRange(calls.Select(Call));
            contents.Add(new TextContent(content));
            yield return new ChatResponseUpdate(ChatRole.Assistant, contents)
            {
                ModelId = modelId, ResponseId = "chatcmpl-" + handle.Id, FinishReason = e.Finish is { } f ? (answer.CallsSent > 0 ? ChatFinishReason.ToolCalls : Reason(f)) : null,
            };
        }
    }

    private (RequestHandle, IReadOnlyList<string>, string, ToolPlan) Submit(IEnumerable<ChatMessage> messages, ChatOptions? o)
    {
        string? adapter = model.AdapterFor(o?.ModelId);
        var json = new JsonArray([.. messages.SelectMany(Json)]);
        var plan = ToolRequest.Plan(ToolFields(o), model.ToolCalls != null);
        var stops = o?.StopSequences?.ToArray() ?? [];
        // What ChatOptions leaves unset takes the model's request defaults, as on the server; then greedy and 256 tokens.
        var (sampling, maxTokens) = new RequestSampling
        {
            MaxTokens = o?.MaxOutputTokens, Temperature = o?.Temperature, TopP = o?.TopP, TopK = o?.TopK, Seed = o?.Seed,
            FrequencyPenalty = o?.FrequencyPenalty, PresencePenalty = o?.PresencePenalty,
        }.Resolve(model, unsetTemperature: 0f, unsetMaxTokens: 256);
        var request = new ServingRequest
        {
            PromptIds = model.EncodeChat(json, PromptOptions(o), plan.Tools), Adapter = adapter, MaxNewTokens = maxTokens, EosIds = model.EosIds, StopStrings = stops,
            Sampling = model.Constrain(sampling, Constraint(o?.ResponseFormat), plan.Forced, "give either ChatOptions.ResponseFormat or a ToolMode that requires a call, not both"),
        };
        return (model.Engine.Submit(request), stops, adapter ?? model.BaseName, plan);
    }

    // ChatResponseFormat.Json: any JSON object; ForJsonSchema: JSON matching the schema; text or none: free text.
    private Temper.Models.Constrained.JsonConstraint? Constraint(ChatResponseFormat? format) => format switch
    {
        ChatResponseFormatJson { Schema: { } schema } => model.SchemaConstraint(schema.GetRawText()),
        ChatResponseFormatJson => model.JsonObjectConstraint,
        _ => null,
    };

    // A message as the chat template sees it: its text, an assistant's FunctionCallContent as tool_calls, and each
    // FunctionResultContent as a message of role tool (the result as text, JSON unless it is a string).
    private static IEnumerable<JsonNode> Json(ChatMessage m)
    {
        var results = m.Contents.OfType<FunctionResultContent>().ToList();
        foreach (var r in results)
            yield return new JsonObject
            {
                ["role"] = "tool", ["tool_call_id"] = r.CallId,
                ["content"] = r.Result as string ?? System.Text.Json.JsonSerializer.Serialize(r.Result, AIJsonUtilities.DefaultOptions),
            };
        if (results.Count > 0 && m.Text.Length == 0) yield break;
        var o = new JsonObject { ["role"] = m.Role.Value, ["content"] = m.Text };
        var calls = m.Contents.OfType<FunctionCallContent>().ToList();
        if (calls.Count > 0)
            o["tool_calls"] = new JsonArray([.. calls.Select(c => (JsonNode)new JsonObject
            {
                ["id"] = c.CallId, ["type"] = "function",
                ["function"] = new JsonObject { ["name"] = c.Name, ["arguments"] = System.Text.Json.JsonSerializer.SerializeToNode(c.Arguments, AIJsonUtilities.DefaultOptions) },
            })]);
        yield return o;
    }

    // ChatOptions.Tools and ToolMode as the server's request fields (tools, tool_choice), for ToolRequest to read.
    private static JsonObject ToolFields(ChatOptions? o)
    {
        var tools = new JsonArray([.. (o?.Tools ?? []).OfType<AIFunctionDeclaration>().Select(f => (JsonNode)new JsonObject
        {
            ["type"] = "function",
            ["function"] = new JsonObject { ["name"] = f.Name, ["description"] = f.Description, ["parameters"] = JsonNode.Parse(f.JsonSchema.GetRawText()) },
        })]);
        var body = new JsonObject { ["tools"] = tools };
        body["tool_choice"] = o?.ToolMode switch
        {
            null => null,
            NoneChatToolMode => "none",
            RequiredChatToolMode { RequiredFunctionName: string name } => new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = name } },
            RequiredChatToolMode => "required",
            _ => "auto",
        };
        return body;
    }

    // The answer message: with a reasoning parser, the thinking as TextReasoningContent before the answer's TextContent;
    // with tools, each call the answer makes as FunctionCallContent.
    private (ChatMessage, bool Called) Answer(string text, ToolPlan plan)
    {
        var contents = new List<AIContent>();
        var (reasoning, content, calls) = ChatAnswer.Read(model, plan, text);
        if (reasoning != null) contents.Add(new TextReasoningContent(reasoning));
        contents.Add(new TextContent(content ?? ""));
        contents.AddRange(calls.Select(Call));
        return (new ChatMessage(ChatRole.Assistant, contents), calls.Count > 0);
    }

    private static FunctionCallContent Call(ToolCall c) => FunctionCallContent.CreateFromParsedArguments(c.Arguments, c.Id, c.Name,
        a => System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, object?>>(a, AIJsonUtilities.DefaultOptions));

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
