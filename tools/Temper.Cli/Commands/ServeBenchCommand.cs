// `temper bench serve [--model DIR] [--requests R] [--prompt-len P] [--tokens N] [--adapters L]`:
// R requests submitted at once to the continuous-batching engine, measured three ways on fresh
// engines: the base model, every request on one LoRA adapter, and the requests spread over L
// adapters (the gathered LoRA op mixes them in one batch). Prints tokens/s, time to first token and
// inter-token latency (p50/p99), the engine's counters and the KV tiers' counters; --repeat K runs
// the three K times, interleaved, and reports each one's best round (by tokens per CPU-second, which
// a shared machine disturbs far less than wall time). Without --model it
// builds a seeded random SmolLM-135M-shaped model; adapters are seeded random PEFT adapters (rank
// --rank on all seven projections; in a mixture-of-experts model's sparse layers on q/k/v/o, the router, every
// expert and the shared expert and its gate)
// written to a temporary folder. Adapters live in the KV tiers: a resident adapter takes its bytes in
// KV blocks of the device pool (--kv-blocks, default enough for the workload), and
// evicted ones wait in the host tier (--host-blocks) or on disk (--disk-blocks, a temporary
// memory-mapped file), LRU over blocks and adapters together; the device holds as many
// adapters at once as its pool's blocks can (a smaller --kv-blocks keeps fewer there). Each tier's line
// gives KV and adapter moves side by side, and the disk tier's the KV blocks prefetched for queued
// requests (ready when their step needed them or not, dropped) with the read time that moved off the
// steps and the wait left in them. --speculative ngram --num-speculative-tokens K [--ngram-max N]
// [--ngram-min M] adds a run of the base model with prompt-lookup speculation beside the plain one, with
// the proposed and accepted token counts. --temperature T samples every request at temperature T (request i
// with seed i) instead of decoding greedily, so speculation's speed-up is measured on sampled requests too. --kv-cache-dtype as serve's.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Models;
using Temper.Models.Speculative;
using Temper.Serving.Bench;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Cli.Commands;

internal static class ServeBenchCommand
{
    public static Command Create()
    {
        var cmd = new Command("serve", "Continuous-batching throughput and latency, base vs 1 adapter vs many");
        var model = new Option<string?>("--model", "-m") { Description = "Model folder (default: random SmolLM-135M-shaped weights)" };
        var requests = new Option<int>("--requests") { Description = "Requests, all submitted at once", DefaultValueFactory = _ => 16 };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens per request", DefaultValueFactory = _ => 64 };
        var sharedPrefix = new Option<int>("--shared-prefix") { Description = "Leading prompt tokens all requests share (prefix cache)", DefaultValueFactory = _ => 0 };
        var tokens = new Option<int>("--tokens") { Description = "New tokens per request", DefaultValueFactory = _ => 32 };
        var adapters = new Option<int>("--adapters") { Description = "Adapters the mixed run spreads requests over (0: base only)", DefaultValueFactory = _ => 8 };
        var rank = new Option<int>("--rank") { Description = "Rank of the random adapters", DefaultValueFactory = _ => 16 };
        var batchTokens = new Option<int>("--max-batch-tokens") { Description = "Tokens computed per step", DefaultValueFactory = _ => 512 };
        var hostBlocks = new Option<int>("--host-blocks") { Description = "KV blocks the host tier holds", DefaultValueFactory = _ => 64 };
        var diskBlocks = new Option<int>("--disk-blocks") { Description = "KV blocks the disk tier (a temporary memory-mapped file) holds", DefaultValueFactory = _ => 0 };
        var poolBlocks = new Option<int>("--kv-blocks") { Description = "KV blocks of the device pool, shared with resident adapters (0: the workload's KV plus every adapter)", DefaultValueFactory = _ => 0 };
        var repeat = new Option<int>("--repeat") { Description = "Rounds of the three runs, interleaved; each line reports its best round by tokens per CPU-second (for a shared machine)", DefaultValueFactory = _ => 1 };
        var temperature = new Option<float?>("--temperature") { Description = "Sample every request at this temperature (request i with seed i) instead of greedily" };
        var threads = CliOptions.Threads();
        var kvDType = CliOptions.KvCacheDType();
        foreach (var o in new Option[] { model, requests, promptLen, sharedPrefix, tokens, adapters, rank, batchTokens, hostBlocks, diskBlocks, poolBlocks, repeat, temperature, kvDType, threads }) cmd.Add(o);
        var speculative = new SpeculativeFlags();
        foreach (Option o in new Option[] { speculative.Method, speculative.NumTokens, speculative.NgramMax, speculative.NgramMin }) cmd.Add(o);
        cmd.SetGuardedAction(p =>
        {
            int r = p.GetValue(requests), pl = p.GetValue(promptLen), n = p.GetValue(tokens), la = p.GetValue(adapters), shared = p.GetValue(sharedPrefix);
            if (r < 1 || pl < 1 || n < 1 || la < 0 || shared < 0 || shared > pl || p.GetValue(diskBlocks) < 0 || p.GetValue(poolBlocks) < 0 || p.GetValue(hostBlocks) < 0)
                throw new TemperException("--requests, --prompt-len, --tokens must be >= 1, --adapters, --kv-blocks, --host-blocks, --disk-blocks >= 0, --shared-prefix within the prompt");
            var spec = speculative.ReadNgram(p, "bench serve");
            var kvChoice = CliOptions.ParseKvCacheDType(p.GetValue(kvDType)!);
            SamplingOptions? sampling = p.GetValue(temperature) is float t ? new SamplingOptions { Greedy = false, Temperature = t } : null;
            if (sampling is { Temperature: not > 0 }) throw new TemperException($"--temperature must be > 0 (got {sampling.Temperature}); leave it out for greedy requests");
            var be = CliOptions.Backend(p, p.GetValue(threads));
            var (decoder, lm, what) = BenchCommand.ModelOrRandom(p, model, be);
            using var owned = lm;
            string tmp = Path.Combine(Path.GetTempPath(), $"temper-bench-serve-{Environment.ProcessId}");
            using var stack = new AdapterStack(decoder.Weights, be);
            try
            {
                var setup = Stopwatch.StartNew();
                var dirs = Enumerable.Range(0, la).Select(i => WriteRandomAdapter(Path.Combine(tmp, $"ad{i}"), decoder.Weights, p.GetValue(rank), seed: 100 + i)).ToArray();
                double written = setup.Elapsed.TotalSeconds;
                for (int i = 0; i < la; i++) stack.Add($"ad{i}", LoraAdapter.Load(dirs[i]));
                double added = setup.Elapsed.TotalSeconds - written;
                var prompts = ServeWorkload.Prompts(r, pl, shared, decoder.Config.VocabSize);
                int bs = ServeWorkload.BlockSize;
                var kvType = new ServingOptions { KvCacheDType = kvChoice }.KvCacheDTypeFor(decoder);
                var (blockBytes, adapterBytes) = ServeWorkload.Bytes(decoder, p.GetValue(rank), kvType);
                var options = new ServingOptions
                {
                    BlockSize = bs, Blocks = p.GetValue(poolBlocks) is > 0 and int pb ? pb : ServeWorkload.PoolBlocks(decoder, r, pl, n, la, p.GetValue(rank), kvType), MaxBatchTokens = p.GetValue(batchTokens), MaxRunning = Math.Max(r, 1),
                    HostBlocks = p.GetValue(hostBlocks), DiskBlocks = p.GetValue(diskBlocks), KvCacheDType = kvType,
                };
                Console.WriteLine($"model: {what}");
                Console.WriteLine($"backend: {be.Name}, threads {(p.GetValue(threads) == 0 ? Environment.ProcessorCount : p.GetValue(threads))}");
                Console.WriteLine($"workload: {r} requests x ({pl} prompt, {shared} shared, + {n} new tokens), {(sampling == null ? "greedy" : $"sampled at temperature {sampling.Temperature}")}, max batch tokens {options.MaxBatchTokens}, block size {bs}");
                if (la > 0) Console.WriteLine($"adapters: {la} random ones written in {written:F2} s, loaded and added in {added:F2} s");
                Console.WriteLine($"tiers: device {options.Blocks} blocks of {blockBytes} B of {kvType.ToString().ToLowerInvariant()} K/V (each adapter takes {(adapterBytes + blockBytes - 1) / blockBytes}), host {p.GetValue(hostBlocks)}, disk {p.GetValue(diskBlocks)}");

                (ServingBenchResult Result, string Tiers) Measure(Func<int, string?> adapterOf, SpeculativeOptions? speculation)
                {
                    if (p.GetValue(diskBlocks) > 0) Directory.CreateDirectory(tmp);
                    long folderLoads = stack.FolderLoads, folderBytes = stack.FolderBytes;
                    var (res, engine) = ServeWorkload.Measure(decoder, options with { DiskFile = Path.Combine(tmp, $"kv-{Guid.NewGuid():N}.bin"), Speculative = speculation }, stack, prompts, n, adapterOf, sampling);
                    using var owned = engine;
                    string tiers = engine.Tiers is { } t ? $"device: {t.Device}\n{"",-12} host: {t.Host}\n{"",-12} disk: {t.Disk}" : $"device: {stack.Device} (no host or disk tier)";
                    return (res, $"{tiers}\n{"",-12} adapters loaded from folders: {stack.FolderLoads - folderLoads} ({stack.FolderBytes - folderBytes} B)");
                }
                var runs = new List<(string Label, Func<int, string?> AdapterOf, SpeculativeOptions? Spec)> { ("base", _ => null, null) };
                if (spec != null) runs.Add(("base+ngram", _ => null, spec));
                if (la > 0)
                {
                    runs.Add(("1 adapter", _ => "ad0", null));
                    runs.Add(($"{la} adapters", i => $"ad{i % la}", null));
                }
                var best = new Dictionary<string, (ServingBenchResult Result, string Tiers)>();
                for (int round = 0; round < Math.Max(1, p.GetValue(repeat)); round++)
                    foreach (var (label, adapterOf, speculation) in runs)
                    {
                        var m = Measure(adapterOf, speculation);
                        if (!best.TryGetValue(label, out var b) || m.Result.TokensPerCpuSecond > b.Result.TokensPerCpuSecond) best[label] = m;
                    }
                foreach (var (label, _, _) in runs)
                {
                    var (res, tiers) = best[label];
                    Console.WriteLine($"{label,-12} {res.Tokens} tokens in {res.Seconds:F2} s = {res.TokensPerSecond:F1} tokens/s ({res.TokensPerCpuSecond:F1} per CPU-second); TTFT p50 {res.TtftP50Ms:F0} ms, p99 {res.TtftP99Ms:F0} ms; " +
                        $"inter-token p50 {res.ItlP50Ms:F1} ms, p99 {res.ItlP99Ms:F1} ms; {res.Stats.Steps} steps, {res.Stats.Preemptions} preemptions ({res.Stats.Swaps} swapped), {res.Stats.CachedPrefixTokens} prefix-cached tokens");
                    Console.WriteLine($"{"",-12} {tiers}");
                }
                if (spec != null)
                {
                    var (s, plain) = (best["base+ngram"].Result, best["base"].Result);
                    Console.WriteLine($"ngram speculation (K {spec.NumTokens}, n-grams {spec.NgramMin}..{spec.NgramMax}): {s.Stats.SpecAcceptedTokens} of {s.Stats.SpecDraftTokens} proposed tokens accepted; " +
                        $"{s.TokensPerSecond / plain.TokensPerSecond:F2}x the base's throughput ({s.TokensPerCpuSecond / plain.TokensPerCpuSecond:F2}x per CPU-second), {s.Stats.Steps} steps vs {plain.Stats.Steps}");
                }
                if (la > 0)
                {
                    var (many, one) = (best[$"{la} adapters"].Result, best["1 adapter"].Result);
                    Console.WriteLine($"{la} adapters vs 1: {many.TokensPerSecond / one.TokensPerSecond:F2}x the throughput ({many.TokensPerCpuSecond / one.TokensPerCpuSecond:F2}x per CPU-second)");
                }
            }
            finally
            {
                if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            }
            return 0;
        });
        return cmd;
    }

    /// <summary>A seeded random PEFT LoRA adapter (every projection of every layer, AdapterStack.ServedProjections) written to <paramref name="dir"/>.</summary>
    internal static string WriteRandomAdapter(string dir, ModelWeights w, int rank, int seed)
    {
        Directory.CreateDirectory(dir);
        var rng = new Random(seed);
        float[] Uniform(int count, float bound)
        {
            var v = new float[count];
            for (int i = 0; i < v.Length; i++) v[i] = (float)(rng.NextDouble() * 2 - 1) * bound;
            return v;
        }
        var tensors = new List<KeyValuePair<string, Tensor>>();
        var projections = AdapterStack.ServedProjections(w).ToArray();
        foreach (var p in projections)
        {
            var a = Uniform(rank * p.In, 1f / MathF.Sqrt(p.In));
            var b = Uniform(p.Out * rank, 0.01f);
            tensors.Add(new($"base_model.model.{p.Name}.lora_A.weight", Tensor.FromFloats(new Shape(rank, p.In), a)));
            tensors.Add(new($"base_model.model.{p.Name}.lora_B.weight", Tensor.FromFloats(new Shape(p.Out, rank), b)));
        }
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        var config = new Dictionary<string, object> { ["peft_type"] = "LORA", ["r"] = rank, ["lora_alpha"] = 2 * rank, ["target_modules"] = projections.Select(p => p.Name[(p.Name.LastIndexOf('.') + 1)..]).Distinct().ToArray() };
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), JsonSerializer.Serialize(config));
        return dir;
    }
}
