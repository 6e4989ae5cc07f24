// The paged KV cache: per layer a K and a V pool [Blocks, BlockSize, Hkv, D] in backend memory, shared
// by every sequence through block tables (SequenceBlocks). Sequences reserve blocks before a step,
// write their new tokens' K/V rows through their table, then commit, which registers newly full blocks
// in the prefix cache. Fork shares every block of a sequence (parallel sampling); the first write
// into a shared block copies it (copy-on-write). An optional tier store keeps evicted cached blocks
// in slower tiers and brings them back on a prefix hit, and holds the blocks of sequences swapped out
// by the scheduler (SwapOut / SwapIn). PrefixHashes gives the keys a prompt's prefix match will look
// up, so a scheduler can have the tiers read them ahead (IKvTierStore.PrefetchBlocks).
// The pools hold f32 or bf16 (DType; `--kv-cache-dtype`, as vLLM's: bf16 halves the bytes a block takes on every tier and
// the bytes paged attention reads; Write takes rows already in the pools' dtype).
using Temper.Core;
using Temper.Models;

namespace Temper.Serving.Kv;

public sealed class PagedKvCache : IDisposable
{
    private readonly IBackend _be;
    private readonly Tensor[] _k, _v;
    private readonly Tensor[] _kRows, _vRows;   // the same memory viewed as rows [Blocks*BlockSize, Hkv*D]

    public PagedKvCache(ModelConfig cfg, IBackend be, int blocks, int blockSize, DType dtype = DType.F32)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockSize);
        if (dtype != DType.F32 && dtype != DType.BF16) throw new TemperException($"serving: the KV cache holds f32 or bf16, not {dtype}");
        _be = be;
        DType = dtype;
        BlockSize = blockSize;
        Pool = new BlockPool(blocks);
        RowWidth = cfg.NumKvHeads * cfg.HeadDim;
        var shape = new Shape(blocks, blockSize, cfg.NumKvHeads, cfg.HeadDim);
        var rows = new Shape(blocks * blockSize, RowWidth);
        _k = new Tensor[cfg.NumLayers];
        _v = new Tensor[cfg.NumLayers];
        _kRows = new Tensor[cfg.NumLayers];
        _vRows = new Tensor[cfg.NumLayers];
        for (int l = 0; l < cfg.NumLayers; l++)
        {
            _k[l] = be.Zeros(shape, dtype);
            _v[l] = be.Zeros(shape, dtype);
            _kRows[l] = new Tensor(rows, dtype, _k[l].Storage);
            _vRows[l] = new Tensor(rows, dtype, _v[l].Storage);
        }
        Pool.OnEvict = (b, h) => Tiers?.Offload(h, b);
    }

    public int BlockSize { get; }
    /// <summary>What the pools hold: f32 or bf16.</summary>
    public DType DType { get; }
    public int Layers => _k.Length;
    public int RowWidth { get; }
    public BlockPool Pool { get; }
    public IBackend Backend => _be;
    /// <summary>Slower tiers for evicted prefix blocks (null: evicted blocks are dropped).</summary>
    public IKvTierStore? Tiers { get; set; }
    /// <summary>Bytes of K and V one block holds over all layers.</summary>
    public long BlockBytes => 2L * Layers * DType.ByteCount((long)BlockSize * RowWidth);

    public Tensor K(int layer) => _k[layer];
    public Tensor V(int layer) => _v[layer];
    /// <summary>Layer l's K or V pool as rows [Blocks*BlockSize, Hkv*D] (for tier copies).</summary>
    public Tensor KRows(int layer) => _kRows[layer];
    public Tensor VRows(int layer) => _vRows[layer];

    public int BlocksFor(int positions) => (positions + BlockSize - 1) / BlockSize;

    /// <summary>
    /// Attaches the longest cached prefix of <paramref name="tokens"/> in whole blocks (device tier, then
    /// the slower tiers) to an empty sequence; returns the positions it covers.
    /// </summary>
    public int MatchPrefix(SequenceBlocks s, ReadOnlySpan<int> tokens)
    {
        if (s.Length != 0 || s.BlockList.Count != 0) throw new InvalidOperationException("prefix matching needs an empty sequence");
        ulong prev = s.Salt;
        for (int b = 0; (b + 1) * BlockSize <= tokens.Length; b++)
        {
            ulong h = BlockPool.ChainHash(prev, tokens.Slice(b * BlockSize, BlockSize));
            int block = Pool.Lookup(h);
            if (block < 0)
            {
                if (Tiers == null || !Tiers.Contains(h)) break;
                block = Pool.Allocate();
                if (block < 0) break;
                if (!Tiers.TryRestore(h, block))
                {
                    Pool.Release(block);
                    break;
                }
                Pool.Register(block, h);
                Tiers.RecordDeviceMiss();
            }
            else Tiers?.RecordDeviceHit();
            s.BlockList.Add(block);
            s.Hashes.Add(h);
            prev = h;
        }
        s.Length = s.CachedPrefix = s.BlockList.Count * BlockSize;
        return s.Length;
    }

    /// <summary>The chained hashes of the full blocks of <paramref name="tokens"/> after <paramref name="salt"/>: the keys MatchPrefix looks up, in order.</summary>
    public ulong[] PrefixHashes(ulong salt, ReadOnlySpan<int> tokens)
    {
        var hashes = new ulong[tokens.Length / BlockSize];
        for (int b = 0; b < hashes.Length; b++) salt = hashes[b] = BlockPool.ChainHash(salt, tokens.Slice(b * BlockSize, BlockSize));
        return hashes;
    }

    /// <summary>
    /// Makes room for positions [Length, newLength): new blocks, and a private copy of a shared block
    /// that the first new position falls in. False (nothing changed) when the pool runs short.
    /// </summary>
    public bool Reserve(SequenceBlocks s, int newLength)
    {
        int need = BlocksFor(newLength) - s.BlockList.Count;
        int firstBlock = s.Length / BlockSize;
        bool copy = s.Length % BlockSize != 0 && firstBlock < s.BlockList.Count && Pool.RefCount(s.BlockList[firstBlock]) > 1;
        if (Math.Max(0, need) + (copy ? 1 : 0) > Pool.Available) return false;
        if (copy)
        {
            int old = s.BlockList[firstBlock], fresh = Pool.Allocate();
            CopyBlock(old, fresh, s.Length % BlockSize);
            Pool.Release(old);
            s.BlockList[firstBlock] = fresh;
            CopiedOnWrite++;
        }
        for (int i = 0; i < need; i++) s.BlockList.Add(Pool.Allocate());
        return true;
    }

    /// <summary>Blocks copied because a shared block was written (copy-on-write).</summary>
    public long CopiedOnWrite { get; private set; }

    /// <summary>Writes rows [row, row+count) of k,v [N, Hkv*D] (the pools' dtype) as positions [start, start+count) of layer l.</summary>
    public void Write(int layer, SequenceBlocks s, int start, Tensor k, Tensor v, int row, int count)
    {
        for (int p = start; p < start + count;)
        {
            int slot = p % BlockSize, run = Math.Min(BlockSize - slot, start + count - p);
            int dst = s.BlockList[p / BlockSize] * BlockSize + slot;
            _be.CopyRows(k, row + p - start, _kRows[layer], dst, run);
            _be.CopyRows(v, row + p - start, _vRows[layer], dst, run);
            p += run;
        }
    }

    /// <summary>Records that positions up to newLength hold K/V for tokens[..newLength] and registers newly full blocks.</summary>
    public void Commit(SequenceBlocks s, ReadOnlySpan<int> tokens, int newLength)
    {
        s.Length = newLength;
        while ((s.Hashes.Count + 1) * BlockSize <= newLength)
        {
            int b = s.Hashes.Count;
            ulong h = BlockPool.ChainHash(b == 0 ? s.Salt : s.Hashes[b - 1], tokens.Slice(b * BlockSize, BlockSize));
            s.Hashes.Add(h);
            Pool.Register(s.BlockList[b], h);
        }
    }

    /// <summary>
    /// Gives back the blocks past those positions [0, Length) need (reserved for speculated tokens that were
    /// rejected). They were never committed, so no prefix-cache key points at them.
    /// </summary>
    public void Trim(SequenceBlocks s)
    {
        for (int b = s.BlockList.Count - 1; b >= BlocksFor(s.Length); b--)
        {
            Pool.Release(s.BlockList[b]);
            s.BlockList.RemoveAt(b);
        }
    }

    /// <summary>A new sequence sharing every block of <paramref name="s"/> (copy-on-write from here on).</summary>
    public SequenceBlocks Fork(SequenceBlocks s)
    {
        var f = new SequenceBlocks { Salt = s.Salt, Length = s.Length, CachedPrefix = s.CachedPrefix };
        foreach (int b in s.BlockList)
        {
            Pool.Retain(b);
            f.BlockList.Add(b);
        }
        f.Hashes.AddRange(s.Hashes);
        return f;
    }

    /// <summary>
    /// Moves a sequence's K/V to the host tier and gives its device blocks back, keeping its length and
    /// hashes; false (nothing changed) without a tier that can hold them.
    /// </summary>
    public bool SwapOut(SequenceBlocks s)
    {
        if (s.SwappedBlocks > 0) throw new InvalidOperationException("the sequence is already swapped out");
        if (Tiers is not { CanSwap: true } tiers || !tiers.SwapOut(s)) return false;
        s.SwappedBlocks = s.BlockList.Count;
        foreach (int b in s.BlockList) Pool.Release(b);
        s.BlockList.Clear();
        return true;
    }

    /// <summary>Brings a swapped-out sequence's K/V back into fresh device blocks; false (nothing changed) when the pool is short.</summary>
    public bool SwapIn(SequenceBlocks s)
    {
        if (s.SwappedBlocks == 0) throw new InvalidOperationException("the sequence is not swapped out");
        if (s.SwappedBlocks > Pool.Available) return false;
        for (int i = 0; i < s.SwappedBlocks; i++) s.BlockList.Add(Pool.Allocate());
        Tiers!.SwapIn(s, s.BlockList);
        s.SwappedBlocks = 0;
        for (int b = 0; b < s.Hashes.Count; b++) Pool.Register(s.BlockList[b], s.Hashes[b]);
        return true;
    }

    /// <summary>Returns a sequence's blocks (cached full blocks stay findable until reused), or drops its swapped copy.</summary>
    public void Free(SequenceBlocks s)
    {
        if (s.SwappedBlocks > 0)
        {
            Tiers?.DropSwapped(s);
            s.SwappedBlocks = 0;
        }
        foreach (int b in s.BlockList) Pool.Release(b);
        s.BlockList.Clear();
        s.Hashes.Clear();
        s.Length = s.CachedPrefix = 0;
    }

    private void CopyBlock(int from, int to, int slots)
    {
        for (int l = 0; l < Layers; l++)
        {
            _be.CopyRows(_kRows[l], from * BlockSize, _kRows[l], to * BlockSize, slots);
            _be.CopyRows(_vRows[l], from * BlockSize, _vRows[l], to * BlockSize, slots);
        }
    }

    public void Dispose()
    {
        foreach (var t in _k) t.Dispose();
        foreach (var t in _v) t.Dispose();
    }
}
