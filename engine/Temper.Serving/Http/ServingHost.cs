// The HTTP server: Kestrel on one loopback (or given) address and port (0 picks a free one), the
// OpenAI-compatible routes over a served model, request bodies capped (413 past the cap), an optional
// API key that /v1/ routes require as "Authorization: Bearer KEY" (401 otherwise; /health and /metrics
// stay open, as vLLM's --api-key has it), vLLM's runtime LoRA routes when allowed (LoraRoutes), and the
// address it actually listens on for clients and tests.
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Temper.Core;

namespace Temper.Serving.Http;

public sealed class ServingHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private ServingHost(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
    }

    /// <summary>The base address clients use, e.g. http://127.0.0.1:8000/.</summary>
    public Uri Address { get; }

    public static async Task<ServingHost> StartAsync(ServedModel model, string host, int port, long maxBodyBytes = 4 << 20, string? apiKey = null,
        bool allowRuntimeLora = false)
    {
        if (apiKey is { Length: 0 }) throw new TemperException("--api-key must not be empty");
        if (!IPAddress.TryParse(host == "localhost" ? "127.0.0.1" : host, out var ip)) throw new TemperException($"--host must be an IP address (got '{host}')");
        if (port is < 0 or > 65535) throw new TemperException($"--port must be in 0..65535 (got {port})");
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(ip, port);
            k.Limits.MaxRequestBodySize = maxBodyBytes;
        });
        var app = builder.Build();
        if (apiKey != null)
        {
            byte[] expected = System.Text.Encoding.UTF8.GetBytes("Bearer " + apiKey);
            app.Use(async (ctx, next) =>
            {
                byte[] given = System.Text.Encoding.UTF8.GetBytes(ctx.Request.Headers.Authorization.ToString());
                if (ctx.Request.Path.StartsWithSegments("/v1") && !System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(given, expected))
                {
                    await OpenAiEndpoints.Error(ctx, 401, "a valid API key is required: Authorization: Bearer KEY", "invalid_api_key").ConfigureAwait(false);
                    return;
                }
                await next(ctx).ConfigureAwait(false);
            });
        }
        OpenAiEndpoints.Map(app, model);
        LoraRoutes.Map(app, model, allowRuntimeLora);
        await app.StartAsync().ConfigureAwait(false);
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new ServingHost(app, new Uri(bound.EndsWith('/') ? bound : bound + "/"));
    }

    public Task WaitForShutdownAsync(CancellationToken cancel) => _app.WaitForShutdownAsync(cancel);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
    }
}
