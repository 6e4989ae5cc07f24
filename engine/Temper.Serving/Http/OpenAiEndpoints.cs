// The OpenAI-compatible routes: GET /v1/models (each name of the base model, then each adapter, with vLLM's parent
// and max_model_len), POST
// /v1/completions and /v1/chat/completions, whole responses or server-sent events (one chunk per
// token delta per choice, then "data: [DONE]"), with log-probabilities when asked (and, for a completion
// with echo, its prompt's tokens and their log-probabilities first); with a reasoning parser (ServedModel.Reasoning)
// chat answers carry the thinking in reasoning_content, apart from content, and with tools (tool_choice "auto",
// ServedModel.ToolCalls; or a forced tool_choice) the calls in tool_calls, each streamed whole in one delta. Bad JSON and bad
// fields answer 400, an unknown model 404, each with {"error": {"message", "type", "code"}}; the
// engine keeps serving. A client that goes away cancels its request.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Temper.Core;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Http;

public static class OpenAiEndpoints
{
    public static void Map(WebApplication app, ServedModel m)
    {
        app.MapGet("/v1/models", () => Results.Text(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(m.ModelIds.Select(id => (JsonNode)new JsonObject
            {
                ["id"] = id, ["object"] = "model", ["created"] = 0, ["owned_by"] = "temper",
                ["parent"] = m.BaseNames.Contains(id) ? null : m.BaseName, ["max_model_len"] = m.Engine.MaxSequenceLength, // as vLLM lists them
            }).ToArray()),
        }.ToJsonString(), "application/json"));
        ServiceRoutes.Map(app, m);
        app.MapPost("/v1/completions", ctx => Complete(ctx, m, chat: false));
        app.MapPost("/v1/chat/completions", ctx => Complete(ctx, m, chat: true));
    }

    private static async Task Complete(HttpContext ctx, ServedModel m, bool chat)
    {
        OpenAiRequest req;
        var handles = new List<RequestHandle>();
        try
        {
            var body = await JsonNode.ParseAsync(ctx.Request.Body, cancellationToken: ctx.RequestAborted).ConfigureAwait(false) as JsonObject
                ?? throw new TemperException("the request body must be a JSON object");
            req = OpenAiRequest.Parse(body, chat, m);
            foreach (var serving in req.Servings) handles.Add(m.Engine.Submit(serving));
        }
        catch (Exception e) when (e is JsonException or TemperException)
        {
            foreach (var h in handles) h.Cancel(); // a later prompt of the batch was refused
            await Refuse(ctx, e).ConfigureAwait(false);
            return;
        }
        using var cancel = ctx.RequestAborted.Register(() => handles.ForEach(h => h.Cancel()));
        var writer = new CompletionWriter(chat, req, handles, m);
        try
        {
            if (req.Stream) await writer.Stream(ctx).ConfigureAwait(false);
            else await writer.Whole(ctx).ConfigureAwait(false);
        }
        finally
        {
            foreach (var h in handles) h.Cancel(); // whatever still runs after the response ended early (an engine error) stops
        }
    }

    // A refused request: bad JSON 400, an unknown model 404 (UnknownModelException is a TemperException), a bad field 400.
    internal static Task Refuse(HttpContext ctx, Exception e) => e switch
    {
        JsonException => Error(ctx, 400, $"the request body is not valid JSON: {e.Message}", "invalid_json"),
        UnknownModelException => Error(ctx, 404, e.Message, "model_not_found"),
        _ => Error(ctx, 400, e.Message, "invalid_request"),
    };

    internal static Task Error(HttpContext ctx, int status, string message, string code)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        var body = new JsonObject { ["error"] = new JsonObject { ["message"] = message, ["type"] = "invalid_request_error", ["param"] = null, ["code"] = code } };
        return ctx.Response.WriteAsync(body.ToJsonString(), ctx.RequestAborted);
    }

    /// <summary>Builds one response (or its stream of chunks) from the engine's events.</summary>
    private sealed class CompletionWriter(bool chat, OpenAiRequest req, List<RequestHandle> handles, ServedModel m)
    {
        private readonly string _id = (chat ? "chatcmpl-" : "cmpl-") + handles[0].Id;
        private readonly int _n = req.Servings[0].N;
        private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        private readonly Dictionary<int, TextStream> _texts = [];
        private readonly Dictionary<int, ChatAnswer.Stream> _answers = [];
        private int _completionTokens;

        // Every prompt's events as they come, each tagged with its choice index in the response (prompt x n + choice).
        private async IAsyncEnumerable<StreamEvent> Events([System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancel)
        {
            if (handles.Count == 1)
            {
                await foreach (var e in handles[0].Events.ReadAllAsync(cancel).ConfigureAwait(false)) yield return e;
                yield break;
            }
            var merged = System.Threading.Channels.Channel.CreateUnbounded<StreamEvent>();
            var readers = handles.Select(async (h, p) =>
            {
                await foreach (var e in h.Events.ReadAllAsync(cancel).ConfigureAwait(false)) await merged.Writer.WriteAsync(e with { Choice = p * _n + e.Choice }, cancel).ConfigureAwait(false);
            }).ToArray();
            _ = Task.WhenAll(readers).ContinueWith(t => merged.Writer.TryComplete(t.Exception), TaskScheduler.Default);
            await foreach (var e in merged.Reader.ReadAllAsync(cancel).ConfigureAwait(false)) yield return e;
        }

        // A chat message: with a reasoning parser, the thinking in reasoning_content and the answer in content (vLLM's fields);
        // with tools, the calls the answer makes in tool_calls (and the finish reason "tool_calls").
        private (JsonObject Message, bool Called) Message(string text)
        {
            var message = new JsonObject { ["role"] = "assistant" };
            var (reasoning, content, calls) = ChatAnswer.Read(m, req.Tools, text);
            if (m.Reasoning != null) message["reasoning_content"] = reasoning;
            message["content"] = content;
            if (calls.Count > 0) message["tool_calls"] = ToolCallsJson(calls, 0);
            return (message, calls.Count > 0);
        }

        // OpenAI's tool_calls entries (with their index, which a streamed delta needs), parallel_tool_calls false keeping only the first.
        private JsonArray ToolCallsJson(IReadOnlyList<ToolCall> calls, int sent)
        {
            var arr = new JsonArray();
            foreach (var c in calls.Take(req.ParallelToolCalls ? calls.Count : Math.Max(0, 1 - sent)))
                arr.Add(new JsonObject
                {
                    ["index"] = sent + arr.Count, ["id"] = c.Id, ["type"] = "function",
                    ["function"] = new JsonObject { ["name"] = c.Name, ["arguments"] = c.Arguments },
                });
            return arr;
        }

        private TextStream Text(int choice)
        {
            if (!_texts.TryGetValue(choice, out var t)) _texts[choice] = t = new TextStream(m.Tokenizer, req.Stops, req.Tools.Auto ? m.ToolCallKeep : null);
            return t;
        }

        public async Task Whole(HttpContext ctx)
        {
            var choices = new SortedDictionary<int, (List<StreamEvent> Events, ServingFinish Finish)>();
            await foreach (var e in Events(ctx.RequestAborted).ConfigureAwait(false))
            {
                if (e.Error != null)
                {
                    await Error(ctx, 500, e.Error, "engine_error").ConfigureAwait(false);
                    return;
                }
                if (!choices.TryGetValue(e.Choice, out var c)) choices[e.Choice] = c = ([], ServingFinish.Length);
                if (e.Token >= 0)
                {
                    c.Events.Add(e);
                    Text(e.Choice).Push(e.Token);
                    _completionTokens++;
                }
                if (e.Finish is { } f) choices[e.Choice] = (c.Events, f);
            }
            var arr = new JsonArray();
            foreach (var (index, (events, finish)) in choices)
            {
                string text = req.Echoes?[index / _n] + Text(index).Text;
                JsonObject choice;
                if (chat)
                {
                    var (message, called) = Message(text);
                    choice = new JsonObject { ["index"] = index, ["message"] = message, ["finish_reason"] = called ? "tool_calls" : Reason(finish) };
                }
                else choice = new JsonObject { ["index"] = index, ["text"] = text, ["finish_reason"] = Reason(finish) };
                choice["logprobs"] = req.Logprobs ? Logprobs(events, index / _n) : null;
                arr.Add(choice);
            }
            var body = Envelope(chat ? "chat.completion" : "text_completion", arr);
            body["usage"] = Usage();
            ctx.Response.ContentType = "application/json";
            await ctx.Response.WriteAsync(body.ToJsonString(), ctx.RequestAborted).ConfigureAwait(false);
        }

        public async Task Stream(HttpContext ctx)
        {
            ctx.Response.ContentType = "text/event-stream";
            ctx.Response.Headers.CacheControl = "no-cache";
            var started = new HashSet<int>();
            await foreach (var e in Events(ctx.RequestAborted).ConfigureAwait(false))
            {
                if (e.Error != null)
                {
                    await Send(ctx, new JsonObject { ["error"] = new JsonObject { ["message"] = e.Error, ["type"] = "server_error" } }).ConfigureAwait(false);
                    break;
                }
                string delta = "";
                if (e.Token >= 0)
                {
                    delta = Text(e.Choice).Push(e.Token);
                    _completionTokens++;
                }
                if (e.Finish != null) delta += Text(e.Choice).Finish();
                var choice = new JsonObject { ["index"] = e.Choice };
                if (chat)
                {
                    var d = new JsonObject();
                    if (started.Add(e.Choice)) d["role"] = "assistant";
                    if (!_answers.TryGetValue(e.Choice, out var answer)) _answers[e.Choice] = answer = new ChatAnswer.Stream(m, req.Tools);
                    var (reasoning, content, found) = answer.Push(delta, last: e.Finish != null);
                    delta = content;
                    if (reasoning.Length > 0) d["reasoning_content"] = reasoning;
                    var calls = ToolCallsJson(found, answer.CallsSent);
                    answer.CallsSent += calls.Count;
                    if (calls.Count > 0) d["tool_calls"] = calls;
                    if (delta.Length > 0 || (e.Finish == null && reasoning.Length == 0 && calls.Count == 0)) d["content"] = delta;
                    choice["delta"] = d;
                }
                else choice["text"] = delta;
                choice["logprobs"] = req.Logprobs && e.Token >= 0 ? Logprobs([e], e.Choice / _n) : null;
                choice["finish_reason"] = e.Finish is { } f ? (_answers.TryGetValue(e.Choice, out var a) && a.CallsSent > 0 ? "tool_calls" : Reason(f)) : null;
                await Send(ctx, Envelope(chat ? "chat.completion.chunk" : "text_completion", [choice])).ConfigureAwait(false);
            }
            if (req.IncludeUsage)
            {
                var last = Envelope(chat ? "chat.completion.chunk" : "text_completion", []);
                last["usage"] = Usage();
                await Send(ctx, last).ConfigureAwait(false);
            }
            await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted).ConfigureAwait(false);
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
        }

        private static async Task Send(HttpContext ctx, JsonObject chunk)
        {
            await ctx.Response.WriteAsync("data: " + chunk.ToJsonString() + "\n\n", ctx.RequestAborted).ConfigureAwait(false);
            await ctx.Response.Body.FlushAsync(ctx.RequestAborted).ConfigureAwait(false);
        }

        private JsonObject Envelope(string kind, JsonArray choices) => new()
        {
            ["id"] = _id, ["object"] = kind, ["created"] = _created, ["model"] = req.Model, ["choices"] = choices,
        };

        private JsonObject Usage()
        {
            int prompt = req.Servings.Sum(s => s.PromptIds.Count);
            return new() { ["prompt_tokens"] = prompt, ["completion_tokens"] = _completionTokens, ["total_tokens"] = prompt + _completionTokens };
        }

        private JsonObject Logprobs(IEnumerable<StreamEvent> events, int promptIndex)
        {
            if (chat)
            {
                var content = new JsonArray();
                foreach (var e in events)
                {
                    var entry = TokenEntry(e.Token, e.Logprob);
                    entry["top_logprobs"] = new JsonArray((e.Top ?? []).Select(t => (JsonNode)TokenEntry(t.Token, t.Logprob)).ToArray());
                    content.Add(entry);
                }
                return new JsonObject { ["content"] = content };
            }
            var list = events.ToList();
            // with echo, the prompt's tokens first: the first has no log-probability (nothing precedes it)
            var prompt = req.Echoes != null ? req.Servings[promptIndex].PromptIds : [];
            var scores = handles[promptIndex].PromptLogprobs;
            return new JsonObject
            {
                ["tokens"] = new JsonArray([.. prompt.Select(t => (JsonNode)m.Tokenizer.TokenToString(t)), .. list.Select(e => (JsonNode)m.Tokenizer.TokenToString(e.Token))]),
                ["token_logprobs"] = new JsonArray([.. prompt.Select((_, i) => scores?[i] is { } p ? (JsonNode)p.Logprob : null), .. list.Select(e => (JsonNode)e.Logprob)]),
                ["top_logprobs"] = new JsonArray([.. prompt.Select((_, i) => scores?[i] is { } p ? Top(p.Top) : null), .. list.Select(e => (JsonNode)Top(e.Top))]),
                ["text_offset"] = new JsonArray([.. prompt.Select(_ => (JsonNode)0), .. list.Select(_ => (JsonNode)0)]),
            };
        }

        private JsonObject Top(IReadOnlyList<TokenLogprob>? top)
        {
            var o = new JsonObject();
            foreach (var t in top ?? []) o[m.Tokenizer.TokenToString(t.Token)] = t.Logprob;
            return o;
        }

        private JsonObject TokenEntry(int token, float logprob)
        {
            string s = m.Tokenizer.TokenToString(token);
            return new JsonObject
            {
                ["token"] = s, ["logprob"] = logprob, ["bytes"] = new JsonArray(Encoding.UTF8.GetBytes(s).Select(b => (JsonNode)(int)b).ToArray()),
            };
        }

        private static string Reason(ServingFinish f) => f == ServingFinish.Length ? "length" : "stop";
    }
}
