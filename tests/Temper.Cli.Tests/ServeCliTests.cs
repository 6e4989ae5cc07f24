// `temper serve` and `temper bench serve` as a user runs them: the server starts on a free port, names
// its address, answers /v1/models with the base and a bare --adapter DIR named after its folder; a
// missing adapter folder is one line and exit 2; the bench prints throughput, latency and tier figures.
using System.Diagnostics;
using System.Text.Json.Nodes;

namespace Temper.Tests;

public sealed class ServeCliTests
{
    private static string Model => Fixtures.Hf("llama-tiny");

    [Fact]
    public async Task Serve_starts_on_a_free_port_and_lists_models()
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "temper.dll"), "serve", "--model", Model, "--adapter", Path.Combine(Model, "adapter"), "--port", "0", "--threads", "1" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        try
        {
            var line = await p.StandardOutput.ReadLineAsync(TestContext.Current.CancellationToken).AsTask().WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);
            Assert.NotNull(line);
            Assert.StartsWith("serving llama-tiny, adapter on http://127.0.0.1:", line);
            string v1 = line.Split(' ').First(w => w.StartsWith("http://", StringComparison.Ordinal));
            using var http = new HttpClient();
            var models = JsonNode.Parse(await http.GetStringAsync(new Uri(v1 + "/models"), TestContext.Current.CancellationToken))!;
            Assert.Equal(["llama-tiny", "adapter"], models["data"]!.AsArray().Select(m => (string?)m!["id"]));
        }
        finally
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync(TestContext.Current.CancellationToken);
        }
    }

    [Fact]
    public void Serve_with_a_missing_adapter_folder_is_one_line_and_exit_2()
    {
        var r = TemperCli.Run("serve", "--model", Model, "--adapter", "x=/nonexistent/adapter");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("temper: --adapter x: folder '/nonexistent/adapter' not found", r.Stderr.Trim());
    }

    [Fact]
    public void Bench_serve_prints_throughput_latency_and_tiers()
    {
        var r = TemperCli.Run("bench", "serve", "--model", Model, "--requests", "4", "--prompt-len", "8", "--tokens", "4", "--adapters", "2", "--threads", "1");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("16 tokens in", r.Stdout);
        Assert.Contains("TTFT p50", r.Stdout);
        Assert.Contains("inter-token p50", r.Stdout);
        Assert.Contains("tiers: device hits", r.Stdout);
        Assert.Contains("2 adapters vs 1:", r.Stdout);
    }
}
