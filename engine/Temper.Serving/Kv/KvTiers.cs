// KV tiering below the device pool: host memory, then disk (a memory-mapped file). When the device
// pool reuses a cached prefix block, its K/V (every layer, [BlockSize, Hkv*D] for K then V) move to
// the host tier; a full host tier moves its policy's victim to disk; a full disk tier drops its
// victim. A prefix-cache lookup that misses the device finds the block in host or disk and copies it
// back into a fresh device block (the tier gives it up: it lives on the device again). Copies go
// through a staging tensor of the backend (CopyRows, ToHost/FromHost), so any backend works; on the
// CPU backend the device tier is the backend's host memory. Swapped-out sequences (scheduler
// preemption by swapping) take host-tier room too: their blocks are copied to host arrays keyed by the
// sequence, cached prefix blocks move on to disk to make room, and the blocks come back to fresh device
// blocks when the sequence resumes. Every move is counted per tier: hits, misses, bytes in and out,
// evictions, swaps and the time the engine stalled on it.
using System.Diagnostics;
using System.IO.MemoryMappedFiles;
using Temper.Core;

namespace Temper.Serving.Kv;

public sealed class TierCounters
{
    public long Hits { get; internal set; }
    public long Misses { get; internal set; }
    public long BytesIn { get; internal set; }
    public long BytesOut { get; internal set; }
    public long Evictions { get; internal set; }
    public double StallMs { get; internal set; }
    public int Blocks { get; internal set; }
    /// <summary>Sequences swapped out to / in from this tier, and blocks it holds for swapped sequences now.</summary>
    public long SwapOuts { get; internal set; }
    public long SwapIns { get; internal set; }
    public int SwappedBlocks { get; internal set; }
    public override string ToString() => $"hits {Hits}, misses {Misses}, in {BytesIn} B, out {BytesOut} B, evictions {Evictions}, swaps out {SwapOuts} / in {SwapIns}, stall {StallMs:F2} ms, holding {Blocks} blocks + {SwappedBlocks} swapped";
}

public sealed class KvTiers : IKvTierStore, IDisposable
{
    private readonly PagedKvCache _cache;
    private readonly int _floats;                       // floats per block over all layers, K and V
    private readonly Tier _host, _disk;
    private readonly float[][] _hostSlots;
    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly string? _path;
    private readonly Dictionary<SequenceBlocks, float[][]> _swapped = [];
    private int _swappedBlocks;                         // host room taken by swapped sequences

    /// <param name="diskPath">The file backing the disk tier (created, and deleted on dispose); null with diskBlocks 0.</param>
    public KvTiers(PagedKvCache cache, int hostBlocks, int diskBlocks, string? diskPath, Func<ITierPolicy>? policy = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(hostBlocks);
        ArgumentOutOfRangeException.ThrowIfNegative(diskBlocks);
        _cache = cache;
        _floats = checked((int)(cache.BlockBytes / sizeof(float)));
        policy ??= () => new LruPolicy();
        _host = new Tier(hostBlocks, policy());
        _disk = new Tier(diskBlocks, policy());
        _hostSlots = new float[hostBlocks][];
        if (diskBlocks > 0)
        {
            _path = diskPath ?? throw new TemperException("a disk tier needs a file path");
            _file = MemoryMappedFile.CreateFromFile(_path, FileMode.Create, null, (long)diskBlocks * cache.BlockBytes, MemoryMappedFileAccess.ReadWrite);
            _view = _file.CreateViewAccessor();
        }
        cache.Tiers = this;
    }

    private readonly TierCounters _device = new();

    /// <summary>The device pool's counters (Blocks: cached prefix blocks it holds now).</summary>
    public TierCounters Device
    {
        get
        {
            _device.Blocks = _cache.Pool.Cached;
            return _device;
        }
    }
    public TierCounters Host => _host.Counters;
    public TierCounters Disk => _disk.Counters;

    public bool Contains(ulong hash) => _host.Index.ContainsKey(hash) || _disk.Index.ContainsKey(hash);

    public void RecordDeviceHit() => _device.Hits++;
    public void RecordDeviceMiss() => _device.Misses++;

    public void Offload(ulong hash, int block)
    {
        bool toHost = _host.Capacity > _swappedBlocks;
        if (!toHost && _disk.Capacity == 0) return;
        var sw = Stopwatch.StartNew();
        var data = ReadDevice(block);
        _device.BytesOut += _cache.BlockBytes;
        _device.Evictions++;
        if (toHost)
        {
            if (_host.Index.Count + _swappedBlocks == _host.Capacity) Demote(_host.Policy.Victim());
            int slot = _host.Store(hash, _cache.BlockBytes);
            _hostSlots[slot] = data;
        }
        else StoreDisk(hash, data);
        _device.StallMs += sw.Elapsed.TotalMilliseconds;
    }

    public bool TryRestore(ulong hash, int block)
    {
        var sw = Stopwatch.StartNew();
        float[] data;
        Tier from;
        if (_host.Index.TryGetValue(hash, out int slot))
        {
            data = _hostSlots[slot];
            _hostSlots[slot] = null!;
            from = _host;
        }
        else if (_disk.Index.TryGetValue(hash, out slot))
        {
            data = new float[_floats];
            _view!.ReadArray(slot * _cache.BlockBytes, data, 0, _floats);
            from = _disk;
        }
        else
        {
            _host.Counters.Misses++;
            _disk.Counters.Misses++;
            return false;
        }
        from.Drop(hash, _cache.BlockBytes);
        from.Counters.Hits++;
        if (from == _disk) _host.Counters.Misses++;
        WriteDevice(block, data);
        _device.BytesIn += _cache.BlockBytes;
        from.Counters.StallMs += sw.Elapsed.TotalMilliseconds;
        return true;
    }

    public bool CanSwap => _host.Capacity > 0;

    public bool SwapOut(SequenceBlocks s)
    {
        int n = s.Blocks.Count;
        if (n > _host.Capacity - _swappedBlocks) return false;
        var sw = Stopwatch.StartNew();
        while (_host.Index.Count + _swappedBlocks + n > _host.Capacity) Demote(_host.Policy.Victim());
        _swapped.Add(s, s.Blocks.Select(ReadDevice).ToArray());
        _swappedBlocks += n;
        long bytes = n * _cache.BlockBytes;
        _device.BytesOut += bytes;
        _host.Counters.BytesIn += bytes;
        _host.Counters.SwapOuts++;
        _host.Counters.SwappedBlocks = _swappedBlocks;
        _device.StallMs += sw.Elapsed.TotalMilliseconds;
        return true;
    }

    public void SwapIn(SequenceBlocks s, IReadOnlyList<int> blocks)
    {
        var sw = Stopwatch.StartNew();
        if (!_swapped.Remove(s, out var data)) throw new InvalidOperationException("the sequence was not swapped out here");
        if (data.Length != blocks.Count) throw new InvalidOperationException($"{data.Length} blocks were swapped out, {blocks.Count} given back");
        for (int i = 0; i < data.Length; i++) WriteDevice(blocks[i], data[i]);
        _swappedBlocks -= data.Length;
        long bytes = data.Length * _cache.BlockBytes;
        _device.BytesIn += bytes;
        _host.Counters.BytesOut += bytes;
        _host.Counters.SwapIns++;
        _host.Counters.SwappedBlocks = _swappedBlocks;
        _host.Counters.StallMs += sw.Elapsed.TotalMilliseconds;
    }

    public void DropSwapped(SequenceBlocks s)
    {
        if (!_swapped.Remove(s, out var data)) return;
        _swappedBlocks -= data.Length;
        _host.Counters.SwappedBlocks = _swappedBlocks;
    }

    /// <summary>Moves a host block to disk (or drops it when there is no disk tier).</summary>
    private void Demote(ulong hash)
    {
        int slot = _host.Index[hash];
        var data = _hostSlots[slot];
        _hostSlots[slot] = null!;
        _host.Drop(hash, _cache.BlockBytes);
        _host.Counters.Evictions++;
        if (_disk.Capacity > 0) StoreDisk(hash, data);
    }

    private void StoreDisk(ulong hash, float[] data)
    {
        var sw = Stopwatch.StartNew();
        if (_disk.Index.Count == _disk.Capacity)
        {
            _disk.Drop(_disk.Policy.Victim(), 0);
            _disk.Counters.Evictions++;
        }
        int slot = _disk.Store(hash, _cache.BlockBytes);
        _view!.WriteArray(slot * _cache.BlockBytes, data, 0, _floats);
        _disk.Counters.StallMs += sw.Elapsed.TotalMilliseconds;
    }

    /// <summary>All layers' K then V rows of a device block, through a staging tensor.</summary>
    private float[] ReadDevice(int block)
    {
        var be = _cache.Backend;
        int bs = _cache.BlockSize, w = _cache.RowWidth, per = bs * w;
        var data = new float[_floats];
        using var staging = be.Zeros(new Shape(bs, w));
        for (int l = 0; l < _cache.Layers; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                be.CopyRows(kv == 0 ? _cache.KRows(l) : _cache.VRows(l), block * bs, staging, 0, bs);
                using var host = be.ToHost(staging);
                host.Floats.CopyTo(data.AsSpan((2 * l + kv) * per, per));
            }
        return data;
    }

    private void WriteDevice(int block, float[] data)
    {
        var be = _cache.Backend;
        int bs = _cache.BlockSize, w = _cache.RowWidth, per = bs * w;
        for (int l = 0; l < _cache.Layers; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                var host = Tensor.FromFloats(new Shape(bs, w), data.AsSpan((2 * l + kv) * per, per));
                var dev = be.FromHost(host);
                be.CopyRows(dev, 0, kv == 0 ? _cache.KRows(l) : _cache.VRows(l), block * bs, bs);
                if (!ReferenceEquals(dev, host)) dev.Dispose();
            }
    }

    public void Dispose()
    {
        if (ReferenceEquals(_cache.Tiers, this)) _cache.Tiers = null;
        _view?.Dispose();
        _file?.Dispose();
        if (_path != null) File.Delete(_path);
    }

    /// <summary>One tier's bookkeeping: which hash sits in which slot, free slots, policy, counters.</summary>
    private sealed class Tier(int capacity, ITierPolicy policy)
    {
        private readonly Stack<int> _free = new(Enumerable.Range(0, capacity).Reverse());
        public int Capacity { get; } = capacity;
        public ITierPolicy Policy { get; } = policy;
        public Dictionary<ulong, int> Index { get; } = [];
        public TierCounters Counters { get; } = new();

        public int Store(ulong hash, long bytes)
        {
            int slot = _free.Pop();
            Index[hash] = slot;
            Policy.Touch(hash);
            Counters.BytesIn += bytes;
            Counters.Blocks = Index.Count;
            return slot;
        }

        public void Drop(ulong hash, long bytesOut)
        {
            _free.Push(Index[hash]);
            Index.Remove(hash);
            Policy.Remove(hash);
            Counters.BytesOut += bytesOut;
            Counters.Blocks = Index.Count;
        }
    }
}
