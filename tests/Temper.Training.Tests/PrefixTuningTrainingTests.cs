// Prefix tuning's training on the llama-tiny fixture: a prefix of the keys and values the model computes for some
// tokens gives the loss of those tokens written before each row (unscored); the prefix gradient is the gradient of
// the loss (a directional derivative against central differences); an SFT run that learns and saves a PEFT
// PREFIX_TUNING folder, predicts its memory and resumes bit for bit; DPO against a frozen prefix; refusals.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using Temper.Training.Preference;
using Temper.Training.Trainers;
using static Temper.Tests.TinyRows;

namespace Temper.Tests;

public sealed class PrefixTuningTrainingTests
{
    private static JsonObject[] Metrics(string dir) => RunMetrics.Read(dir);

    private static SftOptions Sft(string outDir) => ShortSft(outDir) with { PrefixTuningTokens = 3 };

    [Fact]
    public void A_prefix_of_computed_keys_and_values_gives_the_written_tokens_loss()
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend(1));
        int[] tokens = [70, 71, 72];
        int p = tokens.Length, width = lm.Config.NumKvHeads * lm.Config.HeadDim;
        using (var cache = new KvCache(lm.Config, lm.Decoder.Backend, 1, p))
        {
            lm.Decoder.Forward(tokens, [0, 1, 2], [], 1, cache, allPositions: false).Dispose();
            Tensor Rows(Tensor t) => Tensor.FromFloats(new Shape(p, width), t.ToFloatArray().AsSpan(0, p * width));
            var prefix = new PrefixKv(Enumerable.Range(0, 2).Select(l => Rows(cache.K(l))).ToArray(), Enumerable.Range(0, 2).Select(l => Rows(cache.V(l))).ToArray());
            var bp = new DecoderBackprop(lm.Decoder);
            double want = bp.Run([.. tokens, .. Ids[..8], .. tokens, .. Ids[8..]], [-100, -100, -100, .. Labels[..8], -100, -100, -100, .. Labels[8..]], [], 2, 1f, null).Sum(x => (double)x);
            lm.AttachPrefix(prefix);
            Assert.Equal(want, bp.Run(Ids, Labels, [], 2, 1f, null).Sum(x => (double)x), 1e-4);
        }
    }

    [Fact]
    public void The_prefix_gradient_is_the_gradient_of_the_loss()
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend(1));
        var prefix = PromptTuningInit.Prefix(lm.Config, 3, seed: 1);
        foreach (var t in prefix.Keys.Concat(prefix.Values)) lm.Decoder.Backend.Scale(t, 0.3f); // a smoother point than N(0,1) for central differences
        lm.AttachPrefix(prefix);
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        Assert.Equal(4, ps.All.Count); // two layers' keys and values
        var bp = new DecoderBackprop(lm.Decoder);
        double Loss() => bp.Run(Ids, Labels, [], 2, 1f, null).Sum(x => (double)x);
        ps.ZeroGrads();
        double trained = bp.Run(Ids, Labels, [], 2, 1f, ps.GradOf).Sum(x => (double)x);
        Assert.Equal(Loss(), trained, 1e-6 * trained);
        var grads = ps.All.Select(x => x.Grad.Floats.ToArray()).ToArray();
        foreach (var (param, g) in ps.All.Zip(grads)) Assert.True(g.Any(v => v != 0), $"{param.Name} got no gradient");
        AlongTheGradient.AssertMatches(ps, Loss);
    }

    [Fact]
    public void An_sft_run_learns_saves_resumes_and_predicts_its_memory()
    {
        string learn = TempFolder.Create("temper-px-learn");
        new SftTrainer(Sft(learn) with { MaxSteps = 8, EvalData = Path.Combine(Model, "trainer", "sft.jsonl"), EvalEvery = 1 }, new CpuBackend(1)).Run();
        var eval = Metrics(learn).Select(x => x["eval_loss"]!.GetValue<double>()).ToArray();
        for (int i = 1; i < eval.Length; i++) Assert.True(eval[i] < eval[i - 1], $"loss on the training data rose after step {i + 1}: {string.Join(", ", eval)}");
        Assert.True(eval[^1] < eval[0] - 0.01, $"loss on the training data: {string.Join(", ", eval)}");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(learn, "adapter_config.json")))!;
        Assert.Equal("PREFIX_TUNING", cfg["peft_type"]!.GetValue<string>());
        Assert.Equal(32, cfg["token_dim"]!.GetValue<int>()); // Hkv x D, as PEFT sets it for grouped-query attention
        using (var lm = LanguageModel.Load(Model, new CpuBackend(1), learn))
            Assert.Equal(3, lm.Weights.VirtualTokenCount);

        string straight = TempFolder.Create("temper-px-a"), split = TempFolder.Create("temper-px-b");
        var memory = new SftTrainer(Sft(straight), new CpuBackend(1)).Run().Memory!;
        double ratio = (double)memory.MeasuredPeak!.Value / memory.Predicted.Total;
        Assert.True(ratio is > 0.85 and < 1.15, $"measured peak {memory.MeasuredPeak} against the plan's {memory.Predicted.Total}");
        using var cancel = new CancellationTokenSource();
        var first = new SftTrainer(Sft(split), new CpuBackend(1));
        first.OnStep = s => { if (s.Step == 3) cancel.Cancel(); };
        Assert.True(first.Run(cancel.Token).Interrupted);
        new SftTrainer(Sft(split) with { Resume = true }, new CpuBackend(1)).Run();
        var (s, q) = (Metrics(straight), Metrics(split));
        for (int i = 0; i < 6; i++)
            foreach (var key in new[] { "loss", "grad_norm" })
                Assert.Equal(s[i][key]!.ToJsonString(), q[i][key]!.ToJsonString());
    }

    [Fact]
    public void Dpo_against_the_same_frozen_prefix_starts_at_ln_2()
    {
        string sft = TempFolder.Create("temper-px-dpo-sft");
        new SftTrainer(Sft(sft) with { MaxSteps = 2 }, new CpuBackend(1)).Run();
        string dpo = TempFolder.Create("temper-px-dpo");
        new DpoTrainer(Sft(dpo) with { DataPath = Path.Combine(Model, "trainer", "dpo.jsonl"), PrefixTuningTokens = 0, InitAdapter = sft, MaxSteps = 1 },
            new PreferenceOptions { RefAdapter = sft }, new CpuBackend(1)).Run();
        Assert.Equal(Math.Log(2), Metrics(dpo)[0]["loss"]!.GetValue<double>(), 1e-5);
    }

    [Fact]
    public void Mixed_or_inapplicable_options_are_refused()
    {
        string Refusal(SftOptions o) => Assert.Throws<TemperException>(() => new SftTrainer(o, new CpuBackend(1)).Run()).Message;
        var o = Sft(TempFolder.Create("temper-px-refused"));
        Assert.Contains("cannot be combined", Refusal(o with { PromptTuningTokens = 2 }));
        Assert.Contains("apply to --prompt-tuning", Refusal(o with { PromptTuningInitText = "What is" }));
        Assert.Contains("--packing", Refusal(o with { Packing = true }));
        Assert.Contains("is a LoRA adapter", Refusal(o with { InitAdapter = Path.Combine(Model, "adapter") }));
    }
}

// Prompt and prefix tuning over an NF4 (QLoRA) base: the loss and the virtual tokens' gradients equal those over a plain
// f32 model holding the dequantised weights (as QLoraParityTests checks for LoRA).
public sealed class VirtualTokensOverNf4Tests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void The_nf4_base_gives_the_dequantised_base_s_loss_and_gradients(bool prefix)
    {
        string dir = QLoraParityTests.CopyModel("llama-tiny");
        using var nf4 = LanguageModel.Load(dir, new CpuBackend(1), qlora: true);
        using var plain = LanguageModel.Load(DequantizedModel.Copy(dir, nf4), new CpuBackend(1));
        foreach (var lm in new[] { nf4, plain })
        {
            var local = new Random(3);
            if (prefix)
            {
                int width = lm.Config.NumKvHeads * lm.Config.HeadDim, layers = lm.Config.NumLayers;
                lm.AttachPrefix(PrefixKv.FromPeft(Enumerable.Range(0, 2 * layers * 2 * width).Select(_ => (float)(local.NextDouble() - 0.5)).ToArray(), 2, layers, width));
            }
            else lm.AttachPrompt(Tensor.FromFloats(new Shape(2, lm.Config.HiddenSize), Enumerable.Range(0, 2 * lm.Config.HiddenSize).Select(_ => (float)(local.NextDouble() - 0.5)).ToArray()));
        }
        (double Loss, float[][] Grads) Step(LanguageModel lm)
        {
            using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
            ps.ZeroGrads();
            double loss = new DecoderBackprop(lm.Decoder).Run(Ids, Labels, [], 2, 0.1f, ps.GradOf).Sum(x => (double)x);
            return (loss, ps.All.Select(p => p.Grad.Floats.ToArray()).ToArray());
        }
        var (lq, gq) = Step(nf4);
        var (lp, gp) = Step(plain);
        Assert.True(Math.Abs(lq - lp) <= 1e-5 * Math.Abs(lp), $"loss over NF4 {lq}, over the dequantised weights {lp}");
        foreach (var (a, b) in gq.Zip(gp))
        {
            double l2 = GradientParityTests.RelativeL2(b, a);
            Assert.True(l2 <= 1e-4, $"virtual-token gradient: relative L2 {l2:G3}");
        }
    }
}
