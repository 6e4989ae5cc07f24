// Prefix tuning against PEFT (tests/reference/make_prefix_tuning_reference.py, fixture llama-tiny-prefix-tuning,
// skipped while owed): PEFT's saved adapter (its [P, L*2*Hkv*D] layout, GQA token_dim) gives PEFT's logits, and a
// training pass PEFT's step-0 loss and prompt_embeddings gradient, taken back into PEFT's layout.
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

public sealed class PrefixTuningParityTests
{
    [Fact]
    public void Logits_loss_and_gradient_match_peft()
    {
        string fixture = Fixtures.Hf("llama-tiny-prefix-tuning");
        using var reference = SafetensorsFile.Open(Path.Combine(fixture, "reference.safetensors"));
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(1), Path.Combine(fixture, "adapter"));
        var ids = reference.Get("input_ids").Span<int>().ToArray();
        var labels = reference.Get("labels").Span<int>().ToArray();
        using (var logits = lm.Logits(ids, 2))
            LogitParity.AssertClose(reference.Get("logits").ToFloatArray(), logits.Floats);
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        int count = labels.Where((l, i) => l != -100 && i % 24 != 0).Count();
        double loss = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], 2, 1f / count, ps.GradOf).Sum(x => (double)x) / count;
        double wantLoss = reference.Get("loss").ToFloatArray()[0];
        Assert.True(Math.Abs(loss - wantLoss) <= 1e-5 * wantLoss, $"loss {loss} against PEFT's {wantLoss}");
        // The gradient in PEFT's layout: the per-layer key/value gradients put back into [P, L*2*Hkv*D].
        var grads = new PrefixKv(lm.Weights.Prefix!.Keys.Select(k => ps.GradOf(k)!).ToArray(), lm.Weights.Prefix.Values.Select(v => ps.GradOf(v)!).ToArray());
        double l2 = GradientParityTests.RelativeL2(reference.Get("grad.prompt_embeddings").ToFloatArray(), grads.ToPeft(lm.Decoder.Backend).Floats.ToArray());
        Assert.True(l2 <= 1e-4, $"prefix gradient: relative L2 error {l2:G3} against PEFT's");
    }
}
