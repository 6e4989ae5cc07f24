// LoRA+ (PEFT's create_loraplus_optimizer): lora_B and every 1-D parameter (DoRA's magnitudes) take the learning rate
// times the ratio, lora_A the learning rate. On a fresh adapter (B = 0, so A's first gradient is 0) AdamW's first
// update moves each entry by lr x sign(g) (m_hat / sqrt(v_hat) = g / |g|), so after one step every B entry and
// magnitude with a clear gradient has moved by exactly lr x ratio and A not at all.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using AdamW = Temper.Training.Optim.AdamW;
using Temper.Training.Optim;
using Temper.Training.Trainers;
using static Temper.Tests.TinyRows;

namespace Temper.Tests;

public sealed class LoraPlusTests
{
    [Theory]
    [InlineData(1f, false)]
    [InlineData(16f, false)]
    [InlineData(4f, true)]
    public void B_and_magnitudes_move_by_lr_times_the_ratio_on_the_first_step(float ratio, bool dora)
    {
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(1));
        LoraInit.Attach(lm.Weights, new LoraConfig(4, 8, false, ["q_proj", "v_proj", "down_proj"], null, 0) { UseDora = dora }, lm.Decoder.Backend, seed: 1);
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        var before = ps.All.ToDictionary(p => p.Name, p => p.Value.Floats.ToArray());
        ps.ZeroGrads();
        new DecoderBackprop(lm.Decoder).Run(Ids, Labels, [], 2, 1f, ps.GradOf);
        const float lr = 1e-3f;
        using var opt = new AdamW(ps, lm.Decoder.Backend, new AdamWOptions(LoraPlusRatio: ratio));
        opt.Update(lr);
        int checkedB = 0, checkedM = 0;
        foreach (var p in ps.All)
        {
            var g = p.Grad.Floats.ToArray();
            var moved = p.Value.Floats.ToArray().Select((v, i) => v - before[p.Name][i]).ToArray();
            bool groupB = AdamW.IsLoraPlusB(p);
            Assert.Equal(p.Name.Contains(".lora_B.", StringComparison.Ordinal) || p.Name.EndsWith("lora_magnitude_vector", StringComparison.Ordinal), groupB);
            for (int i = 0; i < g.Length; i++)
            {
                if (Math.Abs(g[i]) < 1e-4) continue; // AdamW's eps bends the step of a tiny gradient
                float want = -MathF.Sign(g[i]) * lr * (groupB ? ratio : 1f);
                Assert.True(Math.Abs(moved[i] - want) <= 1e-3f * Math.Abs(want), $"{p.Name}[{i}] moved {moved[i]}, expected {want}");
                if (p.Value.Shape.Rank == 1) checkedM++;
                else if (groupB) checkedB++;
            }
            if (p.Name.Contains(".lora_A.", StringComparison.Ordinal)) Assert.Equal(before[p.Name], p.Value.Floats.ToArray()); // B = 0: no gradient yet
        }
        Assert.True(checkedB > 100, $"only {checkedB} B entries had a clear gradient");
        if (dora) Assert.True(checkedM > 20, $"only {checkedM} magnitudes had a clear gradient");
    }

    [Fact]
    public void Options_without_lora_b_matrices_refuse_the_ratio()
    {
        var o = new SftOptions
        {
            ModelDir = Fixtures.Hf("llama-tiny"), DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl"),
            OutDir = TempFolder.Create("temper-loraplus"), MaxSteps = 1, LoraPlusRatio = 16,
        };
        string Refusal(SftOptions x) => Assert.Throws<TemperException>(() => new SftTrainer(x, new CpuBackend(1)).Run()).Message;
        Assert.Contains("full fine-tuning has none", Refusal(o with { Full = true }));
        Assert.Contains("--loraplus-lr-ratio", Refusal(o with { PromptTuningTokens = 2 }));
        Assert.Contains("must be > 0", Refusal(o with { LoraPlusRatio = 0 }));
        new SftTrainer(o, new CpuBackend(1)).Run(); // and a LoRA run takes it
    }
}
