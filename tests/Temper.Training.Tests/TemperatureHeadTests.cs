// The cross-entropy head at a temperature (GRPO scores completions with logits / T, as TRL does) is the
// plain head of the same model with its final RMSNorm weight divided by T, since logits are linear in
// that weight: losses equal, every gradient equal, and the final norm's gradient divided by T.
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

public class TemperatureHeadTests
{
    [Theory]
    [InlineData("llama-tiny", 0.7f)]
    [InlineData("qwen2-tiny", 1.6f)]
    public void Temperature_head_equals_the_plain_head_with_the_final_norm_scaled(string name, float temperature)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0], t = ids.Length / b;
        var targets = DecoderBackprop.NextTokenTargets(labels, t);

        using var hot = LanguageModel.Load(dir, new CpuBackend());
        using var hotParams = TrainableParameters.Full(hot.Weights, hot.Decoder.Backend);
        var hotLoss = new DecoderBackprop(hot.Decoder).Run(ids, [], b, new CrossEntropyHead(targets, 0.01f, null, temperature), hotParams.GradOf);

        using var cold = LanguageModel.Load(dir, new CpuBackend());
        var norm = cold.Weights.FinalNorm.Floats;
        for (int i = 0; i < norm.Length; i++) norm[i] /= temperature;
        using var coldParams = TrainableParameters.Full(cold.Weights, cold.Decoder.Backend);
        var coldLoss = new DecoderBackprop(cold.Decoder).Run(ids, [], b, new CrossEntropyHead(targets, 0.01f), coldParams.GradOf);

        for (int i = 0; i < hotLoss.Length; i++) Assert.Equal(coldLoss[i], hotLoss[i], 1e-5f * Math.Max(1, Math.Abs(coldLoss[i])));
        Assert.Contains(hotLoss, l => l > 0);
        foreach (var (h, c) in hotParams.All.Zip(coldParams.All))
        {
            var want = c.Grad.Floats.ToArray();
            if (ReferenceEquals(c.Value, cold.Weights.FinalNorm)) for (int i = 0; i < want.Length; i++) want[i] /= temperature;
            double err = GradientParityTests.RelativeL2(want, h.Grad.Floats);
            Assert.True(err < 1e-5, $"{h.Name}: relative L2 {err:G3}");
        }
    }
}
