// `temper serve --model DIR [--adapter NAME=DIR ...] [--host 127.0.0.1] [--port 8000]`: an
// OpenAI-compatible HTTP server (/v1/models, /v1/completions, /v1/chat/completions, streaming and
// logprobs) over one base model and its LoRA adapters, batched continuously over a paged KV cache.
// A request's `model` field picks the base (named after its folder) or an adapter; a bare --adapter
// DIR is named after its folder. Runs until Ctrl+C.
using System.CommandLine;
using Temper.Core;
using Temper.Models;
using Temper.Serving.Http;
using Temper.Serving.Scheduling;

namespace Temper.Cli.Commands;

internal static class ServeCommand
{
    public static Command Create()
    {
        var cmd = new Command("serve", "OpenAI-compatible HTTP server with continuous batching and multi-LoRA");
        var model = CliOptions.Model();
        var adapters = new Option<string[]>("--adapter") { Description = "LoRA adapter NAME=DIR, or DIR (named after its folder); repeatable", AllowMultipleArgumentsPerToken = false };
        var host = new Option<string>("--host") { Description = "Address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port (0 picks a free one)", DefaultValueFactory = _ => 8000 };
        var blocks = new Option<int>("--kv-blocks") { Description = "KV cache blocks (resident adapters take their size in blocks of it too)", DefaultValueFactory = _ => 1024 };
        var blockSize = new Option<int>("--block-size") { Description = "Positions per KV block", DefaultValueFactory = _ => 16 };
        var batchTokens = new Option<int>("--max-batch-tokens") { Description = "Tokens computed per step (prefills are chunked to fit)", DefaultValueFactory = _ => 512 };
        var threads = CliOptions.Threads();
        cmd.Add(model); cmd.Add(adapters); cmd.Add(host); cmd.Add(port); cmd.Add(blocks); cmd.Add(blockSize); cmd.Add(batchTokens); cmd.Add(threads);
        cmd.SetGuardedAction(p =>
        {
            var named = (p.GetValue(adapters) ?? []).Select(ParseAdapter).ToList();
            var options = new ServingOptions { Blocks = p.GetValue(blocks), BlockSize = p.GetValue(blockSize), MaxBatchTokens = p.GetValue(batchTokens) };
            if (options.Blocks < 1 || options.BlockSize < 1) throw new TemperException("--kv-blocks and --block-size must be >= 1");
            var lm = CliOptions.LoadModel(p, model, null, threads);
            using var served = new ServedModel(lm, named, options);
            var server = ServingHost.StartAsync(served, p.GetValue(host)!, p.GetValue(port)).GetAwaiter().GetResult();
            Console.WriteLine($"serving {string.Join(", ", served.ModelIds)} on {server.Address}v1 ({lm.Decoder.Backend.Name}); Ctrl+C stops");
            using var stop = new CancellationTokenSource();
            Console.CancelKeyPress += (_, e) =>
            {
                e.Cancel = true;
                stop.Cancel();
            };
            try { server.WaitForShutdownAsync(stop.Token).GetAwaiter().GetResult(); }
            catch (OperationCanceledException) { }
            server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            lm.Dispose();
            return 0;
        });
        return cmd;
    }

    private static (string Name, string Dir) ParseAdapter(string spec)
    {
        int eq = spec.IndexOf('=', StringComparison.Ordinal);
        string dir = eq < 0 ? spec : spec[(eq + 1)..];
        string name = eq < 0 ? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir))) : spec[..eq];
        if (name.Length == 0 || dir.Length == 0) throw new TemperException($"--adapter '{spec}': expected NAME=DIR or DIR");
        if (!Directory.Exists(dir)) throw new TemperException($"--adapter {name}: folder '{dir}' not found");
        return (name, dir);
    }
}
