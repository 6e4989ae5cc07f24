// The adapters a server holds, stacked per projection for the gathered LoRA op: for each targeted
// module, A [L, r, In] and B [L, Out, r] in backend memory (L adapters in load order, ranks
// zero-padded to the largest) and a scale per adapter (0 for an adapter that does not target the
// module). Adapters are added and removed at run time; the stacks are rebuilt on each change.
using Temper.Core;
using Temper.Models;

namespace Temper.Serving.Lora;

public sealed record ModuleStack(Tensor A, Tensor B, float[] Scales);

public sealed class AdapterStack : IDisposable
{
    private readonly IBackend _be;
    private readonly Dictionary<string, Projection> _projections;
    private readonly List<(string Name, LoraAdapter Adapter)> _adapters = [];
    private Dictionary<string, ModuleStack> _stacks = [];

    public AdapterStack(ModelWeights weights, IBackend be)
    {
        _be = be;
        _projections = weights.Projections.Append(weights.LmHead).GroupBy(p => p.Name).ToDictionary(g => g.Key, g => g.First());
    }

    public int Count => _adapters.Count;
    public IReadOnlyList<string> Names => _adapters.Select(a => a.Name).ToArray();
    public int IndexOf(string name) => _adapters.FindIndex(a => a.Name == name);

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

    /// <summary>The stack for one module (null when no adapter targets it).</summary>
    public ModuleStack? For(string module) => _stacks.GetValueOrDefault(module);

    private void Rebuild()
    {
        var fresh = new Dictionary<string, ModuleStack>();
        int count = _adapters.Count;
        foreach (string module in _adapters.SelectMany(a => a.Adapter.Modules.Keys).Distinct())
        {
            var p = _projections[module];
            int r = _adapters.Max(a => a.Adapter.Modules.TryGetValue(module, out var m) ? m.A.Shape[0] : 0);
            var a = new float[count * r * p.In];
            var b = new float[count * p.Out * r];
            var scales = new float[count];
            for (int i = 0; i < count; i++)
            {
                var ad = _adapters[i].Adapter;
                if (!ad.Modules.TryGetValue(module, out var ab)) continue;
                int ri = ab.A.Shape[0];
                ab.A.Floats.CopyTo(a.AsSpan(i * r * p.In, ri * p.In));             // rows past ri stay zero
                var src = ab.B.Floats;
                for (int o = 0; o < p.Out; o++) src.Slice(o * ri, ri).CopyTo(b.AsSpan((i * p.Out + o) * r, ri));
                scales[i] = ad.Config.Scale;
            }
            fresh[module] = new ModuleStack(_be.FromHost(Tensor.FromFloats(new Shape(count, r, p.In), a)), _be.FromHost(Tensor.FromFloats(new Shape(count, p.Out, r), b)), scales);
        }
        DisposeStacks();
        _stacks = fresh;
    }

    private void DisposeStacks()
    {
        foreach (var s in _stacks.Values)
        {
            s.A.Dispose();
            s.B.Dispose();
        }
    }

    public void Dispose()
    {
        DisposeStacks();
        foreach (var (_, a) in _adapters) a.Dispose();
    }
}
