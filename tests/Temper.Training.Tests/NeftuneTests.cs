// NEFTune (transformers' neftune_noise_alpha) on the llama-tiny fixture with its LoRA: training passes add
// embedding noise drawn from the micro-batch's seed (the same loss for the same seed, another for another,
// evaluation passes untouched, an effect that shrinks with alpha), and the LoRA gradient of the noisy pass
// is that of its loss: directional derivatives against central differences of the loss with the same noise.
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

public sealed class NeftuneTests
{
    private static readonly int[] Ids = [1, 40, 41, 42, 43, 50, 51, 52, 1, 60, 61, 62, 63, 64, 65, 2];
    private static readonly int[] Labels = [-100, 40, 41, 42, 43, 50, 51, 52, -100, 60, 61, 62, 63, 64, 65, 2];
    private static readonly int[] Mask = Enumerable.Repeat(1, 16).ToArray();

    private static (LanguageModel Lm, TrainableParameters Ps, DecoderBackprop Backprop) Lora()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var lm = LanguageModel.Load(dir, new CpuBackend(1));
        lm.AttachAdapter(Path.Combine(dir, "adapter"), merge: false);
        return (lm, TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend), new DecoderBackprop(lm.Decoder));
    }

    // The summed loss of a training pass (gradOf given, every parameter frozen) with the backprop's noise settings.
    private static double NoisyLoss(DecoderBackprop bp) => bp.Run(Ids, Labels, Mask, 2, 1f, _ => null).Sum(x => (double)x);

    [Fact]
    public void Training_passes_add_seeded_noise_and_evaluation_passes_none()
    {
        var (lm, ps, bp) = Lora();
        using var _ = lm;
        using var __ = ps;
        double clean = NoisyLoss(bp), eval = bp.Run(Ids, Labels, Mask, 2, 1f, null).Sum(x => (double)x);
        bp.NeftuneNoiseAlpha = 5;
        bp.DropoutSeed = 11;
        double noisy = NoisyLoss(bp);
        Assert.Equal(noisy, NoisyLoss(bp));   // the same seed draws the same noise
        Assert.Equal(eval, bp.Run(Ids, Labels, Mask, 2, 1f, null).Sum(x => (double)x)); // evaluation passes see none
        bp.DropoutSeed = 12;
        Assert.NotEqual(noisy, NoisyLoss(bp));
        bp.NeftuneNoiseAlpha = 0.005f;
        double small = NoisyLoss(bp);
        Assert.True(Math.Abs(noisy - clean) > 1e-3, $"alpha 5 changed the loss by only {noisy - clean}");
        Assert.True(Math.Abs(small - clean) < Math.Abs(noisy - clean) / 50, $"alpha 0.005: {small - clean}, alpha 5: {noisy - clean}");
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(5f)]
    [InlineData(0.05f)]
    public void The_noisy_pass_gradient_is_the_gradient_of_its_loss(float alpha)
    {
        var (lm, ps, bp) = Lora();
        using var _ = lm;
        using var __ = ps;
        bp.NeftuneNoiseAlpha = alpha;
        bp.DropoutSeed = 3;
        ps.ZeroGrads();
        double trained = bp.Run(Ids, Labels, Mask, 2, 1f, ps.GradOf).Sum(x => (double)x);
        Assert.Equal(NoisyLoss(bp), trained, 1e-9);
        AlongTheGradient.AssertMatches(ps, () => NoisyLoss(bp));
    }
}
