// vLLM's runtime LoRA updating (VLLM_ALLOW_RUNTIME_LORA_UPDATING; here temper serve --allow-runtime-lora):
// POST /v1/load_lora_adapter {"lora_name", "lora_path"} and POST /v1/unload_lora_adapter {"lora_name"}
// ("lora_int_id" is taken and ignored). Success answers 200 with vLLM's plain-text line. A taken name or
// a folder that is missing or no LoRA adapter for this base is a 400 naming it (nothing changes, the
// server keeps serving); unloading an unknown name is a 404. Off, both routes answer 404 saying how to
// turn them on.
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Temper.Core;

namespace Temper.Serving.Http;

public static class LoraRoutes
{
    public static void Map(WebApplication app, ServedModel m, bool allowed)
    {
        app.MapPost("/v1/load_lora_adapter", ctx => Handle(ctx, allowed, body =>
        {
            string name = Field(body, "lora_name"), path = Field(body, "lora_path");
            m.LoadAdapter(name, path);
            return $"Success: LoRA adapter '{name}' added successfully.";
        }));
        app.MapPost("/v1/unload_lora_adapter", ctx => Handle(ctx, allowed, body =>
        {
            string name = Field(body, "lora_name");
            m.UnloadAdapter(name);
            return $"Success: LoRA adapter '{name}' removed successfully.";
        }));
    }

    private static string Field(JsonObject body, string name) =>
        body[name] is JsonValue v && v.GetValueKind() == JsonValueKind.String && v.GetValue<string>() is { Length: > 0 } s ? s
            : throw new TemperException($"'{name}' (a non-empty string) is required");

    private static async Task Handle(HttpContext ctx, bool allowed, Func<JsonObject, string> change)
    {
        if (!allowed)
        {
            await OpenAiEndpoints.Error(ctx, 404, "runtime LoRA updating is off: start temper serve with --allow-runtime-lora", "not_found").ConfigureAwait(false);
            return;
        }
        string answer;
        try
        {
            var body = await JsonNode.ParseAsync(ctx.Request.Body, cancellationToken: ctx.RequestAborted).ConfigureAwait(false) as JsonObject
                ?? throw new TemperException("the request body must be a JSON object");
            answer = change(body);
        }
        catch (UnknownAdapterException e)
        {
            await OpenAiEndpoints.Error(ctx, 404, e.Message, "not_found").ConfigureAwait(false);
            return;
        }
        catch (Exception e) when (e is JsonException or TemperException)
        {
            await OpenAiEndpoints.Refuse(ctx, e).ConfigureAwait(false);
            return;
        }
        ctx.Response.ContentType = "text/plain; charset=utf-8";
        await ctx.Response.WriteAsync(answer, ctx.RequestAborted).ConfigureAwait(false);
    }
}
