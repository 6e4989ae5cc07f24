// Gradient checkpointing: recomputing each layer's activations in backward gives the same losses and
// the same gradients, bit for bit, as keeping them (full fine-tuning and LoRA, both fixture models),
// while the most bytes held at once by the pass drops.
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

public class GradientCheckpointingTests
{
    public static TheoryData<string, bool> Cases => new() { { "llama-tiny", false }, { "llama-tiny", true }, { "qwen2-tiny", false }, { "qwen2-tiny", true } };

    [Theory, MemberData(nameof(Cases))]
    public void Recomputed_activations_give_identical_gradients(string name, bool lora)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0];
        using var lm = LanguageModel.Load(dir, new CpuBackend(), lora ? Path.Combine(dir, "adapter") : null);
        var be = lm.Decoder.Backend;

        (float[] Losses, float[][] Grads, long Peak) Pass(bool checkpointing)
        {
            using var ps = lora ? TrainableParameters.Lora(lm.Weights, be) : TrainableParameters.Full(lm.Weights, be);
            var bp = new DecoderBackprop(lm.Decoder) { GradientCheckpointing = checkpointing };
            var losses = bp.Run(ids, labels, [], b, 0.01f, ps.GradOf);
            return (losses, ps.All.Select(p => p.Grad.Floats.ToArray()).ToArray(), bp.PeakActivationBytes);
        }

        var kept = Pass(false);
        var recomputed = Pass(true);
        Assert.Equal(kept.Losses, recomputed.Losses);
        Assert.Equal(kept.Grads.Length, recomputed.Grads.Length);
        for (int i = 0; i < kept.Grads.Length; i++)
        {
            Assert.Contains(kept.Grads[i], g => g != 0);
            Assert.Equal(kept.Grads[i], recomputed.Grads[i]);
        }
        Assert.True(recomputed.Peak < kept.Peak, $"peak bytes {recomputed.Peak} with checkpointing, {kept.Peak} without");
    }
}
