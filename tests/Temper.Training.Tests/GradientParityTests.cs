// Gradient parity with transformers + PEFT (reference.safetensors): the mean cross-entropy over the
// non-masked labels of input_ids, differentiated by our hand-written backward. Every grad.* (full
// fine-tuning) and every lora.grad.* within 1e-3 relative L2 error, and the loss itself.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

public class GradientParityTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny", "qwen3-tiny" };

    internal static double RelativeL2(ReadOnlySpan<float> reference, ReadOnlySpan<float> actual)
    {
        double num = 0, den = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            num += (reference[i] - actual[i]) * (double)(reference[i] - actual[i]);
            den += reference[i] * (double)reference[i];
        }
        return Math.Sqrt(num / Math.Max(den, 1e-30));
    }

    private static (double Loss, TrainableParameters Params) Run(LanguageModel lm, SafetensorsFile r, bool lora)
    {
        var be = lm.Decoder.Backend;
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0], t = ids.Length / b;
        int count = Enumerable.Range(0, ids.Length).Count(i => i % t != 0 && labels[i] != -100);
        var ps = lora ? TrainableParameters.Lora(lm.Weights, be) : TrainableParameters.Full(lm.Weights, be);
        var losses = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], b, 1f / count, ps.GradOf);
        return (losses.Sum() / count, ps);
    }

    [Theory, MemberData(nameof(Models))]
    public void Full_finetune_gradients_match(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var refJson = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!;
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        var (loss, ps) = Run(lm, r, lora: false);
        using var _ = ps;
        Assert.Equal(refJson["loss"]!.GetValue<double>(), loss, 1e-4 * Math.Abs(loss));
        int compared = 0;
        foreach (var p in ps.All)
        {
            string key = "grad." + p.Name;
            if (!r.Contains(key)) continue;
            double err = RelativeL2(r.Get(key).Floats, p.Grad.Floats);
            Assert.True(err < 1e-3, $"{key}: relative L2 error {err:G3}");
            compared++;
        }
        Assert.Equal(r.Entries.Count(e => e.Name.StartsWith("grad.", StringComparison.Ordinal)), compared);
    }

    [Theory, MemberData(nameof(Models))]
    public void Lora_gradients_match(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var refJson = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!;
        using var lm = LanguageModel.Load(dir, new CpuBackend(), Path.Combine(dir, "adapter"));
        var (loss, ps) = Run(lm, r, lora: true);
        using var _ = ps;
        Assert.Equal(refJson["lora_loss"]!.GetValue<double>(), loss, 1e-4 * Math.Abs(loss));
        Assert.Equal(28, ps.All.Count);
        foreach (var p in ps.All)
        {
            string key = "lora.grad." + p.Name.Replace(".weight", ".default.weight", StringComparison.Ordinal);
            double err = RelativeL2(r.Get(key).Floats, p.Grad.Floats);
            Assert.True(err < 1e-3, $"{key}: relative L2 error {err:G3}");
        }
    }
}
