// `temper bench serve-sweep [--model DIR] [--concurrency 1,4,16,64] [--adapters 1,10,100] [--prompt-len 64]
//   [--tokens 32] [--rank 16] [--out DIR]`: issue 10's serving table in one command. For each concurrency C,
// C requests are submitted at once (each stream read as it arrives) to a fresh continuous-batching
// engine: on the base model (what any one merged adapter costs: a merged adapter is a plain model), and
// spread over A adapters for each A (request i on adapter i mod A, the gathered LoRA op mixing them). The
// device pool holds the KV of the C requests and all A adapters. Prints a line per point and writes
// DIR/serve-sweep.html (a chart of tokens/s by concurrency, a line per adapter count) and .json.
// Without --model: seeded random SmolLM-135M-shaped weights; adapters are seeded random PEFT adapters.
using System.CommandLine;
using Temper.Core;
using Temper.Models;
using Temper.Serving.Bench;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Cli.Commands;

internal static class ServeSweepCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model", "-m") { Description = "Model folder (default: random SmolLM-135M-shaped weights)" };
        var concurrency = new Option<string>("--concurrency") { Description = "Comma-separated concurrent request counts", DefaultValueFactory = _ => "1,4,16,64" };
        var adapters = new Option<string>("--adapters") { Description = "Comma-separated adapter counts (the base model always runs too)", DefaultValueFactory = _ => "1,10,100" };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens per request", DefaultValueFactory = _ => 64 };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per request", DefaultValueFactory = _ => 32 };
        var rank = new Option<int>("--rank") { Description = "Rank of the random adapters", DefaultValueFactory = _ => 16 };
        var batchTokens = new Option<int>("--max-batch-tokens") { Description = "Tokens computed per step", DefaultValueFactory = _ => 512 };
        var outDir = new Option<string>("--out") { Description = "Folder for serve-sweep.html and .json", DefaultValueFactory = _ => "serve-sweep" };
        var threads = CliOptions.Threads();
        var cmd = new Command("serve-sweep", "Serving throughput by concurrent requests and adapter count, beside the base (merged) model; HTML chart");
        foreach (var o in new Option[] { model, concurrency, adapters, promptLen, tokens, rank, batchTokens, outDir, threads }) cmd.Add(o);
        cmd.SetGuardedAction(p =>
        {
            int[] cs = Counts(p.GetValue(concurrency)!, "--concurrency", 1), adapterCounts = Counts(p.GetValue(adapters)!, "--adapters", 1);
            int pl = p.GetValue(promptLen), n = p.GetValue(tokens), r = p.GetValue(rank);
            if (pl < 1 || n < 1 || r < 1) throw new TemperException("--prompt-len, --tokens and --rank must be >= 1");
            var be = CliOptions.Backend(p, p.GetValue(threads));
            var (decoder, lm, what) = BenchCommand.ModelOrRandom(p, model, be);
            using var owned = lm;
            string tmp = Path.Combine(Path.GetTempPath(), $"temper-serve-sweep-{Environment.ProcessId}");
            using var stack = new AdapterStack(decoder.Weights, be);
            try
            {
                int most = adapterCounts.Max();
                for (int i = 0; i < most; i++)
                    stack.Add($"ad{i}", LoraAdapter.Load(ServeBenchCommand.WriteRandomAdapter(Path.Combine(tmp, $"ad{i}"), decoder.Weights, r, seed: 100 + i)));
                Console.WriteLine($"model: {what}; backend: {be.Name}; {pl} prompt + {n} new tokens per request, rank {r}, {most} adapters loaded");
                var points = new List<ServingSweepPoint>();
                foreach (int c in cs)
                {
                    var prompts = ServeWorkload.Prompts(c, pl, 0, decoder.Config.VocabSize);
                    foreach (int a in adapterCounts.Prepend(0))
                    {
                        var options = new ServingOptions
                        {
                            BlockSize = ServeWorkload.BlockSize, Blocks = ServeWorkload.PoolBlocks(decoder, c, pl, n, a, r, new ServingOptions().KvCacheDTypeFor(decoder)),
                            MaxBatchTokens = p.GetValue(batchTokens), MaxRunning = c,
                        };
                        var (res, engine) = ServeWorkload.Measure(decoder, options, a == 0 ? null : stack, prompts, n, i => a == 0 ? null : $"ad{i % a}");
                        engine.Dispose();
                        points.Add(new ServingSweepPoint(c, a, res.TokensPerSecond, res.TtftP50Ms, res.ItlP50Ms, res.ItlP99Ms));
                        Console.WriteLine($"concurrency {c,4}, {ServingSweepReport.Label(a),-20} {res.TokensPerSecond,9:F1} tokens/s; TTFT p50 {res.TtftP50Ms:F0} ms; inter-token p50 {res.ItlP50Ms:F1} ms, p99 {res.ItlP99Ms:F1} ms");
                    }
                }
                string html = ServingSweepReport.Write(p.GetValue(outDir)!, $"{what}; backend {be.Name}; {pl} prompt + {n} new tokens per request; LoRA rank {r} on all projections", points);
                Console.WriteLine($"report: {html}");
            }
            finally
            {
                if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            }
            return 0;
        });
        return cmd;
    }

    private static int[] Counts(string text, string option, int min)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var counts = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out counts[i]) || counts[i] < min) throw new TemperException($"{option}: '{parts[i]}' is not a count >= {min}");
        if (counts.Length == 0) throw new TemperException($"{option} is empty");
        return counts.Distinct().Order().ToArray();
    }
}
