// The adapters a server holds, in two tiers like the KV blocks. Host tier: every loaded adapter, its
// A and B per targeted module zero-padded to the module's largest rank (A [r, In], B [Out, r]) and its
// scale. Device tier: per module stacks A [S, r, In] and B [S, Out, r] in backend memory and a scale
// per slot (0 for an adapter that does not target the module), for the gathered LoRA op; S slots
// = min(adapters, MaxResident). Acquire (once per step, with the adapters the step's rows use) loads
// each missing adapter from host into a free slot, evicting the least recently used resident adapter
// the step does not use; eviction copies nothing back (the host tier keeps every adapter), it frees
// the slot. Rows are mapped from adapter index to slot with SlotOf. Adapters are added and removed at
// run time; the tiers are rebuilt (all slots empty) on each change. Moves are counted per tier.
using Temper.Core;
using Temper.Models;
using Temper.Serving.Kv;

namespace Temper.Serving.Lora;

public sealed record ModuleStack(Tensor A, Tensor B, float[] Scales);

public sealed class AdapterStack : IDisposable
{
    /// <summary>One module's tiers: host slices per adapter (null: the adapter does not target it), device stacks and their row views.</summary>
    private sealed record Module(int Rank, int In, int Out, float[]?[] HostA, float[]?[] HostB, float[] HostScale, ModuleStack Device, Tensor ARows, Tensor BRows);

    private readonly IBackend _be;
    private readonly Dictionary<string, Projection> _projections;
    private readonly List<(string Name, LoraAdapter Adapter)> _adapters = [];
    private Dictionary<string, Module> _modules = [];
    private int[] _slotOf = [];                  // adapter -> slot, -1 when not resident
    private int[] _inSlot = [];                  // slot -> adapter, -1 when free
    private LruPolicy _lru = new();

    /// <param name="maxResident">How many adapters the device tier holds at once (the rest wait in host memory).</param>
    public AdapterStack(ModelWeights weights, IBackend be, int maxResident = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxResident);
        _be = be;
        MaxResident = maxResident;
        _projections = weights.Projections.Append(weights.LmHead).GroupBy(p => p.Name).ToDictionary(g => g.Key, g => g.First());
    }

    public int Count => _adapters.Count;
    public int MaxResident { get; }
    /// <summary>Device slots: the most distinct adapters one step may use.</summary>
    public int Slots => Math.Min(Count, MaxResident);
    public IReadOnlyList<string> Names => _adapters.Select(a => a.Name).ToArray();
    public int IndexOf(string name) => _adapters.FindIndex(a => a.Name == name);
    /// <summary>Device tier: hits/misses per acquire, bytes loaded in, bytes freed by evictions, resident adapters (Blocks).</summary>
    public TierCounters Device { get; } = new();
    /// <summary>Host tier: loads served (Hits), bytes copied out to the device, adapters held (Blocks).</summary>
    public TierCounters Host { get; } = new();

    /// <summary>Adds a loaded PEFT adapter under <paramref name="name"/> (which must be new), checking it fits the model.</summary>
    public void Add(string name, LoraAdapter adapter)
    {
        if (IndexOf(name) >= 0) throw new TemperException($"adapter '{name}' is already loaded");
        foreach (var (module, (a, b)) in adapter.Modules)
        {
            if (!_projections.TryGetValue(module, out var p)) throw new TemperException($"{adapter.Directory}: adapter module '{module}' does not exist in the model");
            if (a.Shape[1] != p.In || b.Shape[0] != p.Out)
                throw new TemperException($"{adapter.Directory}: adapter module '{module}' has A {a.Shape} and B {b.Shape}, the model's weight is [{p.Out},{p.In}]");
        }
        _adapters.Add((name, adapter));
        Rebuild();
    }

    /// <summary>Unloads an adapter; the indices of later adapters shift down by one.</summary>
    public void Remove(string name)
    {
        int i = IndexOf(name);
        if (i < 0) throw new TemperException($"adapter '{name}' is not loaded");
        _adapters[i].Adapter.Dispose();
        _adapters.RemoveAt(i);
        Rebuild();
    }

    /// <summary>The device stack for one module, indexed by slot (null when no adapter targets it).</summary>
    public ModuleStack? For(string module) => _modules.GetValueOrDefault(module)?.Device;

    public bool IsResident(int adapter) => _slotOf[adapter] >= 0;

    /// <summary>The device slot of a resident adapter (-1, the base model, maps to -1).</summary>
    public int SlotOf(int adapter) => adapter < 0 ? -1
        : _slotOf[adapter] is int s and >= 0 ? s : throw new InvalidOperationException($"adapter {adapter} is not resident: acquire it first");

    /// <summary>Makes every adapter in <paramref name="adapters"/> (indices; -1 ignored) resident, evicting the least recently used others.</summary>
    public void Acquire(IEnumerable<int> adapters)
    {
        var need = adapters.Where(a => a >= 0).Distinct().ToArray();
        if (need.Length > Slots) throw new InvalidOperationException($"a step uses {need.Length} adapters, the device holds {Slots}");
        foreach (int a in need.Where(IsResident))
        {
            Device.Hits++;
            _lru.Touch((ulong)a);                    // the step's residents are the newest: never the victim below
        }
        foreach (int a in need.Where(a => !IsResident(a)))
        {
            Device.Misses++;
            int slot = Array.IndexOf(_inSlot, -1);
            if (slot < 0) slot = Evict((int)_lru.Victim());
            Load(a, slot);
            _lru.Touch((ulong)a);
        }
    }

    private int Evict(int adapter)
    {
        int slot = _slotOf[adapter];
        _slotOf[adapter] = -1;
        _inSlot[slot] = -1;
        _lru.Remove((ulong)adapter);
        Device.Evictions++;
        Device.BytesOut += Bytes(adapter);
        Device.Blocks--;
        return slot;
    }

    private void Load(int adapter, int slot)
    {
        foreach (var m in _modules.Values)
        {
            m.Device.Scales[slot] = m.HostScale[adapter];
            if (m.HostA[adapter] is not { } a) continue; // scale 0: the slot's old rows are never used
            CopyToRows(new Shape(m.Rank, m.In), a, m.ARows, slot * m.Rank);
            CopyToRows(new Shape(m.Out, m.Rank), m.HostB[adapter]!, m.BRows, slot * m.Out);
        }
        _slotOf[adapter] = slot;
        _inSlot[slot] = adapter;
        long bytes = Bytes(adapter);
        Device.BytesIn += bytes;
        Device.Blocks++;
        Host.BytesOut += bytes;
        Host.Hits++;
    }

    private void CopyToRows(Shape shape, float[] data, Tensor rows, int row)
    {
        var host = Tensor.FromFloats(shape, data);
        var dev = _be.FromHost(host);
        _be.CopyRows(dev, 0, rows, row, shape[0]);
        if (!ReferenceEquals(dev, host)) dev.Dispose();
    }

    /// <summary>Bytes of an adapter's padded A and B over the modules it targets.</summary>
    private long Bytes(int adapter) => _modules.Values.Where(m => m.HostA[adapter] != null).Sum(m => (long)m.Rank * (m.In + m.Out) * sizeof(float));

    private void Rebuild()
    {
        var fresh = new Dictionary<string, Module>();
        int count = _adapters.Count, slots = Slots;
        foreach (string module in _adapters.SelectMany(a => a.Adapter.Modules.Keys).Distinct())
        {
            var p = _projections[module];
            int r = _adapters.Max(a => a.Adapter.Modules.TryGetValue(module, out var m) ? m.A.Shape[0] : 0);
            var hostA = new float[]?[count];
            var hostB = new float[]?[count];
            var scales = new float[count];
            for (int i = 0; i < count; i++)
            {
                var ad = _adapters[i].Adapter;
                if (!ad.Modules.TryGetValue(module, out var ab)) continue;
                int ri = ab.A.Shape[0];
                hostA[i] = new float[r * p.In];
                hostB[i] = new float[p.Out * r];
                ab.A.Floats.CopyTo(hostA[i]);                                   // rows past ri stay zero
                var src = ab.B.Floats;
                for (int o = 0; o < p.Out; o++) src.Slice(o * ri, ri).CopyTo(hostB[i].AsSpan(o * r, ri));
                scales[i] = ad.Config.Scale;
            }
            var a = _be.Zeros(new Shape(slots, r, p.In));
            var b = _be.Zeros(new Shape(slots, p.Out, r));
            fresh[module] = new Module(r, p.In, p.Out, hostA, hostB, scales, new ModuleStack(a, b, new float[slots]),
                new Tensor(new Shape(slots * r, p.In), DType.F32, a.Storage), new Tensor(new Shape(slots * p.Out, r), DType.F32, b.Storage));
        }
        DisposeStacks();
        _modules = fresh;
        _slotOf = Enumerable.Repeat(-1, count).ToArray();
        _inSlot = Enumerable.Repeat(-1, slots).ToArray();
        _lru = new LruPolicy();
        Device.Blocks = 0;
        Host.Blocks = count;
    }

    private void DisposeStacks()
    {
        foreach (var m in _modules.Values)
        {
            m.Device.A.Dispose();
            m.Device.B.Dispose();
        }
    }

    public void Dispose()
    {
        DisposeStacks();
        foreach (var (_, a) in _adapters) a.Dispose();
    }
}
