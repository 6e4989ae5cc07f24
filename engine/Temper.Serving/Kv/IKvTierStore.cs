// Where evicted prefix-cache blocks go when the device pool reuses their memory: slower tiers (host
// memory, then disk) that keep a block's K/V by its chained hash and copy it back on a prefix hit; and
// where a preempted sequence's blocks wait (swapped to host memory) until the scheduler resumes it;
// and where adapters evicted from the device wait, read back ahead of need by a prefetch; cached
// blocks a waiting request will look up are read back ahead of need the same way (PrefetchBlocks).
namespace Temper.Serving.Kv;

public interface IKvTierStore
{
    /// <summary>Keeps the contents of device block <paramref name="block"/> under <paramref name="hash"/> (it is about to be reused).</summary>
    void Offload(ulong hash, int block);
    bool Contains(ulong hash);
    /// <summary>Copies the block stored under <paramref name="hash"/> into device block <paramref name="block"/> (from a prefetch's data when one read it).</summary>
    bool TryRestore(ulong hash, int block);
    /// <summary>
    /// Reads ahead, off the calling thread, the blocks among <paramref name="wanted"/> (chained hashes in
    /// the order they will be restored) that a slow tier holds, keeping them from eviction until restored,
    /// as many as the host tier has room for; reads of blocks no longer wanted are given up. Called on the
    /// stepping thread before each step runs.
    /// </summary>
    void PrefetchBlocks(IReadOnlyList<ulong> wanted);
    /// <summary>Whether a sequence's blocks can be swapped out at all (there is a host tier).</summary>
    bool CanSwap { get; }
    /// <summary>Copies every block of <paramref name="s"/> to host memory under the sequence; false when they do not fit.</summary>
    bool SwapOut(SequenceBlocks s);
    /// <summary>Copies a swapped sequence's blocks into device <paramref name="blocks"/> (in order) and frees the host copy.</summary>
    void SwapIn(SequenceBlocks s, IReadOnlyList<int> blocks);
    /// <summary>Forgets a swapped sequence's host copy (it finished or was cancelled while swapped).</summary>
    void DropSwapped(SequenceBlocks s);
    /// <summary>The device tier's counters (KV and adapters).</summary>
    TierCounters Device { get; }
    int HostBlocks { get; }
    int DiskBlocks { get; }
    /// <summary>Blocks of room an adapter of <paramref name="floats"/> floats takes in a tier.</summary>
    int UnitsFor(int floats);
    /// <summary>Keeps an adapter's padded weights evicted from the device (host, else disk); false when no tier can hold it.</summary>
    bool StoreAdapter(ulong key, string name, float[] data);
    /// <summary>Takes an adapter back for the device (null: no tier holds it); <paramref name="prefetched"/> is what a PrefetchAdapter read.</summary>
    float[]? TakeAdapter(ulong key, float[]? prefetched = null);
    /// <summary>Starts taking an adapter off disk ahead of need: a function that reads it on any thread (null: not on disk).</summary>
    Func<float[]>? PrefetchAdapter(ulong key);
    void DropAdapter(ulong key);
    void RecordDeviceHit();
    void RecordDeviceMiss();
}
