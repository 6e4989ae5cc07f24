// `temper serve --model DIR [--adapter NAME=DIR ...] [--host 127.0.0.1] [--port 8000] [--kv-blocks B]
// [--host-blocks H] [--disk-blocks D --disk-dir DIR] [--api-key KEY] [--reasoning-parser qwen3|deepseek_r1]
// [--enable-auto-tool-choice --tool-call-parser hermes|llama3_json|mistral] [--allow-runtime-lora]
// [--speculative ngram --num-speculative-tokens K [--ngram-max N] [--ngram-min M]] [--served-model-name NAME ...]
// [--max-model-len N] [--max-num-seqs N] [--chat-template FILE|TEMPLATE] [--seed N] [--max-logprobs N] [--kv-cache-dtype auto|bfloat16|float32]`: an OpenAI-compatible HTTP server (/v1/models,
// /v1/completions, /v1/chat/completions, streaming and logprobs) over one base model and its LoRA
// adapters, batched continuously over a paged KV cache of B device blocks (resident adapters take
// blocks of it too), with host-memory and disk tiers below it as bench serve has them (evicted prefix
// blocks, swapped sequences and evicted adapters wait there; the disk tier is a memory-mapped file in
// DIR, deleted on exit).
// A request's `model` field picks the base (named after its folder) or an adapter; a bare --adapter
// DIR is named after its folder. --speculative ngram (vLLM's --speculative-config method "ngram") has
// every request but a JSON-constrained one propose K tokens by prompt lookup, verified in one chunk (sampled ones by
// their own sampler's draws, so their distribution and seeds are plain decoding's). With --allow-runtime-lora (vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING),
// POST /v1/load_lora_adapter and /v1/unload_lora_adapter add and remove adapters while serving. vLLM's flags of the same
// names, with its meanings: --served-model-name (the base's names, the first the one answers report), --max-model-len
// (prompt + max_tokens per request; above max_position_embeddings or the KV pool refused at startup), --max-num-seqs
// (sequences in the running batch), --chat-template (replacing the model's; one that does not parse refused), --seed (the
// seed of sampled requests that give none), --max-logprobs (the most logprobs/top_logprobs a request may ask) and --kv-cache-dtype (what the
// KV blocks hold; auto: the model's weight dtype). Runs until Ctrl+C.
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
        var hostBlocks = new Option<int>("--host-blocks") { Description = "KV blocks the host-memory tier holds (evicted prefix blocks, swapped sequences, evicted adapters); 0: none", DefaultValueFactory = _ => 0 };
        var diskBlocks = new Option<int>("--disk-blocks") { Description = "KV blocks the disk tier (a memory-mapped file in --disk-dir) holds; 0: none", DefaultValueFactory = _ => 0 };
        var diskDir = new Option<string?>("--disk-dir") { Description = "Folder for the disk tier's file, deleted on exit (default: the temporary folder)" };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on /v1/ routes (default: the TEMPER_API_KEY environment variable; unset: open)" };
        var threads = CliOptions.Threads();
        var reasoning = new Option<string?>("--reasoning-parser") { Description = "qwen3 or deepseek_r1: chat answers carry the <think> text in reasoning_content, apart from content (as vLLM's flag)" };
        var toolParser = new Option<string?>("--tool-call-parser") { Description = "hermes (Qwen2.5, Qwen3, Hermes), llama3_json (Llama 3.1-3.3) or mistral (Mistral 7B Instruct v0.3): how chat answers write tool calls (vLLM's flag)" };
        var autoTools = new Option<bool>("--enable-auto-tool-choice") { Description = "Let chat requests with tools (tool_choice \"auto\") get tool_calls, found by --tool-call-parser (vLLM's flag)" };
        var genConfig = new Option<string>("--generation-config")
        {
            Description = "auto: sampling fields and max_tokens a request leaves out come from the model's generation_config.json (vLLM's default); vllm: the OpenAI defaults (temperature 1, ...)",
            DefaultValueFactory = _ => "auto",
        };
        var runtimeLora = new Option<bool>("--allow-runtime-lora") { Description = "Serve POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's VLLM_ALLOW_RUNTIME_LORA_UPDATING)" };
        var servedNames = new Option<string[]>("--served-model-name") { Description = "The names requests may give for the base model; the first is the one answers and /v1/models report first (default: its folder's name)", AllowMultipleArgumentsPerToken = true };
        var maxModelLen = new Option<int?>("--max-model-len") { Description = "Context length: prompt + max_tokens per request (default: the model's max_position_embeddings, within the KV cache)" };
        var maxNumSeqs = new Option<int>("--max-num-seqs") { Description = "Most sequences in the running batch (a request of n choices takes n); the others wait", DefaultValueFactory = _ => 256 };
        var chatTemplate = CliOptions.ChatTemplate();
        var seed = new Option<long?>("--seed") { Description = "The seed of sampled requests that give none, so a sampled run repeats (default: a random one each)" };
        var maxLogprobs = new Option<int>("--max-logprobs") { Description = "Most logprobs / top_logprobs a request may ask for (-1: the vocabulary)", DefaultValueFactory = _ => 20 };
        var kvDType = CliOptions.KvCacheDType();
        foreach (var o in new Option[] { model, adapters, host, port, blocks, blockSize, batchTokens, hostBlocks, diskBlocks, diskDir, apiKey, reasoning, toolParser, autoTools, runtimeLora, genConfig,
                     servedNames, maxModelLen, maxNumSeqs, chatTemplate, seed, maxLogprobs, kvDType, threads }) cmd.Add(o);
        var speculative = new SpeculativeFlags();
        cmd.Add(speculative.Method);
        cmd.Add(speculative.NumTokens);
        cmd.Add(speculative.NgramMax);
        cmd.Add(speculative.NgramMin);
        cmd.SetGuardedAction(p =>
        {
            var named = (p.GetValue(adapters) ?? []).Select(ParseAdapter).ToList();
            var spec = speculative.ReadNgram(p, "serve");
            if (p.GetValue(hostBlocks) < 0 || p.GetValue(diskBlocks) < 0) throw new TemperException("--host-blocks and --disk-blocks must be >= 0");
            string dir = p.GetValue(diskDir) ?? Path.GetTempPath();
            if (p.GetValue(diskBlocks) > 0 && !Directory.Exists(dir)) throw new TemperException($"--disk-dir: folder '{dir}' not found");
            var options = new ServingOptions
            {
                Blocks = p.GetValue(blocks), BlockSize = p.GetValue(blockSize), MaxBatchTokens = p.GetValue(batchTokens),
                HostBlocks = p.GetValue(hostBlocks), DiskBlocks = p.GetValue(diskBlocks), DiskFile = Path.Combine(dir, $"temper-kv-{Environment.ProcessId}.bin"),
                Speculative = spec, MaxSequenceLength = p.GetValue(maxModelLen), MaxRunning = p.GetValue(maxNumSeqs), MaxLogprobs = p.GetValue(maxLogprobs),
                KvCacheDType = CliOptions.ParseKvCacheDType(p.GetValue(kvDType)!),
            };
            if (options.Blocks < 1 || options.BlockSize < 1) throw new TemperException("--kv-blocks and --block-size must be >= 1");
            if (options.MaxRunning < 1) throw new TemperException($"--max-num-seqs must be >= 1 (got {options.MaxRunning})");
            if (options.MaxLogprobs < -1) throw new TemperException($"--max-logprobs must be >= 0, or -1 for the vocabulary (got {options.MaxLogprobs})");
            var template = CliOptions.ChatTemplateOverride(p, chatTemplate, model); // a template that does not parse is refused before the model loads
            var parser = p.GetValue(reasoning) is string rp ? ReasoningParser.Create(rp) : null;
            var tools = p.GetValue(toolParser) is string tp ? ToolCallParser.Create(tp) : null;
            if (p.GetValue(autoTools) && tools == null) throw new TemperException("--enable-auto-tool-choice needs --tool-call-parser");
            bool fileDefaults = p.GetValue(genConfig) switch
            {
                "auto" => true,
                "vllm" => false,
                var v => throw new TemperException($"--generation-config must be auto or vllm, not '{v}'"),
            };
            var lm = CliOptions.LoadModel(p, model, null, threads);
            if (template != null) lm.Template = template;
            using var served = new ServedModel(lm, named, options, p.GetValue(servedNames))
            {
                Reasoning = parser, ToolCalls = p.GetValue(autoTools) ? tools : null, GenerationDefaults = fileDefaults ? lm.Generation : null, DefaultSeed = p.GetValue(seed),
            };
            var set = (served.GenerationDefaults?.FieldsSet() ?? []).Where(f => !f.StartsWith("do_sample", StringComparison.Ordinal)).ToList();
            if (set.Count > 0) Console.WriteLine($"request defaults from generation_config.json: {string.Join(", ", set)} (--generation-config vllm ignores them)");
            string? key = p.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("TEMPER_API_KEY");
            var server = ServingHost.StartAsync(served, p.GetValue(host)!, p.GetValue(port), apiKey: key, allowRuntimeLora: p.GetValue(runtimeLora)).GetAwaiter().GetResult();
            string tiers = $", KV cache {options.KvCacheDTypeFor(lm.Decoder).ToString().ToLowerInvariant()}" + (options.HostBlocks + options.DiskBlocks == 0 ? "" : $", KV tiers: host {options.HostBlocks} blocks, disk {options.DiskBlocks} blocks" + (options.DiskBlocks > 0 ? $" in {options.DiskFile}" : ""));
            Console.WriteLine($"serving {string.Join(", ", served.ModelIds)} on {server.Address}v1 ({lm.Decoder.Backend.Name}{tiers}{(key != null ? ", API key required" : "")}{(spec != null ? $", ngram speculation of {spec.NumTokens} tokens" : "")}{(p.GetValue(runtimeLora) ? ", runtime LoRA updating on" : "")}); Ctrl+C stops");
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
