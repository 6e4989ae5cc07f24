// The routes vLLM serves beside the OpenAI ones: GET /health (200 while serving), GET /metrics (the
// engine's counters in Prometheus' text format, speculation's drafted and accepted tokens included), POST /tokenize and /detokenize. Refusals are the OpenAI
// routes' (bad JSON and bad fields 400, an unknown model 404).
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Temper.Core;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Http;

public static class ServiceRoutes
{
    public static void Map(WebApplication app, ServedModel m)
    {
        app.MapGet("/health", () => Results.Ok());
        app.MapGet("/metrics", () => Results.Text(Metrics(m.Engine), "text/plain; version=0.0.4"));
        app.MapPost("/tokenize", ctx => Json(ctx, body => Tokenize(body, m)));
        app.MapPost("/detokenize", ctx => Json(ctx, body => Detokenize(body, m)));
    }

    // POST /tokenize (vLLM's): {"prompt": text} or {"messages": [...]} (rendered by the chat template with the
    // generation prompt, or as add_generation_prompt, continue_final_message, chat_template_kwargs and tools say)
    // -> {"count", "max_model_len", "tokens"}: the ids /v1/completions or
    // /v1/chat/completions would run.
    private static JsonObject Tokenize(JsonObject body, ServedModel m)
    {
        CheckModel(body, m);
        IReadOnlyList<int> ids = body["messages"] != null ? OpenAiRequest.ChatIds(body, m, out _)
            : body["prompt"] is JsonValue pv && pv.GetValueKind() == JsonValueKind.String ? m.Encode(pv.GetValue<string>())
            : throw new TemperException("'prompt' (a string) or 'messages' is required");
        return new JsonObject { ["count"] = ids.Count, ["max_model_len"] = m.Engine.MaxSequenceLength, ["tokens"] = new JsonArray([.. ids.Select(i => (JsonNode)i)]) };
    }

    // POST /detokenize (vLLM's): {"tokens": [ids]} -> {"prompt": text}, special tokens kept.
    private static JsonObject Detokenize(JsonObject body, ServedModel m)
    {
        CheckModel(body, m);
        if (body["tokens"] is not JsonArray a || !a.All(x => x is JsonValue v && v.GetValueKind() == JsonValueKind.Number))
            throw new TemperException("'tokens' must be an array of token ids");
        int vocab = m.Engine.Config.VocabSize;
        var ids = a.Select(x => x!.GetValue<double>()).Select(d => d == Math.Floor(d) && d >= 0 && d < vocab ? (int)d
            : throw new TemperException($"'tokens': {d} is not a token id of the vocabulary (0..{vocab - 1})")).ToArray();
        return new JsonObject { ["prompt"] = m.Tokenizer.Decode(ids, skipSpecialTokens: false) };
    }

    // An unknown "model" (when one is named) is refused with a 404, as on the OpenAI routes.
    private static void CheckModel(JsonObject body, ServedModel m) =>
        m.AdapterFor(body["model"] is JsonValue mv && mv.GetValueKind() == JsonValueKind.String ? mv.GetValue<string>() : null);

    // A JSON route: parse the body, answer the handler's object, or 400/404 with an OpenAI-style error.
    private static async Task Json(HttpContext ctx, Func<JsonObject, JsonObject> handler)
    {
        JsonObject answer;
        try
        {
            var body = await JsonNode.ParseAsync(ctx.Request.Body, cancellationToken: ctx.RequestAborted).ConfigureAwait(false) as JsonObject
                ?? throw new TemperException("the request body must be a JSON object");
            answer = handler(body);
        }
        catch (Exception e) when (e is JsonException or TemperException)
        {
            await OpenAiEndpoints.Refuse(ctx, e).ConfigureAwait(false);
            return;
        }
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(answer.ToJsonString(), ctx.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>The engine's counters in Prometheus' text format (what vLLM's /metrics gives, under temper_ names).</summary>
    internal static string Metrics(ServingEngine e)
    {
        var s = e.Stats;
        var text = new StringBuilder();
        void Metric(string name, string type, string help, long value) =>
            text.Append($"# HELP temper_{name} {help}\n# TYPE temper_{name} {type}\ntemper_{name} {value}\n");
        Metric("steps_total", "counter", "Engine steps run.", s.Steps);
        Metric("prompt_tokens_total", "counter", "Prompt tokens computed (prefill; prefix-cache hits not included).", s.PrefillTokens);
        Metric("generation_tokens_total", "counter", "Tokens computed in decode steps.", s.DecodeTokens);
        Metric("prefix_cache_hit_tokens_total", "counter", "Prompt tokens taken from the prefix cache.", s.CachedPrefixTokens);
        Metric("requests_finished_total", "counter", "Choices finished.", s.RequestsFinished);
        Metric("preemptions_total", "counter", "Sequences preempted for KV blocks.", s.Preemptions);
        Metric("swaps_total", "counter", "Preempted sequences swapped to a slower tier.", s.Swaps);
        Metric("recomputations_total", "counter", "Preempted sequences to be recomputed.", s.Recomputations);
        Metric("copy_on_write_blocks_total", "counter", "KV blocks copied on write.", s.CopiedOnWrite);
        Metric("spec_decode_num_draft_tokens_total", "counter", "Tokens proposed by speculation (vLLM's spec_decode_num_draft_tokens).", s.SpecDraftTokens);
        Metric("spec_decode_num_accepted_tokens_total", "counter", "Proposed tokens accepted (vLLM's spec_decode_num_accepted_tokens).", s.SpecAcceptedTokens);
        Metric("requests_running", "gauge", "Sequences in the running batch.", s.Running);
        Metric("requests_waiting", "gauge", "Sequences waiting to be admitted.", s.Waiting);
        Metric("kv_blocks_free", "gauge", "Free KV blocks in the device pool.", s.FreeBlocks);
        Metric("kv_blocks", "gauge", "KV blocks in the device pool.", e.Cache.Pool.Count);
        return text.ToString();
    }
}
