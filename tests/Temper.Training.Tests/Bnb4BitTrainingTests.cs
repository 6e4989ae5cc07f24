// Training over and merging into a bitsandbytes 4-bit checkpoint (Bnb4BitExport writes one from a fixture):
// SFT's first step over it equals --qlora's over the original folder (the same NF4 weights, so the same loss and
// gradient norm bit for bit) and the memory plan counts NF4 weights; full fine-tuning and PiSSA are refused in one
// line; merging an adapter dequantises the base and writes a dense model without quantization_config whose logits
// are those of the adapter merged into the dequantised weights.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using Temper.Training.Runs;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class Bnb4BitTrainingTests
{
    private static string Bnb(string model = "llama-tiny")
    {
        string dir = Directory.CreateTempSubdirectory("temper-bnb-").FullName;
        Bnb4BitExport.Save(Fixtures.Hf(model), dir, doubleQuant: true, []);
        return dir;
    }

    private static SftOptions Options(string model, string output, bool qlora = false) => new()
    {
        ModelDir = model,
        DataPath = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl"),
        OutDir = output,
        InitAdapter = Path.Combine(Fixtures.Hf("llama-tiny"), "adapter"),
        BatchSize = 6,
        MaxSteps = 1,
        QLora = qlora,
    };

    [Fact]
    public void Sft_first_step_equals_qlora_over_the_original()
    {
        string bnb = Bnb(), copy = QLoraParityTests.CopyModel("llama-tiny");
        string outB = Directory.CreateTempSubdirectory("temper-bnb-run-").FullName, outQ = Directory.CreateTempSubdirectory("temper-qlora-run-").FullName;
        new SftTrainer(Options(bnb, outB), new CpuBackend()).Run();
        new SftTrainer(Options(copy, outQ, qlora: true), new CpuBackend()).Run();
        JsonObject First(string d) => RunMetrics.First(d);
        Assert.Equal((double)First(outQ)["loss"]!, (double)First(outB)["loss"]!);
        Assert.Equal((double)First(outQ)["grad_norm"]!, (double)First(outB)["grad_norm"]!);
        Assert.True(File.Exists(Path.Combine(outB, "adapter_model.safetensors")));

        using var lm = LanguageModel.Load(bnb, new CpuBackend());
        var qlora = MemoryPlan.For(lm.Config, new MemoryPlanOptions(6, 64, QLora: true));
        using var run = TrainingRun.Open(Options(bnb, outB) with { InitAdapter = null }, new CpuBackend());
        Assert.Equal(qlora.Weights, run.Plan((6, 64)).Weights);
        foreach (var d in new[] { bnb, copy, outB, outQ }) Directory.Delete(d, true);
    }

    [Theory]
    [InlineData("full", "cannot be combined|fine-tune all weights")]
    [InlineData("pissa", "--lora-init pissa rewrites the base weights")]
    public void Whole_weight_training_is_refused(string what, string expect)
    {
        string bnb = Bnb(), output = Directory.CreateTempSubdirectory("temper-bnb-bad-").FullName;
        var o = Options(bnb, output) with { InitAdapter = null, Full = what == "full", LoraInit = what == "pissa" ? "pissa" : LoraInitMethods.Default };
        var e = Assert.Throws<TemperException>(() => new SftTrainer(o, new CpuBackend()).Run());
        Assert.Contains("bitsandbytes 4-bit checkpoint", e.Message);
        Assert.Matches(expect, e.Message);
        Directory.Delete(bnb, true);
        Directory.Delete(output, true);
    }

    [Fact]
    public void Merge_writes_a_dense_model()
    {
        string bnb = Bnb(), merged = Directory.CreateTempSubdirectory("temper-bnb-merged-").FullName;
        string adapter = Path.Combine(Fixtures.Hf("llama-tiny"), "adapter");
        var be = new CpuBackend();
        int[] ids = [1, 5, 9, 33, 100, 7, 2, 50];
        float[] expect;
        using (var lm = LanguageModel.Load(bnb, be, adapter, mergeAdapter: true))
        {
            Assert.All(lm.Weights.Projections, p => Assert.Null(p.Nf4));
            using var t = lm.Logits(ids, 1);
            expect = t.ToFloatArray();
            ModelExport.Save(merged, lm, be);
        }
        Assert.Null(JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "config.json")))!["quantization_config"]);
        using (var lm = LanguageModel.Load(merged, be))
        {
            Assert.Null(lm.Config.Bnb4Bit);
            using var t = lm.Logits(ids, 1);
            Assert.Equal(expect, t.ToFloatArray());
        }
        // Exporting an NF4 base as a full model is refused rather than writing packed codes as weights.
        using (var nf4 = LanguageModel.Load(bnb, be))
            Assert.Contains("cannot be exported", Assert.Throws<TemperException>(() => ModelExport.Save(merged, nf4, be)).Message);
        Directory.Delete(bnb, true);
        Directory.Delete(merged, true);
    }
}
