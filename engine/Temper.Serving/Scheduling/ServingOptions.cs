// Sizes of the serving engine: the paged KV pool (blocks of BlockSize positions), the token budget of
// one step (decode tokens first, then prefill chunks of at most what is left), how many sequences run
// at once, the prompt + completion length and the log-probability alternatives a request may ask for,
// how a sequence gives its blocks up when the pool runs short, the host and disk tiers below the pool
// (in blocks of the pool's size), what the KV blocks hold, and n-gram speculative decoding.
using Temper.Core;
using Temper.Models;
using Temper.Models.Speculative;

namespace Temper.Serving.Scheduling;

public sealed record ServingOptions
{
    public int BlockSize { get; init; } = 16;
    public int Blocks { get; init; } = 512;
    /// <summary>Tokens computed per step over all sequences (prefills are chunked to fit).</summary>
    public int MaxBatchTokens { get; init; } = 256;
    /// <summary>Most sequences in the running batch (vLLM's --max-num-seqs); a request of n choices takes n; the rest wait.</summary>
    public int MaxRunning { get; init; } = 64;
    /// <summary>Prompt + completion limit per sequence (vLLM's --max-model-len; default: the model's max positions, within the KV pool).</summary>
    public int? MaxSequenceLength { get; init; }
    /// <summary>Most log-probability alternatives a request may ask for, of its tokens or its prompt's (vLLM's --max-logprobs); -1: the vocabulary.</summary>
    public int MaxLogprobs { get; init; } = 20;
    /// <summary>Whether full prompt blocks are shared between requests through the prefix cache.</summary>
    public bool PrefixCaching { get; init; } = true;
    /// <summary>
    /// How a preempted sequence gives its blocks up: swapped to the host tier and copied back on resume,
    /// or dropped and recomputed. Default (null): swap when the cache has a host tier. Swap falls back to
    /// recomputation for a sequence the host tier cannot hold.
    /// </summary>
    public PreemptionMode? Preemption { get; init; }
    /// <summary>
    /// KV tiers below the device pool the engine makes and owns (KvTiers): host-memory blocks, and disk
    /// blocks in a memory-mapped <see cref="DiskFile"/> (created, deleted when the engine is disposed).
    /// Both 0 (the default): no tiers, unless the caller attaches its own KvTiers to the engine's cache.
    /// </summary>
    public int HostBlocks { get; init; }
    public int DiskBlocks { get; init; }
    public string? DiskFile { get; init; }
    /// <summary>
    /// Prompt-lookup speculation (vLLM's --speculative-config method "ngram"): each decode sequence (greedy or
    /// sampled; not a JSON-constrained one) proposes up to NumTokens tokens from its own context, verified in one chunk. Null: off. A draft model is not served.
    /// </summary>
    public SpeculativeOptions? Speculative { get; init; }
    /// <summary>What the KV cache holds, f32 or bf16 (vLLM's --kv-cache-dtype). Null (auto): on a device backend the model's weight
    /// dtype, as vLLM's default, so a bf16 model keeps bf16 K/V (half the bytes a block takes on every tier and paged attention
    /// reads); on the CPU backend f32, where widening bf16 rows cost more than their bytes saved (PERF.md, 2026-11-25).</summary>
    public DType? KvCacheDType { get; init; }

    /// <summary>The KV cache dtype for a model: KvCacheDType, or auto's choice.</summary>
    public DType KvCacheDTypeFor(Decoder decoder) =>
        KvCacheDType ?? (decoder.Backend.KeepsBf16Activations && decoder.Weights.Embed.DType == DType.BF16 ? DType.BF16 : DType.F32);
}

public enum PreemptionMode { Swap, Recompute }

/// <summary>What the engine has done so far (read while it runs; each field is a snapshot).</summary>
public sealed record ServingStats(long Steps, long PrefillTokens, long DecodeTokens, long CachedPrefixTokens, long Preemptions,
    long RequestsFinished, long CopiedOnWrite, int Running, int Waiting, int FreeBlocks, long Swaps, long Recomputations,
    long SpecDraftTokens = 0, long SpecAcceptedTokens = 0);
