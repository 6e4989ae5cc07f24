// Several LoRA adapters of one base combined into one, as PEFT's add_weighted_adapter(combination_type="cat")
// combines them: for each module, A = [w_1 s_1 A_1; w_2 s_2 A_2; ...] (rows; s_i the adapter's scale of that
// module) and B = [B_1 | B_2 | ...] (columns), zero-padded to rank R = the largest per-module sum of ranks, with
// lora_alpha = R, so the combined delta is exactly sum_i w_i s_i B_i A_i. Unlike PEFT, which copies the first
// adapter's use_rslora (and would then scale the sum by sqrt(R)), the combination is written with use_rslora
// false so it means what the weights say. Modules an adapter lacks get zeros from it. DoRA adapters (their
// magnitudes do not add) and adapters with modules_to_save are refused.
using Temper.Core;
using Temper.Models;

namespace Temper.Training.Lora;

public static class AdapterCombination
{
    /// <summary>Writes the "cat" combination of <paramref name="adapters"/> (each with its weight) to <paramref name="outDir"/>.</summary>
    public static LoraConfig Cat(IReadOnlyList<(LoraAdapter Adapter, double Weight)> adapters, string outDir, string baseModel)
    {
        if (adapters.Count < 2) throw new TemperException("combining needs at least two adapters");
        foreach (var (a, _) in adapters)
        {
            if (a.Config.UseDora) throw new TemperException($"{a.Directory}: a DoRA adapter (use_dora) cannot be combined: its magnitudes do not add; merge it into the base (temper merge)");
            if (a.SavedModules.Count > 0) throw new TemperException($"{a.Directory}: an adapter with modules_to_save cannot be combined");
        }
        var names = adapters.SelectMany(x => x.Adapter.Modules.Keys).Distinct().Order(StringComparer.Ordinal).ToList();
        int rank = names.Max(n => adapters.Sum(x => x.Adapter.Modules.TryGetValue(n, out var m) ? m.A.Shape[0] : 0));
        var modules = new List<(string, Tensor, Tensor, Tensor?)>();
        foreach (var name in names)
        {
            var present = adapters.Where(x => x.Adapter.Modules.ContainsKey(name)).ToList();
            var (a0, b0) = present[0].Adapter.Modules[name];
            int inDim = a0.Shape[1], outDim = b0.Shape[0];
            var a = new float[rank * inDim];
            var b = new float[outDim * rank];
            int row = 0;
            foreach (var (adapter, weight) in present)
            {
                var (ai, bi) = adapter.Modules[name];
                if (ai.Shape[1] != inDim || bi.Shape[0] != outDim)
                    throw new TemperException($"{adapter.Directory}: module '{name}' has A {ai.Shape} and B {bi.Shape}, but {present[0].Adapter.Directory}'s are {a0.Shape} and {b0.Shape}: the adapters are not of one base");
                int r = ai.Shape[0];
                float scale = (float)(weight * adapter.Config.ScaleFor(name));
                var af = ai.ToFloatArray();
                var bf = bi.ToFloatArray();
                for (int x = 0; x < r; x++)
                    for (int j = 0; j < inDim; j++) a[(row + x) * inDim + j] = af[x * inDim + j] * scale;
                for (int i = 0; i < outDim; i++)
                    for (int x = 0; x < r; x++) b[i * rank + row + x] = bf[i * r + x];
                row += r;
            }
            modules.Add((name, Tensor.FromFloats(new Shape(rank, inDim), a, name + ".lora_A"), Tensor.FromFloats(new Shape(outDim, rank), b, name + ".lora_B"), null));
        }
        var targets = names.Select(n => n[(n.LastIndexOf('.') + 1)..]).Distinct().Order(StringComparer.Ordinal).ToList();
        var cfg = new LoraConfig(rank, rank, false, targets, null, 0);
        PeftAdapterWriter.Write(outDir, modules, cfg, baseModel);
        return cfg;
    }
}
