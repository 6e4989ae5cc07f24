// DecoderBackprop over CpuBackend's tensor pool: with PoisonMemory on (Uninitialized tensors and every
// freed tensor's array filled with NaN), repeated passes (the later ones on reused arrays), with and
// without gradient checkpointing and LoRA dropout, give the same losses and gradients, bit for bit, as a
// pass on a fresh backend. So every tensor the pass takes Uninitialized is written whole before it is
// read, and none is read after it is freed.
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

public class PooledMemoryTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Passes_on_poisoned_reused_memory_match_a_fresh_backend(bool lora)
    {
        string dir = Fixtures.Hf("llama-tiny");
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0];

        (float[] Losses, float[][] Grads)[] Passes(bool poison, params bool[] checkpointing)
        {
            var cpu = new CpuBackend(2) { PoisonMemory = poison };
            using var lm = LanguageModel.Load(dir, cpu, lora ? Path.Combine(dir, "adapter") : null);
            return checkpointing.Select(ck =>
            {
                using var ps = lora ? TrainableParameters.Lora(lm.Weights, cpu) : TrainableParameters.Full(lm.Weights, cpu);
                var bp = new DecoderBackprop(lm.Decoder) { GradientCheckpointing = ck, LoraDropout = lora ? 0.1f : 0, DropoutSeed = 7 };
                var losses = bp.Run(ids, labels, [], b, 0.01f, ps.GradOf);
                return (losses, ps.All.Select(p => p.Grad.Floats.ToArray()).ToArray());
            }).ToArray();
        }

        var fresh = Passes(false, false, true);
        var poisoned = Passes(true, false, false, true, true);
        foreach (var (p, i) in poisoned.Select((p, i) => (p, i)))
        {
            var f = fresh[i < 2 ? 0 : 1];
            Assert.Equal(f.Losses, p.Losses);
            Assert.Equal(f.Grads.Length, p.Grads.Length);
            for (int g = 0; g < f.Grads.Length; g++)
            {
                Assert.Contains(f.Grads[g], x => x != 0);
                Assert.Equal(f.Grads[g], p.Grads[g]);
            }
        }
    }
}
