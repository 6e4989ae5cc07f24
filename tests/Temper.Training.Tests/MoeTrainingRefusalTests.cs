// A mixture-of-experts model (MoeTiny's Qwen3-MoE) is refused by training (SFT, with or without --qlora, before the
// output folder is made), by the memory plan, and by the backward pass itself, in one line naming config.json.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Tests;
using Temper.Training;
using Temper.Training.Trainers;

namespace Temper.Training.Tests;

public sealed class MoeTrainingRefusalTests
{
    private static void OneLine(TemperException e, string what)
    {
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains("config.json: model_type 'qwen3_moe' is a mixture-of-experts model, which Temper runs for inference only", e.Message);
        Assert.Contains(what, e.Message);
    }

    [Fact]
    public void Sft_qlora_and_the_memory_plan_refuse_an_moe_model_in_one_line()
    {
        string dir = MoeTiny.Qwen3Moe.Folder;
        string data = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl");
        string outDir = Path.Combine(TempFolder.Create("temper-moe-sft"), "out");
        var o = new SftOptions { ModelDir = dir, DataPath = data, OutDir = outDir, MaxSteps = 1 };
        OneLine(Assert.Throws<TemperException>(() => new SftTrainer(o, new CpuBackend(1)).Run()), "training");
        OneLine(Assert.Throws<TemperException>(() => new SftTrainer(o with { QLora = true }, new CpuBackend(1)).Run()), "training");
        Assert.False(Directory.Exists(outDir));
        OneLine(Assert.Throws<TemperException>(() => MemoryPlan.For(ModelConfig.Load(dir), new MemoryPlanOptions(Batch: 1, Length: 8))), "temper plan");
    }
}
