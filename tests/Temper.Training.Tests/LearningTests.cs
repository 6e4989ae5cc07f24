// Learning works on the synthetic addition task, on 2 cores within a few hundred steps:
//  - full fine-tuning of a tiny randomly initialised model takes held-out exact match from < 20% to >= 80%;
//  - LoRA on a tiny model first pretrained (`temper pretrain` recipe: full weights from scratch on
//    {"text"} lines of the task family, "23+58=81", "23+58 is 81", ...) raises held-out exact match on
//    the question/answer form ("What is 23+58?\n" -> "Answer: 81") by >= 40 points over that base.
// The task uses operands 10..49, so every operand and every sum has two digits (one layout to learn);
// held-out accuracy is over every held-out pair once (150), none of them ever trained on.
// The tiny model: hidden 64, 2 layers, intermediate 192, 4 heads of 16, 2 KV heads, untied embeddings,
// the llama-tiny fixture's tokenizer. The ones digit of the sum (a sum mod 10) is learnt in a sudden
// transition whose step varies with the seed; two choices bring it early and make it less erratic:
// initializer_range 0.085 instead of the usual 0.02 (from 0.02 it came after 350+ steps) and untied
// embeddings (tied, one seed in 11 was still at 61% after 350 steps). Recipe: batch 128, AdamW lr 3e-3
// constant after 20 warmup steps, weight decay 0.1. Measured, seeds 1-10 (seed 1 runs here): full
// fine-tuning 400 steps -> 92, 95, 87, 91, 98, 91, 87, 96, 99, 95%; seeds 1-8: pretraining 300 steps
// then LoRA (r 16, alpha 32, all projections, batch 64, lr 3e-3) 200 steps -> 86, 87, 93, 86, 97, 91,
// 97, 95% from 0% for every base. With a single pretraining form ("23+58=81") the LoRA often had to learn
// the ones digit afresh (one seed in five stayed at 11%), hence the several forms of ToPretrainText.
// Runs are seeded and the CPU kernels are bitwise independent of the thread count, so the figures repeat
// on one machine; across machines they moved: seed 1 gave 92% (full) and 86% (LoRA) on 2026-11-22's
// machine, 84% and 85% on 2026-11-23's (both AVX-512). The test now trains the full model 500 steps
// (91% on 2026-11-23's machine) so that a machine's drift stays well clear of the 80% bound. One thread: for a model this small a second one bought nothing, and the two test classes
// then run side by side on 2 cores.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training.Optim;
using Temper.Training.Tasks;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class FullFineTuneLearningTests
{
    [Fact]
    public void Full_finetune_from_random_init_learns_addition()
    {
        var (before, after) = Learning.FullFineTune();
        Assert.True(before < 0.2, $"accuracy before training {before:P0}");
        Assert.True(after >= 0.8, $"accuracy after training {after:P0}");
    }
}

public class LoraLearningTests
{
    [Fact]
    public void Lora_on_a_pretrained_base_learns_the_answer_format()
    {
        var (baseAcc, after) = Learning.PretrainThenLora();
        Assert.True(after - baseAcc >= 0.4, $"LoRA took held-out exact match from {baseAcc:P0} to {after:P0}");
    }
}

internal static class Learning
{
    private static readonly AdditionTask Task = new(10, 49);
    private const int Hidden = 64, Layers = 2, Intermediate = 192;
    private const double InitRange = 0.085;

    private static CpuBackend Cpu() => new(threads: 1);

    internal static string TinyModelDir(int hidden, int layers, int intermediate, double initializerRange = 0.02, bool tied = true)
    {
        string dir = Directory.CreateTempSubdirectory("temper-learn-").FullName;
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "chat_template.jinja" })
            File.Copy(Path.Combine(Fixtures.Hf("llama-tiny"), f), Path.Combine(dir, f));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Hf("llama-tiny"), "config.json")))!.AsObject();
        cfg["hidden_size"] = hidden;
        cfg["num_hidden_layers"] = layers;
        cfg["intermediate_size"] = intermediate;
        cfg["head_dim"] = hidden / 4;
        cfg["initializer_range"] = initializerRange;
        cfg["tie_word_embeddings"] = tied;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        return dir;
    }

    /// <summary>Every held-out (a, b) pair of the task once.</summary>
    internal static List<TaskItem> HeldOutPairs(AdditionTask task) =>
        [.. from a in Enumerable.Range(task.Min, task.Max - task.Min + 1)
            from b in Enumerable.Range(task.Min, task.Max - task.Min + 1)
            where task.IsHeldOut(a, b)
            select AdditionTask.Item(a, b)];

    /// <summary>Full fine-tuning from random weights on the SFT form: held-out accuracy before and after.</summary>
    internal static (double Before, double After) FullFineTune(int seed = 1, int steps = 500)
    {
        var sw = Stopwatch.StartNew();
        string model = TinyModelDir(Hidden, Layers, Intermediate, InitRange, tied: false);
        try
        {
            var heldOut = HeldOutPairs(Task);
            string data = Path.Combine(model, "train.jsonl");
            AdditionTask.ToSftJsonl(Task.Train(6000, seed: 1), data, conversational: false);
            double before;
            using (var init = LanguageModel.CreateRandom(model, Cpu(), seed)) // the trainer's initial weights
                before = Accuracy(init, heldOut);
            string run = Path.Combine(model, "run");
            new SftTrainer(Recipe(model, data, run, seed, steps), Cpu()).Run();
            double after;
            using (var trained = LanguageModel.Load(run, Cpu()))
                after = Accuracy(trained, heldOut);
            Report($"full fine-tune {steps} steps: held-out exact match {before:P0} -> {after:P0} ({heldOut.Count} items, {sw.Elapsed.TotalSeconds:F1} s)");
            return (before, after);
        }
        finally { DeleteQuietly(model); }
    }

    /// <summary>Pretraining from random weights on statements of sums, then LoRA SFT on the question/answer
    /// form: held-out accuracy (question/answer form) of the base and of base + adapter.</summary>
    internal static (double Base, double After) PretrainThenLora(int seed = 1, int pretrainSteps = 300, int loraSteps = 200)
    {
        var sw = Stopwatch.StartNew();
        string model = TinyModelDir(Hidden, Layers, Intermediate, InitRange, tied: false);
        try
        {
            var heldOut = HeldOutPairs(Task);
            string text = Path.Combine(model, "pretrain.jsonl"), sft = Path.Combine(model, "sft.jsonl");
            AdditionTask.ToPretrainText(Task.Train(6000, seed: 3), text);
            AdditionTask.ToSftJsonl(Task.Train(6000, seed: 1), sft, conversational: false);

            string pretrained = Path.Combine(model, "pretrained");
            new SftTrainer(Recipe(model, text, pretrained, seed, pretrainSteps), Cpu()).Run();
            double baseAcc, baseStatements;
            using (var lm = LanguageModel.Load(pretrained, Cpu()))
                (baseAcc, baseStatements) = (Accuracy(lm, heldOut), StatementAccuracy(lm, heldOut));
            double pretrainS = sw.Elapsed.TotalSeconds;

            string adapter = Path.Combine(model, "adapter");
            var lora = new SftOptions
            {
                ModelDir = pretrained, DataPath = sft, OutDir = adapter, LoraRank = 16, LoraAlpha = 32,
                LearningRate = 3e-3f, Scheduler = ScheduleKind.Constant, WarmupSteps = 20,
                BatchSize = 64, MaxSteps = loraSteps, MaxLength = 32, Seed = seed,
            };
            new SftTrainer(lora, Cpu()).Run();
            double after;
            using (var adapted = LanguageModel.Load(pretrained, Cpu(), adapter))
                after = Accuracy(adapted, heldOut);
            Report($"pretrain {pretrainSteps} steps (held-out \"a+b=\" completed right {baseStatements:P0}) + LoRA {loraSteps} steps: " +
                $"held-out exact match {baseAcc:P0} -> {after:P0} ({heldOut.Count} items, {pretrainS:F1} s + {sw.Elapsed.TotalSeconds - pretrainS:F1} s)");
            return (baseAcc, after);
        }
        finally { DeleteQuietly(model); }
    }

    private static SftOptions Recipe(string model, string data, string outDir, int seed, int steps) => new()
    {
        ModelDir = model, DataPath = data, OutDir = outDir, Full = true, FromScratch = true,
        LearningRate = 3e-3f, Scheduler = ScheduleKind.Constant, WarmupSteps = 20, WeightDecay = 0.1f,
        BatchSize = 128, MaxSteps = steps, MaxLength = 32, Seed = seed,
    };

    private static double Accuracy(LanguageModel lm, IReadOnlyList<TaskItem> items) =>
        TaskEvaluator.Evaluate(lm, items, conversational: false).Summary.Accuracy;

    /// <summary>How often greedy decoding completes "a+b=" (the first statement form) with the sum.</summary>
    private static double StatementAccuracy(LanguageModel lm, IReadOnlyList<TaskItem> items)
    {
        var tok = lm.RequireTokenizer();
        var prompts = items.Select(i => (IReadOnlyList<int>)tok.Encode(AdditionTask.Statement(i).Split('=')[0] + "=")).ToList();
        var results = new Generator(lm.Decoder).Generate(prompts, new GenerationOptions { MaxNewTokens = 6, EosIds = lm.EosIds() });
        return items.Zip(results).Average(p =>
            tok.Decode(p.Second.GeneratedIds, skipSpecialTokens: true).Trim() == p.First.Answer.ToString(CultureInfo.InvariantCulture) ? 1.0 : 0);
    }

    private static void Report(string line)
    {
        TestContext.Current.SendDiagnosticMessage(line);
        Console.WriteLine(line);
    }

    private static void DeleteQuietly(string dir)
    {
        try { Directory.Delete(dir, true); }
        catch (IOException) { }
    }
}
