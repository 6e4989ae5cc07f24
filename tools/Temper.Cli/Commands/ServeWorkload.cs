// The workload `temper bench serve` and `temper bench serve-sweep` share: seeded random prompts, a device
// pool sized for it (each request's KV blocks plus every adapter's bytes in blocks: adapters live in the
// same tiers), and one measured run on a fresh engine after a two-token warm-up request (greedy, or sampled
// with request i's seed i).
using Temper.Core;
using Temper.Models;
using Temper.Serving.Bench;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Cli.Commands;

internal static class ServeWorkload
{
    public const int BlockSize = 16;

    /// <summary>count prompts of len tokens; the first shared tokens are the same in all of them.</summary>
    public static int[][] Prompts(int count, int len, int shared, int vocab, int seed = 7)
    {
        var rng = new Random(seed);
        var prefix = Enumerable.Range(0, shared).Select(_ => rng.Next(vocab)).ToArray();
        return Enumerable.Range(0, count).Select(_ => prefix.Concat(Enumerable.Range(0, len - shared).Select(_ => rng.Next(vocab))).ToArray()).ToArray();
    }

    /// <summary>The bytes of one KV block of <paramref name="kvType"/> and of one rank-r adapter (f32) on every projection a served adapter may target.</summary>
    public static (long Block, long Adapter) Bytes(Decoder decoder, int rank, DType kvType)
    {
        var cfg = decoder.Config;
        return (2L * cfg.NumLayers * kvType.ByteCount((long)BlockSize * cfg.NumKvHeads * cfg.HeadDim), AdapterStack.ServedProjections(decoder.Weights).Sum(q => (long)rank * (q.In + q.Out) * sizeof(float)));
    }

    /// <summary>Device blocks for requests of promptLen + tokens and adapters resident together.</summary>
    public static int PoolBlocks(Decoder decoder, int requests, int promptLen, int tokens, int adapters, int rank, DType kvType)
    {
        var (block, adapter) = Bytes(decoder, rank, kvType);
        return requests * ((promptLen + tokens) / BlockSize + 2) + 8 + adapters * (int)((adapter + block - 1) / block);
    }

    /// <summary>One measured run of the prompts (request i on adapterOf(i), greedy, or sampled with <paramref name="sampling"/> and
    /// seed i) on a fresh engine (no adapter stack: the base model alone).</summary>
    public static (ServingBenchResult Result, ServingEngine Engine) Measure(Decoder decoder, ServingOptions options, AdapterStack? stack, int[][] prompts, int tokens, Func<int, string?> adapterOf,
        SamplingOptions? sampling = null)
    {
        var engine = new ServingEngine(decoder, options, stack);
        ServingBench.Run(engine, [new ServingRequest { PromptIds = prompts[0][..Math.Min(8, prompts[0].Length)], MaxNewTokens = 2, IgnoreEos = true, Adapter = adapterOf(0) }]);
        var result = ServingBench.Run(engine, prompts.Select((pr, i) => new ServingRequest
        {
            PromptIds = pr, MaxNewTokens = tokens, IgnoreEos = true, Adapter = adapterOf(i), Sampling = sampling is null ? new() : sampling with { Seed = (ulong)i },
        }).ToArray());
        return (result, engine);
    }
}
