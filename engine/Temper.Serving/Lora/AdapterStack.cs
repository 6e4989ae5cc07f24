// The adapters a server holds, paged through the same tiers as the KV blocks (S-LoRA's unified
// paging). Every loaded adapter keeps its source (the PEFT folder, memory-mapped); its padded form,
// A and B per targeted module zero-padded to the module's largest rank (A [r, In], B [Out, r]) and
// laid out flat module after module, is what moves between tiers. Device tier: per module stacks
// A [S, r, In] and B [S, Out, r] in backend memory and a scale per slot (0 for an adapter that does
// not target the module), for the gathered LoRA op. The stacks are built when first used, not on each
// Add (a server adding 100 adapters would otherwise allocate and zero 1 + 2 + ... + 100 stacks), and
// kept across re-attachments whose shapes do not change. Attached to a serving engine's KV cache, a
// resident adapter also holds its bytes rounded up to whole KV blocks of the pool, so adapters and KV
// blocks share the device budget, and one LRU runs over both (IPoolResidents): the pool evicts
// whichever of a cached KV block and an adapter was used least recently, never an adapter the current
// step acquired (pinned until the next BeginStep). The pool is the one limit: S, the slot count, is as
// many adapters as the pool's blocks could hold at once (min(adapters, pool blocks / the smallest
// adapter's blocks); all adapters while no pool is attached), so a step never waits for a slot the
// budget could have filled. Slots stay a count apart from the blocks because they are device memory
// beside the pool: the gathered LoRA op reads fixed stacks [S, r, In], not pool blocks (reading
// adapters out of pool blocks, S-LoRA's unified memory, needs a gathered op over a pointer table). A
// step whose rows name more adapters than S runs S of them; the other rows wait a step. An evicted
// adapter is read back from its slot and handed to the KV tiers (host, then disk:
// KvTiers.StoreAdapter), or dropped without tiers; TryAcquire brings it back from host or disk, or pads
// it again from its folder. Rows are mapped from adapter index to slot with SlotOf. Adapters are added
// and removed at run time; the tiers are reset (all slots empty, tier copies dropped) on each change.
// On a mixture-of-experts base (Mixtral, Qwen3-MoE, Qwen2-MoE) an adapter may target every layer projection
// (ServedProjections: attention, dense MLPs, routers, experts, shared experts and their gates) and lm_head; expert
// modules are stacked and paged like any other (an expert's A/B count in the adapter's bytes and blocks), and the
// paged decoder applies them to each expert's gathered rows by slot (MoeBlock's projection hook).
using System.Buffers;
using System.Diagnostics;
using Temper.Core;
using Temper.Models;
using Temper.Serving.Kv;

namespace Temper.Serving.Lora;

public sealed record ModuleStack(Tensor A, Tensor B, float[] Scales);

public sealed class AdapterStack : IPoolResidents, IDisposable
{
    /// <summary>One targeted module: its padded rank and shape, the scale of each adapter (0: it does not target the module).</summary>
    private sealed record Module(string Name, int Rank, int In, int Out, float[] Scale);

    /// <summary>One module's device stacks [S, r, In] and [S, Out, r] and their row views [S*r, In] and [S*Out, r].</summary>
    private sealed record DeviceStack(string Name, int Rank, int In, int Out, ModuleStack Device, Tensor ARows, Tensor BRows);

    private readonly IBackend _be;
    private readonly Dictionary<string, Projection> _projections;
    private readonly List<(string Name, LoraAdapter Adapter)> _adapters = [];
    private Module[] _modules = [];
    private DeviceStack[]? _stacks;              // built on first use (EnsureStacks), [_modules.Length] then
    private long[] _bytes = [];                  // adapter -> padded bytes over the modules it targets
    private int _slots;
    private int[] _slotOf = [];                  // adapter -> slot, -1 when not resident
    private int[] _inSlot = [];                  // slot -> adapter, -1 when free
    private int[]?[] _blocksOf = [];             // adapter -> pool blocks it holds while resident
    private long[] _usedAt = [];                 // adapter -> pool clock of its last use
    private readonly HashSet<int> _pinned = [];  // adapters the current step acquired
    private readonly Dictionary<int, PrefetchedData> _prefetches = [];   // adapter -> its data being read ahead of need
    private sealed record PrefetchedData(Task<float[]> Data, bool FromDisk);
    private PagedKvCache? _cache;
    private readonly TierCounters _device = new();

    public AdapterStack(ModelWeights weights, IBackend be)
    {
        _be = be;
        _projections = weights.Projections.Append(weights.LmHead).GroupBy(p => p.Name).ToDictionary(g => g.Key, g => g.First());
    }

    /// <summary>The projections a served adapter may target: every layer's (a mixture-of-experts layer's router, experts and shared expert included; lm_head not included).</summary>
    public static IEnumerable<Projection> ServedProjections(ModelWeights weights) => weights.Projections;

    public int Count => _adapters.Count;
    /// <summary>Device slots: the most distinct adapters one step may use (as many as the attached pool could hold at once).</summary>
    public int Slots => _slots;
    public IReadOnlyList<string> Names => _adapters.Select(a => a.Name).ToArray();
    public int IndexOf(string name) => _adapters.FindIndex(a => a.Name == name);
    /// <summary>The device tier's counters: the attached cache's tiers' (KV beside adapters) when it has them, else the stack's own.</summary>
    public TierCounters Device => _cache?.Tiers?.Device ?? _device;
    /// <summary>Adapters padded from their folders (in no tier), and the bytes that made.</summary>
    public long FolderLoads { get; private set; }
    public long FolderBytes { get; private set; }

    /// <summary>Adds a loaded PEFT adapter under <paramref name="name"/> (which must be new), checking it fits the model and the tiers.</summary>
    public void Add(string name, LoraAdapter adapter)
    {
        if (IndexOf(name) >= 0) throw new TemperException($"adapter '{name}' is already loaded");
        if (adapter.SavedModules.Count > 0) throw new TemperException($"{adapter.Directory}: an adapter with modules_to_save ({string.Join(", ", adapter.Config.ModulesToSave)}) replaces whole weights, which the multi-LoRA server cannot do per request; merge it (temper merge) and serve the merged model");
        DiscardPrefetches();
        foreach (var (module, (a, b)) in adapter.Modules)
        {
            if (!_projections.TryGetValue(module, out var p)) throw new TemperException($"{adapter.Directory}: adapter module '{module}' does not exist in the model");
            if (a.Shape[1] != p.In || b.Shape[0] != p.Out)
                throw new TemperException($"{adapter.Directory}: adapter module '{module}' has A {a.Shape} and B {b.Shape}, the model's weight is [{p.Out},{p.In}]");
        }
        _adapters.Add((name, adapter));
        Rebuild();
        try
        {
            CheckFits();
        }
        catch (TemperException)
        {
            _adapters.RemoveAt(_adapters.Count - 1);
            Rebuild();
            throw;
        }
    }

    /// <summary>Unloads an adapter; the indices of later adapters shift down by one.</summary>
    public void Remove(string name)
    {
        int i = IndexOf(name);
        if (i < 0) throw new TemperException($"adapter '{name}' is not loaded");
        Reset(_adapters.Select(a => a.Name));
        _adapters[i].Adapter.Dispose();
        _adapters.RemoveAt(i);
        Rebuild();
    }

    /// <summary>
    /// Makes the device tier a part of <paramref name="cache"/>'s pool (a serving engine does this):
    /// resident adapters then hold pool blocks. Any earlier attachment's residency is forgotten.
    /// </summary>
    public void Attach(PagedKvCache cache)
    {
        Reset(_adapters.Select(a => a.Name));
        if (_cache?.Pool.Residents == this) _cache.Pool.Residents = null;
        _cache = cache;
        cache.Pool.Residents = this;
        Rebuild();
        CheckFits();
    }

    /// <summary>The device stack for one module, indexed by slot (null when no adapter targets it).</summary>
    public ModuleStack? For(string module)
    {
        int i = Array.FindIndex(_modules, m => m.Name == module);
        return i < 0 ? null : EnsureStacks()[i].Device;
    }

    public bool IsResident(int adapter) => _slotOf[adapter] >= 0;

    /// <summary>The device slot of a resident adapter (-1, the base model, maps to -1).</summary>
    public int SlotOf(int adapter) => adapter < 0 ? -1
        : _slotOf[adapter] is int s and >= 0 ? s : throw new InvalidOperationException($"adapter {adapter} is not resident: acquire it first");

    /// <summary>Starts a step: adapters acquired before are evictable again.</summary>
    public void BeginStep() => _pinned.Clear();

    /// <summary>Makes an adapter acquired this step evictable again (the step will not use it after all).</summary>
    public void Unpin(int adapter) => _pinned.Remove(adapter);

    /// <summary>
    /// Makes an adapter resident for this step (pinned until the next BeginStep), evicting the least
    /// recently used unpinned adapter for a slot and whatever the pool's LRU picks for blocks; false
    /// (nothing loaded) when no slot or not enough blocks can be freed.
    /// </summary>
    public bool TryAcquire(int adapter)
    {
        if (_pinned.Contains(adapter)) return true;
        if (IsResident(adapter))
        {
            Device.AdapterHits++;
            Pin(adapter);
            return true;
        }
        int blocks = BlocksOf(adapter);
        if (_cache != null && _cache.Pool.Available < blocks) return false;
        long start = Stopwatch.GetTimestamp();
        int slot = Array.IndexOf(_inSlot, -1);
        if (slot < 0)
        {
            int victim = OldestUnpinned();
            if (victim < 0) return false;
            slot = _slotOf[victim];
            Evict(victim);
        }
        var held = new int[blocks];
        for (int i = 0; i < blocks; i++)
            if ((held[i] = _cache!.Pool.Allocate()) < 0) throw new InvalidOperationException("the pool gave fewer blocks than it said were available");
        Device.AdapterMisses++;
        if (_prefetches.Remove(adapter, out var prefetch))
        {
            if (prefetch.Data.IsCompleted) Device.AdapterPrefetchHits++;
            var data = prefetch.Data.Result;                             // waits when the read is still under way
            if (prefetch.FromDisk) _cache!.Tiers!.TakeAdapter(Key(adapter), data);
            else
            {
                FolderLoads++;
                FolderBytes += Bytes(adapter);
            }
            Load(adapter, slot, data);
            if (!prefetch.FromDisk) ArrayPool<float>.Shared.Return(data);
        }
        else if (_cache?.Tiers?.TakeAdapter(Key(adapter)) is { } data) Load(adapter, slot, data);
        else
        {
            // Padded into a pooled buffer: a fresh array per load costs a page fault per 4 KiB on first touch.
            var buffer = ArrayPool<float>.Shared.Rent((int)(Bytes(adapter) / sizeof(float)));
            Pad(adapter, buffer);
            Load(adapter, slot, buffer);
            ArrayPool<float>.Shared.Return(buffer);
            FolderLoads++;
            FolderBytes += Bytes(adapter);
        }
        Device.AdapterStallMs += Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        _blocksOf[adapter] = held;
        Pin(adapter);
        return true;
    }

    /// <summary>
    /// Starts bringing a non-resident adapter up ahead of the step that needs it, on a background task:
    /// read off the disk tier (its slots stay reserved meanwhile) or padded from its folder; an adapter in
    /// host memory is at hand already. TryAcquire then only copies it in (waiting for the read if it has
    /// not finished). At most Slots prefetches are held at once. Called on the stepping thread.
    /// </summary>
    public void Prefetch(int adapter)
    {
        if (adapter < 0 || IsResident(adapter) || _prefetches.ContainsKey(adapter) || _prefetches.Count >= Math.Max(1, _slots)) return;
        var tiers = _cache?.Tiers;
        ulong key = Key(adapter);
        if (tiers?.PrefetchAdapter(key) is { } read) _prefetches[adapter] = new PrefetchedData(Task.Run(read), FromDisk: true);
        else if (tiers != null && tiers.Contains(key)) return;
        else
            _prefetches[adapter] = new PrefetchedData(Task.Run(() =>
            {
                var buffer = ArrayPool<float>.Shared.Rent((int)(Bytes(adapter) / sizeof(float)));
                Pad(adapter, buffer);
                return buffer;
            }), FromDisk: false);
        Device.AdapterPrefetches++;
    }

    /// <summary>Completes when every prefetch under way has its data (call on the stepping thread, or while no step runs).</summary>
    public Task WhenPrefetched() => Task.WhenAll(_prefetches.Values.Select(p => p.Data));

    /// <summary>Waits for the prefetches under way and forgets them (the adapters change, the stack or its engine goes away).</summary>
    internal void DiscardPrefetches()
    {
        foreach (var p in _prefetches.Values)
        {
            try
            {
                var data = p.Data.GetAwaiter().GetResult();
                if (!p.FromDisk) ArrayPool<float>.Shared.Return(data);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException) { }  // the load that needed it reports its own failure
        }
        _prefetches.Clear();
    }

    /// <summary>Makes every adapter in <paramref name="adapters"/> (indices; -1 ignored) resident for this step; throws when they do not fit.</summary>
    public void Acquire(IEnumerable<int> adapters)
    {
        var need = adapters.Where(a => a >= 0).Distinct().ToArray();
        if (need.Length > Slots) throw new InvalidOperationException($"a step uses {need.Length} adapters, the device holds {Slots}");
        foreach (int a in need)
            if (!TryAcquire(a)) throw new InvalidOperationException($"adapter '{_adapters[a].Name}' does not fit on the device beside this step's KV blocks and adapters");
    }

    long IPoolResidents.OldestStamp => OldestUnpinned() is int a and >= 0 ? _usedAt[a] : long.MaxValue;
    int IPoolResidents.EvictableBlocks => Enumerable.Range(0, Count).Where(a => IsResident(a) && !_pinned.Contains(a)).Sum(a => _blocksOf[a]?.Length ?? 0);
    void IPoolResidents.EvictOldest() => Evict(OldestUnpinned());

    public void CheckFits(IKvTierStore tiers)
    {
        for (int a = 0; a < Count; a++)
        {
            int units = tiers.UnitsFor(checked((int)(Bytes(a) / sizeof(float))));
            if (tiers.HostBlocks > 0 && units > tiers.HostBlocks)
                throw new TemperException($"adapter '{_adapters[a].Name}' takes {units} blocks, more than the whole host tier ({tiers.HostBlocks} blocks)");
            if (tiers.DiskBlocks > 0 && units > tiers.DiskBlocks)
                throw new TemperException($"adapter '{_adapters[a].Name}' takes {units} blocks, more than the whole disk tier ({tiers.DiskBlocks} blocks)");
        }
    }

    private void CheckFits()
    {
        if (_cache == null) return;
        for (int a = 0; a < Count; a++)
            if (BlocksOf(a) > _cache.Pool.Count)
                throw new TemperException($"adapter '{_adapters[a].Name}' takes {BlocksOf(a)} KV blocks ({Bytes(a)} B), more than the whole device tier ({_cache.Pool.Count} blocks of {_cache.BlockBytes} B)");
        if (_cache.Tiers is { } tiers) CheckFits(tiers);
    }

    private void Pin(int adapter)
    {
        _pinned.Add(adapter);
        _usedAt[adapter] = _cache?.Pool.Tick() ?? 0;
    }

    /// <summary>The least recently used resident adapter the current step has not acquired, or -1.</summary>
    private int OldestUnpinned()
    {
        int best = -1;
        for (int a = 0; a < Count; a++)
            if (IsResident(a) && !_pinned.Contains(a) && (best < 0 || _usedAt[a] < _usedAt[best])) best = a;
        return best;
    }

    /// <summary>Frees an adapter's slot and blocks, handing its weights to the slower tiers when there are any.</summary>
    private void Evict(int adapter)
    {
        int slot = _slotOf[adapter];
        var counters = Device;
        counters.AdapterEvictions++;
        if (_cache?.Tiers is { } tiers && tiers.StoreAdapter(Key(adapter), _adapters[adapter].Name, ReadBack(adapter, slot)))
            counters.AdapterBytesOut += Bytes(adapter);
        _slotOf[adapter] = -1;
        _inSlot[slot] = -1;
        counters.Adapters--;
        counters.AdapterBlocks -= _blocksOf[adapter]?.Length ?? 0;
        foreach (int b in _blocksOf[adapter] ?? []) _cache!.Pool.Release(b);
        _blocksOf[adapter] = null;
    }

    private void Load(int adapter, int slot, float[] data)
    {
        var stacks = EnsureStacks();
        int off = 0;
        for (int i = 0; i < _modules.Length; i++)
        {
            var (m, d) = (_modules[i], stacks[i]);
            d.Device.Scales[slot] = m.Scale[adapter];
            if (m.Scale[adapter] == 0) continue;        // scale 0: the slot's old rows are never used
            CopyToRows(new Shape(m.Rank, m.In), data.AsSpan(off, m.Rank * m.In), d.ARows, slot * m.Rank);
            off += m.Rank * m.In;
            CopyToRows(new Shape(m.Out, m.Rank), data.AsSpan(off, m.Out * m.Rank), d.BRows, slot * m.Out);
            off += m.Out * m.Rank;
        }
        _slotOf[adapter] = slot;
        _inSlot[slot] = adapter;
        var counters = Device;
        counters.AdapterBytesIn += Bytes(adapter);
        counters.Adapters++;
        counters.AdapterBlocks += BlocksOf(adapter);
    }

    /// <summary>An adapter's padded weights copied back out of its device slot.</summary>
    private float[] ReadBack(int adapter, int slot)
    {
        var data = new float[Bytes(adapter) / sizeof(float)];
        var stacks = EnsureStacks();
        int off = 0;
        for (int i = 0; i < _modules.Length; i++)
        {
            var (m, d) = (_modules[i], stacks[i]);
            if (m.Scale[adapter] == 0) continue;
            CopyFromRows(d.ARows, slot * m.Rank, new Shape(m.Rank, m.In), data.AsSpan(off));
            off += m.Rank * m.In;
            CopyFromRows(d.BRows, slot * m.Out, new Shape(m.Out, m.Rank), data.AsSpan(off));
            off += m.Out * m.Rank;
        }
        return data;
    }

    /// <summary>An adapter's weights padded from its source into the start of <paramref name="data"/>, in the layout Load and ReadBack use.</summary>
    private void Pad(int adapter, float[] data)
    {
        data.AsSpan(0, (int)(Bytes(adapter) / sizeof(float))).Clear();
        var ad = _adapters[adapter].Adapter;
        int off = 0;
        foreach (var m in _modules)
        {
            if (m.Scale[adapter] == 0) continue;
            var (a, b) = ad.Modules[m.Name];
            int ri = a.Shape[0];
            a.Floats.CopyTo(data.AsSpan(off));                                  // rows past ri stay zero
            off += m.Rank * m.In;
            var src = b.Floats;
            for (int o = 0; o < m.Out; o++) src.Slice(o * ri, ri).CopyTo(data.AsSpan(off + o * m.Rank, ri));
            off += m.Out * m.Rank;
        }
    }

    private void CopyToRows(Shape shape, ReadOnlySpan<float> data, Tensor rows, int row)
    {
        if (rows.IsHost)
        {
            data.CopyTo(rows.Floats.Slice(row * shape[1], (int)shape.Elements));   // host memory (CPU backend): one copy, no staging tensor
            return;
        }
        var host = Tensor.FromFloats(shape, data);
        var dev = _be.FromHost(host);
        _be.CopyRows(dev, 0, rows, row, shape[0]);
        if (!ReferenceEquals(dev, host)) dev.Dispose();
    }

    private void CopyFromRows(Tensor rows, int row, Shape shape, Span<float> dst)
    {
        using var staging = _be.Zeros(shape);
        _be.CopyRows(rows, row, staging, 0, shape[0]);
        if (staging.IsHost)
        {
            staging.Floats.CopyTo(dst);
            return;
        }
        using var host = _be.ToHost(staging);
        host.Floats.CopyTo(dst);
    }

    /// <summary>Bytes of an adapter's padded A and B over the modules it targets.</summary>
    private long Bytes(int adapter) => _bytes[adapter];

    /// <summary>KV blocks an adapter takes while resident (0 when no cache is attached).</summary>
    public int BlocksOf(int adapter) => _cache == null ? 0 : (int)((Bytes(adapter) + _cache.BlockBytes - 1) / _cache.BlockBytes);

    /// <summary>An adapter's key in the tiers' policies (beside KV block hashes), from its name.</summary>
    private ulong Key(int adapter) => KeyOf(_adapters[adapter].Name);

    private static ulong KeyOf(string name) => BlockPool.ChainHash(0xADA97E5UL, name.Select(c => (int)c).ToArray());

    /// <summary>Empties the device tier (its blocks back to the pool) and drops the tiers' copies of <paramref name="names"/>.</summary>
    private void Reset(IEnumerable<string> names)
    {
        DiscardPrefetches();
        for (int a = 0; a < _slotOf.Length; a++)
            if (_slotOf[a] >= 0) foreach (int b in _blocksOf[a] ?? []) _cache!.Pool.Release(b);
        if (_cache?.Tiers is { } tiers) foreach (string name in names) tiers.DropAdapter(KeyOf(name));
        _slotOf = [];
    }

    private void Rebuild()
    {
        // Padding depends on every adapter's rank: copies in the tiers and on the device are stale.
        Reset(_adapters.Select(a => a.Name));
        int count = _adapters.Count;
        _modules = _adapters.SelectMany(a => a.Adapter.Modules.Keys).Distinct().Order(StringComparer.Ordinal).Select(module =>
        {
            var p = _projections[module];
            int r = _adapters.Max(a => a.Adapter.Modules.TryGetValue(module, out var m) ? m.A.Shape[0] : 0);
            var scales = _adapters.Select(a => a.Adapter.Modules.ContainsKey(module) ? a.Adapter.Config.ScaleFor(module) : 0f).ToArray();
            return new Module(module, r, p.In, p.Out, scales);
        }).ToArray();
        _bytes = Enumerable.Range(0, count).Select(a => _modules.Where(m => m.Scale[a] != 0).Sum(m => (long)m.Rank * (m.In + m.Out) * sizeof(float))).ToArray();
        int smallest = count == 0 ? 1 : Math.Max(1, Enumerable.Range(0, count).Min(BlocksOf));
        _slots = _cache == null ? count : Math.Min(count, _cache.Pool.Count / smallest);
        // Stacks of the same shapes are kept (their slots are empty now; a load overwrites what it uses).
        if (_stacks != null && !(_stacks.Length == _modules.Length && _stacks.Zip(_modules).All(x => x.First.Name == x.Second.Name && x.First.Rank == x.Second.Rank)
            && _stacks.All(d => d.Device.Scales.Length == _slots)))
        {
            DisposeStacks();
            _stacks = null;
        }
        _slotOf = Enumerable.Repeat(-1, count).ToArray();
        _inSlot = Enumerable.Repeat(-1, _slots).ToArray();
        _blocksOf = new int[]?[count];
        _usedAt = new long[count];
        _pinned.Clear();
        var counters = Device;
        counters.Adapters = counters.AdapterBlocks = 0;
    }

    /// <summary>The device stacks, allocated (zeroed) on first use after a change of shapes.</summary>
    private DeviceStack[] EnsureStacks() => _stacks ??= _modules.Select(m =>
    {
        var a = _be.Zeros(new Shape(_slots, m.Rank, m.In));
        var b = _be.Zeros(new Shape(_slots, m.Out, m.Rank));
        return new DeviceStack(m.Name, m.Rank, m.In, m.Out, new ModuleStack(a, b, new float[_slots]),
            new Tensor(new Shape(_slots * m.Rank, m.In), DType.F32, a.Storage), new Tensor(new Shape(_slots * m.Out, m.Rank), DType.F32, b.Storage));
    }).ToArray();

    private void DisposeStacks()
    {
        foreach (var d in _stacks ?? [])
        {
            d.Device.A.Dispose();
            d.Device.B.Dispose();
        }
    }

    public void Dispose()
    {
        DiscardPrefetches();
        if (_cache?.Pool.Residents == this) _cache.Pool.Residents = null;
        DisposeStacks();
        foreach (var (_, a) in _adapters) a.Dispose();
    }
}
