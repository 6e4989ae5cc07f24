// Sequence-level distillation: the teacher's greedy answers become the student's SFT data, and the
// student's loss on them falls.
using System.Text.Json.Nodes;
using Temper.Kernels.Cpu;
using Temper.Training.Distill;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class DistillTests
{
    [Fact]
    public void Student_learns_the_teachers_answers()
    {
        string dir = Directory.CreateTempSubdirectory("temper-distill-").FullName;
        string prompts = Path.Combine(dir, "prompts.jsonl");
        File.WriteAllLines(prompts, Enumerable.Range(0, 12).Select(i => new JsonObject { ["prompt"] = $"What is {i}+{i + 1}?\n" }.ToJsonString()));
        var student = new SftOptions
        {
            ModelDir = Fixtures.Hf("llama-tiny"), DataPath = prompts, OutDir = Path.Combine(dir, "run"), LoraRank = 8, LoraAlpha = 16,
            LearningRate = 1e-2f, BatchSize = 12, MaxSteps = 25, Seed = 1, Scheduler = Temper.Training.Optim.ScheduleKind.Constant,
        };
        var r = new SequenceDistiller(student, new DistillOptions(Fixtures.Hf("qwen2-tiny"), prompts, MaxNewTokens: 6), new CpuBackend()).Run();
        Assert.Equal(25, r.Steps);
        var data = File.ReadAllLines(Path.Combine(dir, "run", "distill_data.jsonl")).Where(l => l.Length > 0).ToArray();
        Assert.Equal(12, data.Length);
        Assert.All(data, l => Assert.False(string.IsNullOrEmpty(JsonNode.Parse(l)!["completion"]!.GetValue<string>())));
        Assert.True(r.Reports[^1].Loss < 0.9 * r.Reports[0].Loss, $"loss {r.Reports[0].Loss:F3} -> {r.Reports[^1].Loss:F3}");
        Directory.Delete(dir, true);
    }
}
