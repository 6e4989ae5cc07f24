// The memory plan against a run's measured peak: one SFT step on a fixture model whose examples all
// fill the micro-batch (8 x 128 tokens, so activations outweigh the tiny weights), with and without
// QLoRA, with and without DoRA. The measured peak is not the process's working set — on a small CPU run the .NET runtime,
// the JIT and garbage the GC has not yet collected dominate that — but the bytes the loaded model
// holds plus the peak of the CPU backend's counted allocations (every tensor made by Zeros, counted
// until disposed): gradients, AdamW moments, activations and the LoRA terms. The prediction must be
// within 15% of it. A mixture-of-experts model (MoeTiny's Mixtral, LoRA on attention, experts and router; Qwen2-MoE
// with its shared expert, fully fine-tuned) likewise, and its full-fine-tuning parameter count is the model's.
using Temper.Kernels.Cpu;
using Temper.Training;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class MemoryPlanTests
{
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    [InlineData(true, true)]
    public void Prediction_is_within_15_percent_of_the_measured_peak(bool qlora, bool dora)
    {
        string model = QLoraParityTests.CopyModel("llama-tiny"), outDir = Directory.CreateTempSubdirectory("temper-plan-").FullName;
        string data = Path.Combine(outDir, "long.jsonl");
        var words = new[] { "number", "beta", "key", "path", "data", "time", "object", "file" };
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i =>
            $$"""{"messages": [{"role": "user", "content": "q{{i}}"}, {"role": "assistant", "content": "{{string.Join(' ', Enumerable.Range(0, 300).Select(j => words[(i * 7 + j * 3) % words.Length]))}}"}]}"""));
        var o = new SftOptions { ModelDir = model, DataPath = data, OutDir = Path.Combine(outDir, "run"), BatchSize = 8, MaxLength = 128, MaxSteps = 1, LoraRank = 8, QLora = qlora, UseDora = dora };
        var result = new SftTrainer(o, new CpuBackend(1)).Run();
        var m = result.Memory!;
        TestContext.Current.TestOutputHelper?.WriteLine(m.ToString());
        long measured = m.MeasuredPeak!.Value, predicted = m.Predicted.Total;
        Assert.True(m.Predicted.Activations > 4 * m.Predicted.Weights, $"activations should dominate this run: {m.Predicted}");
        Assert.True(Math.Abs(predicted - measured) <= 0.15 * measured, $"{m}");
        Assert.True(m.ProcessPeak > measured, $"{m}");
        Directory.Delete(model, true);
        Directory.Delete(outDir, true);
    }

    [Theory]
    [InlineData("mixtral-tiny", false)]
    [InlineData("qwen2-moe-tiny", true)]
    public void Moe_prediction_is_within_15_percent_of_the_measured_peak(string name, bool full)
    {
        var moe = MoeTiny.All.Single(m => m.Name == name);
        string outDir = Directory.CreateTempSubdirectory("temper-plan-moe-").FullName, data = Path.Combine(outDir, "long.jsonl");
        var words = new[] { "number", "beta", "key", "path", "data", "time", "object", "file" };
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i =>
            $$"""{"messages": [{"role": "user", "content": "q{{i}}"}, {"role": "assistant", "content": "{{string.Join(' ', Enumerable.Range(0, 300).Select(j => words[(i * 7 + j * 3) % words.Length]))}}"}]}"""));
        var o = new SftOptions
        {
            ModelDir = moe.Folder, DataPath = data, OutDir = Path.Combine(outDir, "run"), BatchSize = 8, MaxLength = 128, MaxSteps = 1, LoraRank = 8, Full = full,
            LoraTargets = ["q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3", "gate"],
        };
        var result = new SftTrainer(o, new CpuBackend(1)).Run();
        var m = result.Memory!;
        TestContext.Current.TestOutputHelper?.WriteLine(m.ToString());
        long measured = m.MeasuredPeak!.Value, predicted = m.Predicted.Total;
        Assert.True(Math.Abs(predicted - measured) <= 0.15 * measured, $"{m}");
        if (full)
        {
            using var lm = Temper.Models.LanguageModel.Load(moe.Folder, new CpuBackend(1));
            using var ps = TrainableParameters.Full(lm.Weights, lm.Decoder.Backend);
            Assert.Equal(4 * ps.Count, m.Predicted.Adapters);
        }
        Directory.Delete(outDir, true);
    }

    [Fact]
    public void The_cuda_kernels_bf16_copy_of_the_widest_activation_is_planned_as_workspace()
    {
        // llama-tiny's widest product side is the MLP's intermediate width (down's input, gate's and up's output).
        var cfg = Temper.Models.ModelConfig.Load(Fixtures.Hf("llama-tiny"));
        var lora = new Temper.Models.LoraConfig(8, 16, false, ["q_proj", "down_proj"], null, 0);
        var plain = MemoryPlan.For(cfg, new MemoryPlanOptions(4, 64, Lora: lora));
        var ptx = MemoryPlan.For(cfg, new MemoryPlanOptions(4, 64, Lora: lora) { Bf16ProductCopies = true });
        Assert.Equal(2L * 4 * 64 * Math.Max(cfg.IntermediateSize, cfg.HiddenSize), ptx.Workspace - plain.Workspace);
        Assert.Equal(plain.Activations, ptx.Activations);
    }
}
