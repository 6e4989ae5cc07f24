// KV tiering below the device pool: host memory, then disk (a memory-mapped file). When the device pool
// reuses a cached prefix block, its K/V (every layer, [BlockSize, Hkv*D] for K then V) move to the host
// tier; a full host tier moves its policy's victim to disk; a full disk tier drops its victim. A
// prefix-cache lookup that misses the device finds the block in host or disk and copies it back into a
// fresh device block (the tier gives it up: it lives on the device again); a block a tier holds already
// (computed again beside its tier copy) is not copied down again. A block's copy goes through one
// staging tensor of the backend, [2 * Layers * BlockSize, Hkv*D] (K then V rows of each layer): one
// FromHost upload or ToHost download and a CopyRows per layer and K/V, so any backend works, on its one
// stream (no copy stream: the step that restores a block reads it at once, so a second stream would pay
// only for blocks uploaded ahead of their admission, into device blocks held meanwhile); on the CPU
// backend, whose device tier is host memory, rows are copied directly. Swapped-out sequences (scheduler
// preemption by swapping) take host-tier room too: their blocks are copied to host arrays keyed by the
// sequence, cached prefix blocks move on to disk to make room, and the blocks come back to fresh device
// blocks when the sequence resumes. LoRA adapters evicted from the device (AdapterStack) live in the
// same tiers under the same budget and policy (S-LoRA's unified paging): an adapter's padded weights (a
// flat float array) take its bytes rounded up to whole blocks of the tier, are one entry of the tier's
// policy beside the KV blocks, move host -> disk when the policy picks them, and are taken back
// (TakeAdapter) when a step needs them on the device. An adapter on disk can be prefetched
// (PrefetchAdapter): its entry leaves the disk policy and its slots stay reserved while a background
// task reads them, and TakeAdapter with the data read finishes the move. KV blocks on disk are
// prefetched the same way (PrefetchBlocks, LMCache's read-ahead): the scheduler names the blocks its
// waiting requests' prompts will look up; those on disk leave the disk policy, keep their slots, and
// one background task per call reads them into host arrays in order, so the restore in the step that
// admits the request is only the host -> device copy (it waits for a read not yet finished). Each block
// read ahead takes a block of the host tier's room, as a swapped block does (host entries + swapped
// blocks + read-ahead blocks <= the host tier's blocks): room is made by demoting the host policy's
// victims to disk, but never a block the waiting requests want; when no room can be made the rest stay
// on disk (counted as skipped) and go back to the disk policy as just used, and a host tier of 0 blocks
// reads nothing ahead. Blocks no longer named are given back to the disk policy once their read ends,
// freeing their room; Dispose cancels the reads not started and waits for the one under way before
// closing the file. Every move is counted per tier: hits, misses, bytes in and out, evictions, swaps,
// prefetches (started, ready when needed, dropped, skipped for lack of host room, the read time taken
// off the steps and the wait left in them) and the time the engine stalled on it, for KV blocks and
// adapters apart.
using System.Diagnostics;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
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
    /// <summary>Adapters: found here when wanted (Hits) or not (Misses), moved out to make room, bytes moved in and out, held now (and the blocks they take).</summary>
    public long AdapterHits { get; internal set; }
    public long AdapterMisses { get; internal set; }
    public long AdapterEvictions { get; internal set; }
    public long AdapterBytesIn { get; internal set; }
    public long AdapterBytesOut { get; internal set; }
    public int Adapters { get; internal set; }
    public int AdapterBlocks { get; internal set; }
    /// <summary>Adapters brought up from this tier (disk) or towards this tier (device: from disk or a folder) on a background task ahead of their step.</summary>
    public long AdapterPrefetches { get; internal set; }
    /// <summary>Device: adapter loads whose prefetch had finished when the step needed it (the step waited for nothing but the copy in).</summary>
    public long AdapterPrefetchHits { get; internal set; }
    /// <summary>Device: time steps spent making adapters resident (evicting, waiting for or reading a tier or folder, copying in).</summary>
    public double AdapterStallMs { get; internal set; }
    /// <summary>Disk: KV blocks read ahead into host memory on a background task for a waiting request (PrefetchBlocks).</summary>
    public long Prefetches { get; internal set; }
    /// <summary>Disk: prefetched KV blocks whose read had finished when a step restored them.</summary>
    public long PrefetchHits { get; internal set; }
    /// <summary>Disk: prefetches given up unused (their request was admitted without them, cancelled, or the tiers closed).</summary>
    public long PrefetchesDropped { get; internal set; }
    /// <summary>Disk: KV blocks a prefetch holds now (being read, or read and waiting for their step), each taking a block of the host tier's room.</summary>
    public int Prefetching { get; internal set; }
    /// <summary>Disk: KV blocks a waiting request wanted read ahead that were left on disk for lack of host-tier room (each counted once while it stays wanted and left).</summary>
    public long PrefetchesSkipped { get; internal set; }
    /// <summary>Disk: read time of restored prefetched blocks that no step waited for (stall saved).</summary>
    public double PrefetchSavedMs { get; internal set; }
    /// <summary>Disk: time steps waited for prefetches still reading when they restored the block (stall left).</summary>
    public double PrefetchWaitMs { get; internal set; }
    public override string ToString() => $"hits {Hits}, misses {Misses}, in {BytesIn} B, out {BytesOut} B, evictions {Evictions}, swaps out {SwapOuts} / in {SwapIns}, stall {StallMs:F2} ms, holding {Blocks} blocks + {SwappedBlocks} swapped" +
        $", prefetched {Prefetches} ({PrefetchHits} ready when needed, {PrefetchesDropped} dropped, {Prefetching} held, {PrefetchesSkipped} skipped for lack of host room), prefetch stall saved {PrefetchSavedMs:F2} ms, left {PrefetchWaitMs:F2} ms" +
        $"; adapters: hits {AdapterHits}, misses {AdapterMisses}, in {AdapterBytesIn} B, out {AdapterBytesOut} B, evictions {AdapterEvictions}, holding {Adapters} in {AdapterBlocks} blocks" +
        $", prefetched {AdapterPrefetches} ({AdapterPrefetchHits} ready when needed), stall {AdapterStallMs:F2} ms";
}

public sealed class KvTiers : IKvTierStore, IDisposable
{
    private readonly PagedKvCache _cache;
    private readonly int _floats;                       // floats per block over all layers, K and V
    private readonly Tier _host, _disk;
    private readonly Dictionary<ulong, float[]> _hostData = [];   // a KV block's or an adapter's contents, by key
    private readonly Dictionary<ulong, (string Name, int Floats)> _adapters = [];   // adapter keys held in host or disk
    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly string? _path;
    private readonly Dictionary<SequenceBlocks, float[][]> _swapped = [];
    private readonly HashSet<ulong> _prefetching = [];   // adapters and KV blocks on disk being read by a prefetch (slots reserved, out of the policy)
    private readonly Dictionary<ulong, BlockRead> _blockReads = [];   // KV blocks among _prefetching, and their reads
    private readonly List<Task> _readers = [];          // background reads of KV blocks (one per PrefetchBlocks call that started any)
    private HashSet<ulong> _skipped = [];               // wanted KV blocks the last PrefetchBlocks call left on disk for lack of host room
    private readonly CancellationTokenSource _closing = new();
    private bool _disposed;
    private int _swappedBlocks;                         // host room taken by swapped sequences

    /// <summary>Host room outside the host policy: swapped sequences' blocks and KV blocks read ahead (one each, read or being read).</summary>
    private int HostPinned => _swappedBlocks + _blockReads.Count;

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
        cache.Pool.Residents?.CheckFits(this);
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
    public int HostBlocks => _host.Capacity;
    public int DiskBlocks => _disk.Capacity;

    public bool Contains(ulong hash) => _host.Index.ContainsKey(hash) || _disk.Index.ContainsKey(hash);
    /// <summary>Whether the disk tier holds the key (tests).</summary>
    internal bool OnDisk(ulong key) => _disk.Index.ContainsKey(key);

    public void RecordDeviceHit() => _device.Hits++;
    public void RecordDeviceMiss() => _device.Misses++;

    public void Offload(ulong hash, int block)
    {
        if (Contains(hash)) return;     // a tier keeps these contents already (a block computed again beside its tier copy)
        bool toHost = _host.Capacity > HostPinned;
        if (!toHost && _disk.Capacity == 0) return;
        var sw = Stopwatch.StartNew();
        var data = ReadDevice(block);
        _device.BytesOut += _cache.BlockBytes;
        _device.Evictions++;
        if (toHost) StoreHost(hash, data, 1);
        else StoreDisk(hash, data, 1);
        _device.StallMs += sw.Elapsed.TotalMilliseconds;
    }

    public bool TryRestore(ulong hash, int block)
    {
        var sw = Stopwatch.StartNew();
        var data = Take(hash, out var from, _blockReads.Remove(hash, out var read) ? Prefetched(read) : null);
        if (data == null)
        {
            _host.Counters.Misses++;
            _disk.Counters.Misses++;
            return false;
        }
        from!.Counters.Hits++;
        if (from == _disk) _host.Counters.Misses++;
        WriteDevice(block, data);
        _device.BytesIn += _cache.BlockBytes;
        from.Counters.StallMs += sw.Elapsed.TotalMilliseconds;
        return true;
    }

    /// <summary>
    /// Reads ahead the KV blocks among <paramref name="wanted"/> (in the order they will be needed) that
    /// wait on disk: each leaves the disk policy (it is not evicted) and keeps its slot, takes a block of
    /// the host tier's room, and one task reads this call's new ones into host memory off the calling
    /// thread; TryRestore then takes the data read. The room comes from the host policy's victims, demoted
    /// to disk as any store into a full host tier would, but never from a wanted block: when the next
    /// victim is wanted (or the host holds nothing but swapped and read-ahead blocks) the rest stay on disk,
    /// counted as skipped, and are handed back to the disk policy as just used. A host tier of 0 blocks
    /// reads nothing ahead. Blocks on the host or the device need nothing. Finished reads of blocks no
    /// longer wanted go back to the disk policy and free their room (unfinished ones on a later call). At
    /// most as many blocks as the device pool has are held. Call on the stepping thread.
    /// </summary>
    public void PrefetchBlocks(IReadOnlyList<ulong> wanted)
    {
        if (_disposed || (wanted.Count == 0 && _blockReads.Count == 0 && _skipped.Count == 0)) return;
        var keep = wanted.ToHashSet();
        foreach (var (hash, read) in _blockReads.Where(r => !keep.Contains(r.Key) && r.Value.Data.Task.IsCompleted).ToArray())
        {
            _blockReads.Remove(hash);
            _prefetching.Remove(hash);
            _disk.Policy.Touch(hash);
            _disk.Counters.PrefetchesDropped++;
        }
        // This call's new blocks leave the disk policy first, so no demotion made for their room evicts one.
        var fresh = wanted.Distinct().Where(h => !_adapters.ContainsKey(h) && !_host.Index.ContainsKey(h) && _disk.Index.ContainsKey(h) && !_prefetching.Contains(h))
            .Take(Math.Max(0, _cache.Pool.Count - _blockReads.Count)).ToList();
        foreach (ulong hash in fresh)
        {
            _prefetching.Add(hash);
            _disk.Policy.Remove(hash);
        }
        var batch = new List<(int Slot, BlockRead Read)>();
        foreach (ulong hash in fresh)
        {
            if (!MakeHostRoom(keep)) break;
            var read = new BlockRead();
            _blockReads[hash] = read;
            batch.Add((_disk.Index[hash][0], read));
        }
        var skipped = fresh.Skip(batch.Count).ToHashSet();
        foreach (ulong hash in skipped)
        {
            _prefetching.Remove(hash);
            _disk.Policy.Touch(hash);
        }
        _disk.Counters.PrefetchesSkipped += skipped.Count(h => !_skipped.Contains(h));
        _skipped = skipped;
        _disk.Counters.Prefetches += batch.Count;
        _disk.Counters.Prefetching = _blockReads.Count;
        _readers.RemoveAll(t => t.IsCompleted);
        if (batch.Count > 0) _readers.Add(Task.Run(() => ReadBlocks(batch, _closing.Token)));
    }

    /// <summary>Frees a block of host room for a read-ahead by demoting the host policy's victims; false when the next victim is wanted or there is none.</summary>
    private bool MakeHostRoom(HashSet<ulong> wanted)
    {
        while (_host.Used + HostPinned >= _host.Capacity)
        {
            if (_host.Index.Count == 0 || wanted.Contains(_host.Policy.Victim())) return false;
            Demote(_host.Policy.Victim());
        }
        return true;
    }

    /// <summary>Completes when every KV block prefetch under way has its data (call on the stepping thread, or while no step runs).</summary>
    public Task WhenPrefetched() => Task.WhenAll(_blockReads.Values.Select(r => r.Data.Task));

    /// <summary>Runs before each prefetched block is read, on the reading task (tests slow reads down with it).</summary>
    internal Action? BeforeBlockRead { get; set; }

    /// <summary>A prefetched block's read, and the time it took (set before the data).</summary>
    private sealed class BlockRead
    {
        public TaskCompletionSource<float[]> Data { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public double ReadMs { get; set; }
    }

    /// <summary>Reads the blocks of one prefetch in order (on a background task) until the tiers close.</summary>
    private void ReadBlocks(List<(int Slot, BlockRead Read)> batch, CancellationToken closing)
    {
        foreach (var (slot, read) in batch)
        {
            BeforeBlockRead?.Invoke();
            if (closing.IsCancellationRequested)
            {
                read.Data.TrySetCanceled(closing);
                continue;
            }
            try
            {
                long start = Stopwatch.GetTimestamp();
                var data = ReadDisk([slot], _floats);
                read.ReadMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                read.Data.TrySetResult(data);
            }
            catch (Exception e)
            {
                read.Data.TrySetException(e);   // the restore reads the block again and reports the failure
            }
        }
    }

    /// <summary>A prefetch's data once its read has ended (waiting for it, counted as stall left), or null when the read failed.</summary>
    private float[]? Prefetched(BlockRead read)
    {
        var c = _disk.Counters;
        c.Prefetching = _blockReads.Count;
        bool ready = read.Data.Task.IsCompleted;
        long start = Stopwatch.GetTimestamp();
        try
        {
            read.Data.Task.Wait();
        }
        catch (AggregateException)
        {
            c.PrefetchesDropped++;
            return null;
        }
        double waited = ready ? 0 : Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        if (ready) c.PrefetchHits++;
        c.PrefetchWaitMs += waited;
        c.PrefetchSavedMs += Math.Max(0, read.ReadMs - waited);
        return read.Data.Task.Result;
    }

    /// <summary>Keeps an adapter the device gives up (its padded weights): in host memory, else on disk; false when neither tier can ever hold it.</summary>
    public bool StoreAdapter(ulong key, string name, float[] data)
    {
        int units = UnitsFor(data.Length);
        if (units > _host.Capacity - HostPinned && units > _disk.Capacity) return false;
        var sw = Stopwatch.StartNew();
        _adapters[key] = (name, data.Length);
        bool kept = true;
        if (units <= _host.Capacity - HostPinned) StoreHost(key, data, units);
        else if (!(kept = StoreDisk(key, data, units))) _adapters.Remove(key);
        _host.Counters.StallMs += sw.Elapsed.TotalMilliseconds;
        return kept;
    }

    /// <summary>
    /// Starts moving an adapter off disk ahead of need: its entry leaves the disk policy (so it is not
    /// evicted) and keeps its slots, and the returned function reads it, on any thread. TakeAdapter with
    /// the data read finishes the move. Null when the disk tier does not hold it (or it is already being read).
    /// </summary>
    public Func<float[]>? PrefetchAdapter(ulong key)
    {
        if (!_adapters.TryGetValue(key, out var a) || !_disk.Index.TryGetValue(key, out var slots) || !_prefetching.Add(key)) return null;
        _disk.Policy.Remove(key);
        _disk.Counters.AdapterPrefetches++;
        return () => ReadDisk(slots, a.Floats);
    }

    /// <summary>
    /// Takes an adapter back out of host or disk for the device (null: neither holds it; it is loaded from
    /// its folder). <paramref name="prefetched"/>: the data a PrefetchAdapter read, used instead of reading again.
    /// </summary>
    public float[]? TakeAdapter(ulong key, float[]? prefetched = null)
    {
        var sw = Stopwatch.StartNew();
        var data = Take(key, out var from, prefetched);
        if (data == null)
        {
            _host.Counters.AdapterMisses++;
            _disk.Counters.AdapterMisses++;
            return null;
        }
        from!.Counters.AdapterHits++;
        if (from == _disk) _host.Counters.AdapterMisses++;
        from.Counters.StallMs += sw.Elapsed.TotalMilliseconds;
        return data;
    }

    /// <summary>Forgets an adapter (it was unloaded, or its padding changed).</summary>
    public void DropAdapter(ulong key)
    {
        if (_host.Index.ContainsKey(key))
        {
            _host.Drop(key, false);
            _hostData.Remove(key);
        }
        else if (_disk.Index.ContainsKey(key)) _disk.Drop(key, false);
        _adapters.Remove(key);
        _prefetching.Remove(key);
    }

    /// <summary>Blocks of this tier an adapter of <paramref name="floats"/> floats takes.</summary>
    public int UnitsFor(int floats) => (floats + _floats - 1) / _floats;

    public bool CanSwap => _host.Capacity > 0;

    public bool SwapOut(SequenceBlocks s)
    {
        int n = s.Blocks.Count;
        if (n > _host.Capacity - HostPinned) return false;
        var sw = Stopwatch.StartNew();
        while (_host.Used + HostPinned + n > _host.Capacity) Demote(_host.Policy.Victim());
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

    /// <summary>Removes a KV block or an adapter from host or disk and returns its contents (null: in neither).</summary>
    private float[]? Take(ulong key, out Tier? from, float[]? prefetched = null)
    {
        bool adapter = _adapters.TryGetValue(key, out var a);
        float[] data;
        if (_host.Index.ContainsKey(key))
        {
            data = _hostData[key];
            _hostData.Remove(key);
            from = _host;
        }
        else if (_disk.Index.TryGetValue(key, out var slots))
        {
            data = _prefetching.Remove(key) && prefetched != null ? prefetched : ReadDisk(slots, adapter ? a.Floats : _floats);
            from = _disk;
        }
        else
        {
            from = null;
            return null;
        }
        from.Drop(key, adapter, data.LongLength * sizeof(float));
        _adapters.Remove(key);
        return data;
    }

    private void StoreHost(ulong key, float[] data, int units)
    {
        while (_host.Used + HostPinned + units > _host.Capacity) Demote(_host.Policy.Victim());
        _host.Store(key, units, _adapters.ContainsKey(key), data.LongLength * sizeof(float));
        _hostData[key] = data;
    }

    /// <summary>Moves a host entry (KV block or adapter) to disk, or drops it when the disk tier cannot hold it.</summary>
    private void Demote(ulong key)
    {
        var data = _hostData[key];
        _hostData.Remove(key);
        bool adapter = _adapters.ContainsKey(key);
        int units = _host.Index[key].Length;
        bool toDisk = units <= DiskRoom;
        _host.Drop(key, adapter, toDisk ? data.LongLength * sizeof(float) : 0);
        if (adapter) _host.Counters.AdapterEvictions++;
        else _host.Counters.Evictions++;
        if (!(toDisk && StoreDisk(key, data, units))) _adapters.Remove(key);
    }

    /// <summary>Disk slots that evicting could free: all but those of adapters a prefetch is reading.</summary>
    private int DiskRoom => _disk.Capacity - _prefetching.Sum(k => _disk.Index[k].Length);

    /// <summary>Writes an entry to disk, evicting the policy's victims; false (nothing stored) when it cannot fit beside entries being prefetched.</summary>
    private bool StoreDisk(ulong key, float[] data, int units)
    {
        if (units > DiskRoom) return false;
        var sw = Stopwatch.StartNew();
        while (_disk.Used + units > _disk.Capacity)
        {
            ulong victim = _disk.Policy.Victim();
            bool adapter = _adapters.Remove(victim);
            _disk.Drop(victim, adapter);
            if (adapter) _disk.Counters.AdapterEvictions++;
            else _disk.Counters.Evictions++;
        }
        var slots = _disk.Store(key, units, _adapters.ContainsKey(key), data.LongLength * sizeof(float));
        for (int i = 0, off = 0; i < slots.Length; i++, off += _floats)
            _view!.WriteArray(slots[i] * _cache.BlockBytes, data, off, Math.Min(_floats, data.Length - off));
        _disk.Counters.StallMs += sw.Elapsed.TotalMilliseconds;
        return true;
    }

    private float[] ReadDisk(int[] slots, int floats)
    {
        var data = new float[floats];
        for (int i = 0, off = 0; i < slots.Length; i++, off += _floats)
            _view!.ReadArray(slots[i] * _cache.BlockBytes, data, off, Math.Min(_floats, floats - off));
        return data;
    }

    /// <summary>All layers' K then V rows of a device block: [2 * Layers * BlockSize, RowWidth] in the cache's dtype (a bf16 block's
    /// bits packed two to a float), row copies into one staging tensor and one download.</summary>
    private float[] ReadDevice(int block)
    {
        var be = _cache.Backend;
        int bs = _cache.BlockSize, per = checked((int)_cache.DType.ByteCount((long)bs * _cache.RowWidth));
        var data = new float[_floats];
        var bytes = MemoryMarshal.AsBytes(data.AsSpan());
        if (_cache.KRows(0).IsHost)
        {
            for (int l = 0, i = 0; l < _cache.Layers; l++, i += 2)
            {
                _cache.KRows(l).Bytes.Slice(block * per, per).CopyTo(bytes.Slice(i * per, per));
                _cache.VRows(l).Bytes.Slice(block * per, per).CopyTo(bytes.Slice((i + 1) * per, per));
            }
            return data;
        }
        using var staging = be.Uninitialized(new Shape(2 * _cache.Layers * bs, _cache.RowWidth), _cache.DType); // every row is copied in below
        for (int l = 0, i = 0; l < _cache.Layers; l++, i += 2)
        {
            be.CopyRows(_cache.KRows(l), block * bs, staging, i * bs, bs);
            be.CopyRows(_cache.VRows(l), block * bs, staging, (i + 1) * bs, bs);
        }
        using var host = be.ToHost(staging);
        host.Bytes.CopyTo(bytes);
        return data;
    }

    /// <summary>A block's rows as ReadDevice lays them out, into device block <paramref name="block"/>: one upload, then a row copy per layer and K/V.</summary>
    private void WriteDevice(int block, float[] data)
    {
        var be = _cache.Backend;
        int bs = _cache.BlockSize, per = checked((int)_cache.DType.ByteCount((long)bs * _cache.RowWidth));
        var bytes = MemoryMarshal.AsBytes(data.AsSpan());
        if (_cache.KRows(0).IsHost)
        {
            for (int l = 0, i = 0; l < _cache.Layers; l++, i += 2)
            {
                bytes.Slice(i * per, per).CopyTo(_cache.KRows(l).Bytes.Slice(block * per, per));
                bytes.Slice((i + 1) * per, per).CopyTo(_cache.VRows(l).Bytes.Slice(block * per, per));
            }
            return;
        }
        var host = Tensor.FromArray<byte>(new Shape(2 * _cache.Layers * bs, _cache.RowWidth), bytes, _cache.DType);
        var dev = be.FromHost(host);
        for (int l = 0, i = 0; l < _cache.Layers; l++, i += 2)
        {
            be.CopyRows(dev, i * bs, _cache.KRows(l), block * bs, bs);
            be.CopyRows(dev, (i + 1) * bs, _cache.VRows(l), block * bs, bs);
        }
        if (!ReferenceEquals(dev, host)) dev.Dispose();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (ReferenceEquals(_cache.Tiers, this)) _cache.Tiers = null;
        _closing.Cancel();                              // reads not started end at once; the one under way finishes
        Task.WaitAll(_readers);                         // ReadBlocks never throws: no file read outlives the view
        _disk.Counters.PrefetchesDropped += _blockReads.Count;
        _blockReads.Clear();
        _disk.Counters.Prefetching = 0;
        _closing.Dispose();
        _view?.Dispose();
        _file?.Dispose();
        if (_path != null) File.Delete(_path);
    }

    /// <summary>
    /// One tier's bookkeeping: which key (a KV block's hash, or an adapter's key) holds which slots
    /// (one per block of room it takes), free slots, the policy, counters. Bytes moved are counted as
    /// KV or adapter bytes by the caller's flag.
    /// </summary>
    private sealed class Tier(int capacity, ITierPolicy policy)
    {
        private readonly Stack<int> _free = new(Enumerable.Range(0, capacity).Reverse());
        public int Capacity { get; } = capacity;
        public int Used => Capacity - _free.Count;
        public ITierPolicy Policy { get; } = policy;
        public Dictionary<ulong, int[]> Index { get; } = [];
        public TierCounters Counters { get; } = new();

        public int[] Store(ulong key, int units, bool adapter, long bytes)
        {
            var slots = new int[units];
            for (int i = 0; i < units; i++) slots[i] = _free.Pop();
            Index[key] = slots;
            Policy.Touch(key);
            if (adapter)
            {
                Counters.AdapterBytesIn += bytes;
                Counters.Adapters++;
                Counters.AdapterBlocks += units;
            }
            else
            {
                Counters.BytesIn += bytes;
                Counters.Blocks++;
            }
            return slots;
        }

        /// <summary>Frees a key's slots, counting <paramref name="bytesOut"/> moved out (0: dropped, nothing moved).</summary>
        public void Drop(ulong key, bool adapter, long bytesOut = 0)
        {
            var slots = Index[key];
            foreach (int s in slots) _free.Push(s);
            Index.Remove(key);
            Policy.Remove(key);
            if (adapter)
            {
                Counters.AdapterBytesOut += bytesOut;
                Counters.Adapters--;
                Counters.AdapterBlocks -= slots.Length;
            }
            else
            {
                Counters.BytesOut += bytesOut;
                Counters.Blocks--;
            }
        }
    }
}
