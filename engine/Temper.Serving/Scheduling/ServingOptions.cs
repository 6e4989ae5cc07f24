// Sizes of the serving engine: the paged KV pool (blocks of BlockSize positions), the token budget of
// one step (decode tokens first, then prefill chunks of at most what is left), and how many sequences
// run at once.
namespace Temper.Serving.Scheduling;

public sealed record ServingOptions
{
    public int BlockSize { get; init; } = 16;
    public int Blocks { get; init; } = 512;
    /// <summary>Tokens computed per step over all sequences (prefills are chunked to fit).</summary>
    public int MaxBatchTokens { get; init; } = 256;
    public int MaxRunning { get; init; } = 64;
    /// <summary>Prompt + completion limit per sequence (default: the model's max positions).</summary>
    public int? MaxSequenceLength { get; init; }
    /// <summary>Whether full prompt blocks are shared between requests through the prefix cache.</summary>
    public bool PrefixCaching { get; init; } = true;
}

/// <summary>What the engine has done so far (read while it runs; each field is a snapshot).</summary>
public sealed record ServingStats(long Steps, long PrefillTokens, long DecodeTokens, long CachedPrefixTokens, long Preemptions,
    long RequestsFinished, long CopiedOnWrite, int Running, int Waiting, int FreeBlocks);
