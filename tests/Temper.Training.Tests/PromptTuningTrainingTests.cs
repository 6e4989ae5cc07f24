// Prompt tuning's training on the llama-tiny fixture: the pass with virtual tokens holding some tokens' embeddings
// gives the loss of those tokens written before each row (unscored); the prompt's gradient is the gradient of the
// loss (a directional derivative against central differences); PEFT's three initialisations; an SFT run that
// learns and saves a PEFT PROMPT_TUNING folder which loads back, and a run that predicts its memory and resumes bit for bit; DPO
// whose reference is the base without the prompt, or a frozen prompt; and every option it cannot honour refused.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using Temper.Training.Preference;
using Temper.Training.Reward;
using Temper.Training.Trainers;
using static Temper.Tests.TinyRows;

namespace Temper.Tests;

public sealed class PromptTuningTrainingTests
{
    private static readonly int[] Virtual = [70, 71, 72];

    private static JsonObject[] Metrics(string dir) => RunMetrics.Read(dir);

    private static SftOptions Sft(string outDir) => ShortSft(outDir) with { PromptTuningTokens = 4, PromptTuningInit = PromptTuningConfig.Text, PromptTuningInitText = "What is" };

    private static Tensor Rows(LanguageModel lm, int[] ids)
    {
        var rows = lm.Decoder.Backend.Zeros(new Shape(ids.Length, lm.Config.HiddenSize));
        lm.Decoder.Backend.Embedding(lm.Weights.Embed, ids, rows);
        return Tensor.FromFloats(rows.Shape, rows.ToFloatArray(), PromptTuningAdapter.TensorName);
    }

    [Fact]
    public void The_training_pass_sees_the_virtual_tokens_as_unscored_written_tokens()
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend(1));
        var bp = new DecoderBackprop(lm.Decoder);
        int p = Virtual.Length;
        int[] written = [.. Virtual, .. Ids[..8], .. Virtual, .. Ids[8..]];
        int[] writtenLabels = [.. Enumerable.Repeat(-100, p), .. Labels[..8], .. Enumerable.Repeat(-100, p), .. Labels[8..]];
        double want = bp.Run(written, writtenLabels, [], 2, 1f, null).Sum(x => (double)x);
        lm.AttachPrompt(Rows(lm, Virtual));
        var losses = bp.Run(Ids, Labels, [], 2, 1f, null);
        Assert.Equal(Ids.Length, losses.Length); // per real token
        Assert.Equal(want, losses.Sum(x => (double)x), 1e-4);
        // Padding after the real tokens (mask 0) changes nothing.
        int[] padded = [.. Ids[..8], 0, 0, .. Ids[8..], 0, 0], paddedLabels = [.. Labels[..8], -100, -100, .. Labels[8..], -100, -100];
        int[] mask = [.. Enumerable.Repeat(1, 8), 0, 0, .. Enumerable.Repeat(1, 8), 0, 0];
        Assert.Equal(want, bp.Run(padded, paddedLabels, mask, 2, 1f, null).Sum(x => (double)x), 1e-4);
    }

    [Fact]
    public void The_prompt_gradient_is_the_gradient_of_the_loss()
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend(1));
        lm.AttachPrompt(PromptTuningInit.Create(lm, new PromptTuningConfig(3), seed: 1));
        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        var param = Assert.Single(ps.All);
        Assert.Equal("prompt_embeddings", param.Name);
        var bp = new DecoderBackprop(lm.Decoder);
        double Loss() => bp.Run(Ids, Labels, [], 2, 1f, null).Sum(x => (double)x);
        ps.ZeroGrads();
        double trained = bp.Run(Ids, Labels, [], 2, 1f, ps.GradOf).Sum(x => (double)x);
        Assert.Equal(Loss(), trained, 1e-6 * trained);
        var grad = param.Grad.Floats.ToArray();
        int c = lm.Config.HiddenSize;
        for (int j = 0; j < 3; j++) Assert.True(grad.Skip(j * c).Take(c).Any(g => g != 0), $"virtual token {j} got no gradient");
        AlongTheGradient.AssertMatches(ps, Loss);
    }

    [Fact]
    public void The_three_initialisations_are_peft_s()
    {
        using var lm = LanguageModel.Load(Model, new CpuBackend(1));
        int c = lm.Config.HiddenSize;
        var tok = lm.RequireTokenizer().EncodeWithSpecialTokens("What is");
        int p = tok.Count + 2;
        var text = PromptTuningInit.Create(lm, new PromptTuningConfig(p, PromptTuningConfig.Text, "What is"), seed: 1).Floats.ToArray();
        var rows = Rows(lm, Enumerable.Range(0, p).Select(i => tok[i % tok.Count]).ToArray()).Floats.ToArray();
        Assert.Equal(rows, text); // repeated to P, in order
        Assert.Equal(rows[..(2 * c)], PromptTuningInit.Create(lm, new PromptTuningConfig(2, PromptTuningConfig.Text, "What is the sum"), seed: 1).Floats.ToArray()); // cut to P

        var random = PromptTuningInit.Create(lm, new PromptTuningConfig(8), seed: 1).Floats.ToArray();
        double mean = random.Average(x => (double)x), variance = random.Average(x => (x - mean) * (x - mean));
        Assert.True(Math.Abs(mean) < 0.2 && Math.Abs(variance - 1) < 0.25, $"N(0,1) init: mean {mean}, variance {variance} over {random.Length} values");
        Assert.Equal(random, PromptTuningInit.Create(lm, new PromptTuningConfig(8), seed: 1).Floats.ToArray());
        Assert.NotEqual(random, PromptTuningInit.Create(lm, new PromptTuningConfig(8), seed: 2).Floats.ToArray());

        var discrete = PromptTuningInit.Create(lm, new PromptTuningConfig(4, PromptTuningConfig.RandomDiscrete), seed: 1).Floats.ToArray();
        var embed = lm.Weights.Embed.Floats.ToArray();
        for (int j = 0; j < 4; j++)
        {
            var row = discrete[(j * c)..((j + 1) * c)];
            Assert.Contains(Enumerable.Range(0, lm.Config.VocabSize), v => embed.AsSpan(v * c, c).SequenceEqual(row));
        }
    }

    [Fact]
    public void An_sft_run_learns_and_saves_a_peft_folder()
    {
        string dir = TempFolder.Create("temper-pt-sft");
        new SftTrainer(Sft(dir) with { MaxSteps = 10, EvalData = Path.Combine(Model, "trainer", "sft.jsonl"), EvalEvery = 1 }, new CpuBackend(1)).Run();
        var m = Metrics(dir);
        // The random tiny model is close to uniform (ln 512 = 6.24), so four virtual tokens move its loss only a little: it
        // must go down at every step and by 0.005 in all.
        var eval = m.Select(x => x["eval_loss"]!.GetValue<double>()).ToArray();
        for (int i = 1; i < eval.Length; i++) Assert.True(eval[i] < eval[i - 1], $"loss on the training data rose after step {i + 1}: {string.Join(", ", eval)}");
        Assert.True(eval[^1] < eval[0] - 0.005, $"loss on the training data: {string.Join(", ", eval)}");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        Assert.Equal("PROMPT_TUNING", cfg["peft_type"]!.GetValue<string>());
        Assert.Equal(4, cfg["num_virtual_tokens"]!.GetValue<int>());
        Assert.Equal(64, cfg["token_dim"]!.GetValue<int>());
        Assert.Equal("TEXT", cfg["prompt_tuning_init"]!.GetValue<string>());
        using (var st = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            Assert.Equal("prompt_embeddings", Assert.Single(st.Entries).Name);
        Assert.Equal("sft-prompt-tuning", JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!["kind"]!.GetValue<string>());

        // The saved prompt gives the run's last loss when evaluated again (no step after the last report).
        using var lm = LanguageModel.Load(Model, new CpuBackend(1), dir);
        using var bare = LanguageModel.Load(Model, new CpuBackend(1));
        using var a = lm.Logits(Ids, 2);
        using var b = bare.Logits(Ids, 2);
        Assert.NotEqual(a.Floats.ToArray(), b.Floats.ToArray());
    }

    [Fact]
    public void A_run_predicts_its_memory_and_resumes_as_the_uninterrupted_one()
    {
        string straight = TempFolder.Create("temper-pt-a"), split = TempFolder.Create("temper-pt-b");
        var memory = new SftTrainer(Sft(straight), new CpuBackend(1)).Run().Memory!;
        double ratio = (double)memory.MeasuredPeak!.Value / memory.Predicted.Total; // the plan counts the virtual tokens' rows and parameters
        Assert.True(ratio is > 0.85 and < 1.15, $"measured peak {memory.MeasuredPeak} against the plan's {memory.Predicted.Total}");
        using var cancel = new CancellationTokenSource();
        var first = new SftTrainer(Sft(split), new CpuBackend(1));
        first.OnStep = s => { if (s.Step == 3) cancel.Cancel(); };
        Assert.True(first.Run(cancel.Token).Interrupted);
        new SftTrainer(Sft(split) with { Resume = true }, new CpuBackend(1)).Run();
        var (s, p) = (Metrics(straight), Metrics(split));
        Assert.Equal(6, p.Length);
        for (int i = 0; i < 6; i++)
            foreach (var key in new[] { "loss", "grad_norm" })
                Assert.Equal(s[i][key]!.ToJsonString(), p[i][key]!.ToJsonString());
        // --init-adapter continues the saved prompt: its first loss is below the fresh run's.
        string more = TempFolder.Create("temper-pt-c");
        new SftTrainer(Sft(more) with { PromptTuningTokens = 0, InitAdapter = straight, MaxSteps = 1 }, new CpuBackend(1)).Run();
        Assert.True(Metrics(more)[0]["loss"]!.GetValue<double>() < s[0]["loss"]!.GetValue<double>());
    }

    [Fact]
    public void Dpo_compares_against_the_base_without_the_prompt_or_a_frozen_prompt()
    {
        string sft = TempFolder.Create("temper-pt-dpo-sft");
        new SftTrainer(Sft(sft), new CpuBackend(1)).Run();
        SftOptions Dpo(string outDir) => Sft(outDir) with { DataPath = Path.Combine(Model, "trainer", "dpo.jsonl"), PromptTuningTokens = 0, InitAdapter = sft, MaxSteps = 1 };
        // The same prompt as policy and frozen reference: the margin is 0, the loss ln 2.
        string same = TempFolder.Create("temper-pt-dpo-a");
        new DpoTrainer(Dpo(same), new PreferenceOptions { RefAdapter = sft }, new CpuBackend(1)).Run();
        Assert.Equal(Math.Log(2), Metrics(same)[0]["loss"]!.GetValue<double>(), 1e-5);
        // Against the base (the prompt switched off in the reference pass), the trained prompt moves the margin.
        string off = TempFolder.Create("temper-pt-dpo-b");
        new DpoTrainer(Dpo(off), new PreferenceOptions(), new CpuBackend(1)).Run();
        Assert.True(Math.Abs(Metrics(off)[0]["loss"]!.GetValue<double>() - Math.Log(2)) > 1e-4);
    }

    [Theory]
    [InlineData("full", "--full")]
    [InlineData("dora", "--use-dora")]
    [InlineData("rslora", "--rslora")]
    [InlineData("dropout", "--lora-dropout")]
    [InlineData("neftune", "--neftune-noise-alpha")]
    [InlineData("packing", "--packing")]
    [InlineData("lora-init", "is a LoRA adapter")]
    [InlineData("no-text", "--prompt-tuning-init-text")]
    [InlineData("negative", "must be >= 1 virtual tokens")]
    public void Options_it_cannot_honour_are_refused(string what, string named)
    {
        var o = Sft(TempFolder.Create("temper-pt-refused"));
        o = what switch
        {
            "full" => o with { Full = true },
            "dora" => o with { UseDora = true },
            "rslora" => o with { UseRsLora = true },
            "dropout" => o with { LoraDropout = 0.1 },
            "neftune" => o with { NeftuneNoiseAlpha = 5 },
            "packing" => o with { Packing = true },
            "lora-init" => o with { InitAdapter = Path.Combine(Model, "adapter") },
            "no-text" => o with { PromptTuningInitText = null },
            _ => o with { PromptTuningTokens = -1 },
        };
        var e = Assert.Throws<TemperException>(() => new SftTrainer(o, new CpuBackend(1)).Run());
        Assert.Contains(named, e.Message);
    }

    [Fact]
    public void A_reward_model_and_a_mismatched_continuation_are_refused()
    {
        string sft = TempFolder.Create("temper-pt-saved");
        new SftTrainer(Sft(sft) with { MaxSteps = 1 }, new CpuBackend(1)).Run();
        var e = Assert.Throws<TemperException>(() => new SftTrainer(Sft(TempFolder.Create("temper-pt-x")) with { InitAdapter = sft, PromptTuningTokens = 7 }, new CpuBackend(1)).Run());
        Assert.Contains("has 4 virtual tokens", e.Message);
        var reward = Sft(TempFolder.Create("temper-pt-rm")) with { DataPath = Path.Combine(Model, "trainer", "dpo.jsonl") };
        Assert.Contains("score head", Assert.Throws<TemperException>(() => new RewardTrainer(reward, new RewardOptions(), new CpuBackend(1)).Run()).Message);
    }
}
