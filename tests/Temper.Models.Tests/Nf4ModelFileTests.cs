// The saved NF4 quantisation (temper-nf4.safetensors): made on the first --qlora load, reused by the
// next one (the codes come back bit for bit from the file, not from a second quantisation), re-made
// when the model's weights change, and refused — one line naming the file and tensor — when its
// header's sizes do not fit the shapes config.json implies. Generation over the NF4 base runs.
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class Nf4ModelFileTests
{
    private static string CopyModel(string name)
    {
        string src = Fixtures.Hf(name), dst = Directory.CreateTempSubdirectory("temper-nf4-").FullName;
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    private static Dictionary<string, byte[]> Codes(LanguageModel lm) => lm.Weights.Projections.ToDictionary(p => p.Name, p => p.Nf4!.Codes.Bytes.ToArray());

    [Fact]
    public void Quantization_is_saved_once_and_reused()
    {
        string dir = CopyModel("llama-tiny");
        string path = Path.Combine(dir, Nf4ModelFile.FileName);
        Dictionary<string, byte[]> first;
        using (var lm = LanguageModel.Load(dir, new CpuBackend(), qlora: true)) first = Codes(lm);
        Assert.True(File.Exists(path));
        var written = File.GetLastWriteTimeUtc(path);
        using (var f = SafetensorsFile.Open(path))
        {
            Assert.Equal("temper-nf4", f.Metadata["format"]);
            Assert.Equal(14 * 4, f.Entries.Count);
            Assert.Equal(DType.U8, f.Entry("model.layers.0.mlp.down_proj.weight.nf4").DType);
        }
        using (var lm = LanguageModel.Load(dir, new CpuBackend(), qlora: true))
        {
            Assert.Equal(written, File.GetLastWriteTimeUtc(path));
            var second = Codes(lm);
            foreach (var (name, codes) in first) Assert.Equal(codes, second[name]);
            // The reloaded weights are views of the saved file, not a fresh quantisation.
            var storage = Assert.IsType<HostStorage>(lm.Weights.Layers[0].Down.Nf4!.Codes.Storage);
            Assert.False(System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(storage.Memory, out _), "codes in a managed array: quantised again");
        }
        // Newer weights make the saved file stale: it is made again.
        File.SetLastWriteTimeUtc(Path.Combine(dir, "model.safetensors"), DateTime.UtcNow.AddMinutes(1));
        using (var lm = LanguageModel.Load(dir, new CpuBackend(), qlora: true)) Assert.NotEqual(written, File.GetLastWriteTimeUtc(path));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void A_file_whose_sizes_do_not_fit_is_refused()
    {
        string dir = CopyModel("llama-tiny");
        using (LanguageModel.Load(dir, new CpuBackend(), qlora: true)) { }
        string path = Path.Combine(dir, Nf4ModelFile.FileName);
        var tensors = new List<KeyValuePair<string, Tensor>>();
        Dictionary<string, string> meta;
        using (var f = SafetensorsFile.Open(path))
        {
            meta = new(f.Metadata);
            foreach (var e in f.Entries)
            {
                var t = f.Get(e.Name);
                if (e.Name == "model.layers.1.self_attn.k_proj.weight.absmax")
                    t = Tensor.FromArray<byte>(new Shape(e.Shape[0] - 1), t.Bytes[..(e.Shape[0] - 1)], DType.U8);
                else t = Tensor.FromArray<byte>(e.Shape, t.Bytes, e.DType);
                tensors.Add(new(e.Name, t));
            }
        }
        SafetensorsWriter.Write(path, tensors, meta);
        var ex = Assert.Throws<TemperException>(() => LanguageModel.Load(dir, new CpuBackend(), qlora: true));
        Assert.Contains(Nf4ModelFile.FileName, ex.Message);
        Assert.Contains("model.layers.1.self_attn.k_proj.weight.absmax", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Generation_runs_over_the_nf4_base()
    {
        string dir = CopyModel("qwen2-tiny");
        using var lm = LanguageModel.Load(dir, new CpuBackend(), qlora: true);
        using var logits = lm.Logits([1, 5, 9, 3], 1);
        using var plain = LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), new CpuBackend());
        using var plainLogits = plain.Logits([1, 5, 9, 3], 1);
        var (a, b) = (logits.Floats.ToArray(), plainLogits.Floats.ToArray());
        Assert.All(a, v => Assert.True(float.IsFinite(v)));
        // 4-bit weights move the logits, but not far: NF4's weight error (about 9% RMS of a Gaussian
        // weight, see Nf4QuantizationTests) moves this random 2-layer model's logits by about 10%.
        double num = 0, den = 0;
        for (int i = 0; i < a.Length; i++) { num += (a[i] - b[i]) * (double)(a[i] - b[i]); den += (double)b[i] * b[i]; }
        Assert.InRange(Math.Sqrt(num / den), 1e-6, 0.25);
        Directory.Delete(dir, true);
    }
}
