// QLoRA step-0 parity on the fixture models: the loss and LoRA gradients of a model whose layer
// projections are NF4 (fused dequantising linear, frozen base) equal those of the same adapter on a
// plain f32 model holding the dequantised weights (loss within 1e-5 relative, every LoRA gradient
// within 1e-4 relative L2) — once through DecoderBackprop, once through the SFT trainer's first step.
// Also: --qlora refuses full fine-tuning. Models are copied to a temp folder first, because loading
// with qlora saves temper-nf4.safetensors beside the weights.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class QLoraParityTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    /// <summary>A temp copy of a fixture model's top-level files.</summary>
    internal static string CopyModel(string name)
    {
        string src = Fixtures.Hf(name), dst = Directory.CreateTempSubdirectory("temper-qlora-").FullName;
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    /// <summary>Runs <paramref name="step"/> (a forward and backward pass giving the loss and the trainable parameters with their
    /// gradients) over the NF4 (--qlora) load of a copy of llama-tiny and over the plain load of its dequantised copy; asserts the
    /// losses within 1e-5 relative, the same parameters by name, and every gradient within 1e-4 relative L2.
    /// <paramref name="more"/> gets the parameters (dequantised, NF4) for the caller's own checks.</summary>
    internal static void AssertNf4EqualsDequantized(string what, Func<LanguageModel, (double Loss, TrainableParameters Params)> step,
        Action<TrainableParameters, TrainableParameters>? more = null)
    {
        string dir = CopyModel("llama-tiny");
        string? plainDir = null;
        try
        {
            using var q = LanguageModel.Load(dir, new CpuBackend(), qlora: true);
            Assert.All(q.Weights.Projections, p => Assert.NotNull(p.Nf4));
            plainDir = DequantizedModel.Copy(dir, q);
            using var plain = LanguageModel.Load(plainDir, new CpuBackend());
            var (lossQ, psQ) = step(q);
            var (lossP, psP) = step(plain);
            using var _q = psQ;
            using var _p = psP;
            Assert.True(Math.Abs(lossQ - lossP) <= 1e-5 * Math.Abs(lossP), $"{what} loss {lossQ:R}, dequantised model {lossP:R}");
            Assert.Equal(psP.All.Select(p => p.Name), psQ.All.Select(p => p.Name));
            more?.Invoke(psP, psQ);
            for (int i = 0; i < psP.All.Count; i++)
            {
                double err = GradientParityTests.RelativeL2(psP.All[i].Grad.Floats, psQ.All[i].Grad.Floats);
                Assert.True(err < 1e-4, $"{psQ.All[i].Name}: relative L2 error {err:G3}");
            }
        }
        finally
        {
            Directory.Delete(dir, true);
            if (plainDir != null) Directory.Delete(plainDir, true);
        }
    }

    private static (double Loss, TrainableParameters Params) Step(LanguageModel lm, string fixture)
    {
        using var r = SafetensorsFile.Open(Path.Combine(Fixtures.Hf(fixture), "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0], t = ids.Length / b;
        int count = Enumerable.Range(0, ids.Length).Count(i => i % t != 0 && labels[i] != -100);
        var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        var losses = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], b, 1f / count, ps.GradOf);
        return (losses.Sum() / count, ps);
    }

    [Theory, MemberData(nameof(Models))]
    public void Loss_and_lora_gradients_equal_the_dequantized_model(string name)
    {
        string dir = CopyModel(name), adapter = Path.Combine(Fixtures.Hf(name), "adapter");
        var be = new CpuBackend();
        using var q = LanguageModel.Load(dir, be, adapter, qlora: true);
        Assert.All(q.Weights.Projections, p => Assert.NotNull(p.Nf4));
        Assert.True(File.Exists(Path.Combine(dir, Nf4ModelFile.FileName)));
        string plainDir = DequantizedModel.Copy(dir, q);
        using var plain = LanguageModel.Load(plainDir, be, adapter);

        var (lossQ, psQ) = Step(q, name);
        var (lossP, psP) = Step(plain, name);
        using var _q = psQ;
        using var _p = psP;
        Assert.True(Math.Abs(lossQ - lossP) <= 1e-5 * Math.Abs(lossP), $"QLoRA loss {lossQ:R}, dequantised model {lossP:R}");
        Assert.Equal(psP.All.Count, psQ.All.Count);
        for (int i = 0; i < psP.All.Count; i++)
        {
            Assert.Equal(psP.All[i].Name, psQ.All[i].Name);
            double err = GradientParityTests.RelativeL2(psP.All[i].Grad.Floats, psQ.All[i].Grad.Floats);
            Assert.True(err < 1e-4, $"{psQ.All[i].Name}: relative L2 error {err:G3}");
            Assert.True(GradientParityTests.RelativeL2(psP.All[i].Grad.Floats, new float[psP.All[i].Grad.Elements]) > 0, $"{psP.All[i].Name}: zero gradient");
        }
        Directory.Delete(dir, true);
        Directory.Delete(plainDir, true);
    }

    [Fact]
    public void Sft_trainer_first_step_equals_the_dequantized_model()
    {
        string dir = CopyModel("llama-tiny"), outQ = Directory.CreateTempSubdirectory("temper-qlora-run-").FullName, outP = Directory.CreateTempSubdirectory("temper-plain-run-").FullName;
        string plainDir;
        using (var q = LanguageModel.Load(dir, new CpuBackend(), qlora: true)) plainDir = DequantizedModel.Copy(dir, q);
        SftOptions Options(string model, string output, bool qlora) => new()
        {
            ModelDir = model,
            DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl"),
            OutDir = output,
            InitAdapter = Path.Combine(Fixtures.Hf("llama-tiny"), "adapter"),
            BatchSize = 6,
            MaxSteps = 1,
            QLora = qlora,
        };
        new SftTrainer(Options(dir, outQ, true), new CpuBackend()).Run();
        new SftTrainer(Options(plainDir, outP, false), new CpuBackend()).Run();
        JsonObject First(string d) => RunMetrics.First(d);
        var (mq, mp) = (First(outQ), First(outP));
        double lq = mq["loss"]!.GetValue<double>(), lp = mp["loss"]!.GetValue<double>();
        Assert.True(Math.Abs(lq - lp) <= 1e-5 * lp, $"QLoRA SFT loss {lq:R}, dequantised model {lp:R}");
        double nq = mq["grad_norm"]!.GetValue<double>(), np = mp["grad_norm"]!.GetValue<double>();
        Assert.True(Math.Abs(nq - np) <= 1e-4 * np, $"QLoRA grad norm {nq:R}, dequantised model {np:R}");
        Assert.True(JsonNode.Parse(File.ReadAllText(Path.Combine(outQ, "manifest.json")))!["hyperparameters"]!["qlora"]!.GetValue<bool>());
        foreach (var d in new[] { dir, plainDir, outQ, outP }) Directory.Delete(d, true);
    }

    [Fact]
    public void Qlora_refuses_full_finetuning()
    {
        string outDir = Directory.CreateTempSubdirectory("temper-qlora-full-").FullName;
        var o = new SftOptions
        {
            ModelDir = Fixtures.Hf("llama-tiny"),
            DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl"),
            OutDir = outDir,
            Full = true,
            QLora = true,
        };
        var e = Assert.Throws<TemperException>(() => new SftTrainer(o, new CpuBackend()).Run());
        Assert.Contains("--qlora", e.Message);
        Assert.Contains("--full", e.Message);
        Directory.Delete(outDir, true);
    }
}
