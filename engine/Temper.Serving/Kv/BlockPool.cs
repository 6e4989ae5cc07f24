// The KV block allocator: ids 0..Count-1 of fixed-size cache blocks, a reference count per block
// (blocks shared copy-on-write between sequences), and the prefix cache: a full block is registered
// under the hash of its tokens chained with its prefix's hash, and stays findable after its last user
// frees it until it is reused. Free blocks with no content are taken first; then the least recently
// freed cached block is evicted (its hash handed to OnEvict, so a tier store can keep its contents).
// The pool is the device tier's one budget: other residents (LoRA adapters, IPoolResidents) hold
// blocks too, and one LRU runs over both kinds: when no block is empty, whichever of the least
// recently freed cached block and the residents' least recently used one is older gives its room up.
namespace Temper.Serving.Kv;

/// <summary>Holders of pool blocks other than sequences (adapters), evictable by the pool's LRU.</summary>
public interface IPoolResidents
{
    /// <summary>The pool clock (BlockPool.Tick) when the least recently used evictable resident was last used; long.MaxValue when none is evictable.</summary>
    long OldestStamp { get; }
    /// <summary>Blocks that evicting every evictable resident would free.</summary>
    int EvictableBlocks { get; }
    /// <summary>Evicts the resident of OldestStamp, releasing its blocks to the pool.</summary>
    void EvictOldest();
    /// <summary>Throws a TemperException when a resident is larger than a whole tier of <paramref name="tiers"/>.</summary>
    void CheckFits(IKvTierStore tiers);
}

public sealed class BlockPool
{
    private readonly int[] _refs;
    private readonly ulong?[] _hash;
    private readonly Stack<int> _empty = new();
    private readonly LinkedList<int> _evictable = new();          // ref 0 with content, least recently freed first
    private readonly LinkedListNode<int>?[] _evictNode;
    private readonly long[] _freedAt;                              // Tick when a block became evictable
    private long _clock;
    private readonly Dictionary<ulong, int> _byHash = [];

    public BlockPool(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        Count = count;
        _refs = new int[count];
        _hash = new ulong?[count];
        _evictNode = new LinkedListNode<int>?[count];
        _freedAt = new long[count];
        for (int i = count - 1; i >= 0; i--) _empty.Push(i);
    }

    public int Count { get; }
    /// <summary>Blocks a new allocation can take now (empty ones, evictable cached ones, and those of evictable residents).</summary>
    public int Available => _empty.Count + _evictable.Count + (Residents?.EvictableBlocks ?? 0);
    /// <summary>Adapters (or other holders) sharing the pool's budget and its LRU.</summary>
    public IPoolResidents? Residents { get; set; }
    /// <summary>Advances the LRU clock: a resident's stamp when it is used.</summary>
    public long Tick() => ++_clock;
    /// <summary>Blocks whose contents are findable by hash (in use or evictable).</summary>
    public int Cached => _byHash.Count;
    public int RefCount(int block) => _refs[block];

    /// <summary>Called with (block, hash) just before a cached block's contents are overwritten.</summary>
    public Action<int, ulong>? OnEvict { get; set; }

    /// <summary>A block for new contents (ref 1), or -1 when none is left.</summary>
    public int Allocate()
    {
        int b;
        while (_empty.Count == 0)
        {
            long other = Residents?.OldestStamp ?? long.MaxValue;
            if (_evictable.First is { } first && _freedAt[first.Value] <= other) break;
            if (other == long.MaxValue) return -1;
            Residents!.EvictOldest();                                // releases its blocks into _empty
        }
        if (_empty.Count > 0) b = _empty.Pop();
        else
        {
            var node = _evictable.First!;
            b = node.Value;
            _evictable.RemoveFirst();
            _evictNode[b] = null;
            ulong h = _hash[b]!.Value;
            OnEvict?.Invoke(b, h);
            _byHash.Remove(h);
            _hash[b] = null;
        }
        _refs[b] = 1;
        return b;
    }

    public void Retain(int block)
    {
        if (_refs[block] == 0 && _evictNode[block] is { } node)
        {
            _evictable.Remove(node);
            _evictNode[block] = null;
        }
        _refs[block]++;
    }

    public void Release(int block)
    {
        if (_refs[block] <= 0) throw new InvalidOperationException($"block {block} released more often than retained");
        if (--_refs[block] > 0) return;
        if (_hash[block] != null)
        {
            _evictNode[block] = _evictable.AddLast(block);
            _freedAt[block] = Tick();
        }
        else _empty.Push(block);
    }

    /// <summary>The cached block holding the tokens with this chained hash (retained for the caller), or -1.</summary>
    public int Lookup(ulong hash)
    {
        if (!_byHash.TryGetValue(hash, out int b)) return -1;
        Retain(b);
        return b;
    }

    public bool Contains(ulong hash) => _byHash.ContainsKey(hash);

    /// <summary>Makes a full block findable by hash (a second block with the same contents stays unregistered).</summary>
    public void Register(int block, ulong hash)
    {
        if (_hash[block] != null || _byHash.ContainsKey(hash)) return;
        _hash[block] = hash;
        _byHash[hash] = block;
    }

    /// <summary>The hash of a block of tokens after a prefix with hash <paramref name="prefix"/> (FNV-1a, then a SplitMix64 finaliser).</summary>
    public static ulong ChainHash(ulong prefix, ReadOnlySpan<int> tokens)
    {
        ulong h = 0xCBF29CE484222325UL ^ prefix;
        foreach (int t in tokens)
        {
            h = (h ^ (uint)t) * 0x100000001B3UL;
            h = (h ^ (h >> 29)) * 0xBF58476D1CE4E5B9UL;
        }
        h ^= h >> 31;
        return h == 0 ? 1 : h;
    }
}
