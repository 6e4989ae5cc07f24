// One sequence's view of the paged KV cache: its block table (block ids in position order, position p
// in block Blocks[p / BlockSize], slot p % BlockSize), how many positions hold K/V, and the chained
// hashes of its full blocks (the prefix-cache keys), seeded by its salt. A swapped-out sequence keeps
// its length and hashes but no blocks: its K/V wait in the host tier.
namespace Temper.Serving.Kv;

public sealed class SequenceBlocks
{
    internal List<int> BlockList { get; } = [];
    internal List<ulong> Hashes { get; } = [];

    public IReadOnlyList<int> Blocks => BlockList;
    /// <summary>
    /// Seeds the prefix-cache key chain: K/V depend on more than the tokens (the adapter a sequence runs
    /// with), so sequences share blocks only when their salts agree (0: the base model).
    /// </summary>
    public ulong Salt { get; init; }
    /// <summary>Positions whose K/V are written.</summary>
    public int Length { get; internal set; }
    /// <summary>Positions that came from the prefix cache at admission (not computed).</summary>
    public int CachedPrefix { get; internal set; }
    /// <summary>Blocks held in the host tier while the sequence is swapped out (0: resident).</summary>
    public int SwappedBlocks { get; internal set; }
}
