// The dense twin of an NF4 model that the QLoRA parity tests compare against (Temper.Models.Tests' MoeNf4Tests,
// Temper.Training.Tests' QLoraParityTests and the adapter-over-NF4 tests): a copy of the plain model folder with the
// weight of every NF4 projection of the quantised model replaced by its f32 dequantisation [Out, In] (projections the
// quantised model keeps dense, e.g. a checkpoint's skipped modules, keep the folder's values; every other tensor as f32).
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Models;
using Xunit;

namespace Temper.Tests;

public static class DequantizedModel
{
    /// <summary>The folder's copy (a new temp folder) with <paramref name="quantized"/>'s NF4 projections dequantised.</summary>
    public static string Copy(string plainDir, LanguageModel quantized)
    {
        string dst = TempFolder.Create("temper-dequant");
        foreach (var f in Directory.GetFiles(plainDir).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        var be = quantized.Decoder.Backend;
        var replaced = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var p in quantized.Weights.Projections.Where(p => p.Nf4 != null))
        {
            var w = Tensor.Zeros(p.Nf4!.Shape);
            be.Nf4Dequantize(p.Nf4, w);
            replaced[p.Name + ".weight"] = w;
        }
        using var src = SafetensorsFile.Open(Path.Combine(plainDir, "model.safetensors"));
        var tensors = src.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, replaced.GetValueOrDefault(e.Name) ?? src.Get(e.Name).ToF32())).ToList();
        Assert.Equal(replaced.Count, tensors.Count(t => replaced.ContainsKey(t.Key)));
        SafetensorsWriter.Write(Path.Combine(dst, "model.safetensors"), tensors);
        return dst;
    }
}
