// What the server tests do against a ServingHost on loopback (ServerFixture, ServeFlagsServer, ToolCallTests): the
// official OpenAI client pointed at its /v1 (with an API key: "unused" where the server asks for none), and a raw
// HTTP POST of a JSON body answered as a Reply (status, body text, and the body's JSON when it is JSON).
using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using OpenAI;
using Temper.Serving.Http;

namespace Temper.Serving.Tests;

/// <summary>A raw HTTP answer: status, body text, and the body's JSON when it is JSON.</summary>
public sealed record Reply(HttpStatusCode Status, string Text, JsonNode? Json)
{
    public string Message => (string?)Json?["error"]?["message"] ?? $"(no error message in '{Text}')";
}

public static class LoopbackServer
{
    /// <summary>The official OpenAI client for <paramref name="host"/>'s /v1 with <paramref name="apiKey"/>.</summary>
    public static OpenAIClient OpenAi(ServingHost host, string apiKey = "unused") =>
        new(new ApiKeyCredential(apiKey), new OpenAIClientOptions { Endpoint = new Uri(host.Address, "v1") });

    /// <summary>POSTs the JSON <paramref name="body"/> to <paramref name="path"/> (relative to the server's address).</summary>
    public static async Task<Reply> Post(HttpClient http, ServingHost host, string path, string body, CancellationToken cancel)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var r = await http.PostAsync(new Uri(host.Address, path), content, cancel);
        string text = await r.Content.ReadAsStringAsync(cancel);
        JsonNode? json = null;
        if (r.Content.Headers.ContentType?.MediaType == "application/json" && text.Length > 0) json = JsonNode.Parse(text);
        return new Reply(r.StatusCode, text, json);
    }
}
