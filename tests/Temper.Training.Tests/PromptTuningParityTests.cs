// Prompt tuning against PEFT (tests/reference/make_prompt_tuning_reference.py, fixture llama-tiny-prompt-tuning,
// skipped while owed): the TEXT initialisation, the logits of the real tokens with PEFT's saved adapter, and the
// step-0 loss and prompt gradient of a training pass (the fixture's labels leave each row's first token unscored).
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;

namespace Temper.Tests;

public sealed class PromptTuningParityTests
{
    [Fact]
    public void Init_logits_loss_and_gradient_match_peft()
    {
        string fixture = Fixtures.Hf("llama-tiny-prompt-tuning");
        using var reference = SafetensorsFile.Open(Path.Combine(fixture, "reference.safetensors"));
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(1));
        var init = PromptTuningInit.Create(lm, new PromptTuningConfig(4, PromptTuningConfig.Text, "What is"), seed: 0);
        Assert.Equal(reference.Get("init_embeddings").ToFloatArray(), init.Floats.ToArray());

        lm.AttachAdapter(Path.Combine(fixture, "adapter"), merge: false);
        var ids = reference.Get("input_ids").Span<int>().ToArray();
        var labels = reference.Get("labels").Span<int>().ToArray();
        using (var logits = lm.Logits(ids, 2))
            LogitParity.AssertClose(reference.Get("logits").ToFloatArray(), logits.Floats);
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        int count = labels.Where((l, i) => l != -100 && i % 24 != 0).Count();
        double loss = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], 2, 1f / count, ps.GradOf).Sum(x => (double)x) / count;
        double wantLoss = reference.Get("loss").ToFloatArray()[0];
        Assert.True(Math.Abs(loss - wantLoss) <= 1e-5 * wantLoss, $"loss {loss} against PEFT's {wantLoss}");
        double l2 = GradientParityTests.RelativeL2(reference.Get("grad.prompt_embeddings").ToFloatArray(), Assert.Single(ps.All).Grad.Floats.ToArray());
        Assert.True(l2 <= 1e-4, $"prompt gradient: relative L2 error {l2:G3} against PEFT's");
    }
}
