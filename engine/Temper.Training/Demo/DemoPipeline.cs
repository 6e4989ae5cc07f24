// The post-training demo: a tiny base model (pretrained by Temper on statements of sums, so it knows
// sums but not the "What is 23+58?" / "Answer: 81" format; demo/base/README.md) goes through
//   base -> sft (LoRA on prompt/completion) -> dpo (required format and right sum preferred over the
//   base's habits and near misses; reference = the SFT adapter) -> grpo (verifiable "addition" reward,
//   from the DPO adapter) -> merge (optional)
// Each stage is a real run of the library's trainer writing a PEFT adapter to OUT/<stage>/, then is
// evaluated on the held-out split (greedy accuracy, format and mean length; mean reward of answers
// sampled at the evaluation temperature, which is what GRPO optimizes) and answers the same few prompts. Stages run in the order given; a trained stage continues from the latest adapter.
// OUT/data/ holds the data files, OUT/summary.json the results; commands to rerun each stage with the
// standalone verbs come from the very options the stage ran with.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Preference;
using Temper.Training.Rl;
using Temper.Training.Runs;
using Temper.Training.Tasks;
using Temper.Training.Trainers;

namespace Temper.Training.Demo;

/// <param name="Stage">base, sft, dpo, grpo or merge.</param>
/// <param name="Eval">Greedy evaluation on the held-out split.</param>
/// <param name="SampledReward">Mean reward of completions sampled at the settings' evaluation temperature.</param>
/// <param name="Seconds">Wall time of the stage: training (if any) and evaluation.</param>
/// <param name="OutDir">The stage's folder (adapter or merged model, metrics.jsonl); null for base.</param>
/// <param name="Command">The standalone `temper` command that reruns the stage's training; null for base.</param>
public sealed record DemoStageResult(string Stage, TaskEvaluation Eval, double SampledReward, double Seconds, int Steps, string? OutDir, string? Command, IReadOnlyList<string> Answers);

public sealed class DemoPipeline(DemoSettings settings, string baseDir, string outDir, int seed, IBackend backend, int threads = 0)
{
    public static readonly IReadOnlyList<string> AllStages = ["base", "sft", "dpo", "grpo", "merge"];
    public static readonly IReadOnlyList<string> DefaultStages = ["base", "sft", "dpo", "grpo"];

    public Action<string, int>? OnStageStart { get; set; }
    public Action<string, StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    public string DataDir => Path.Combine(outDir, "data");
    public IReadOnlyList<TaskItem> Showcase { get; private set; } = [];

    public IReadOnlyList<DemoStageResult> Run(IReadOnlyList<string> stages, CancellationToken cancel = default)
    {
        foreach (var s in stages)
            if (!AllStages.Contains(s)) throw new TemperException($"--stages: unknown stage '{s}' (known: {string.Join(", ", AllStages)})");
        if (!File.Exists(Path.Combine(baseDir, "config.json"))) throw new TemperException($"{baseDir}: no base model (config.json) there");
        Directory.CreateDirectory(DataDir);
        var task = DemoSettings.Task;
        var train = task.Train(settings.TrainItems, (ulong)seed);
        var heldOut = task.HeldOut(settings.HeldOutItems, (ulong)seed + 1);
        Showcase = heldOut.Take(settings.ShowcasePrompts).ToList();
        DemoData.WriteSft(train, Path.Combine(DataDir, "sft.jsonl"));
        DemoData.WriteDpo(train, Path.Combine(DataDir, "dpo.jsonl"));
        DemoData.WriteGrpo(train, Path.Combine(DataDir, "grpo.jsonl"));

        var results = new List<DemoStageResult>();
        string? adapter = null;
        foreach (var stage in stages)
        {
            cancel.ThrowIfCancellationRequested();
            var clock = Stopwatch.StartNew();
            string dir = Path.Combine(outDir, stage);
            int total = stage switch { "sft" => settings.Sft.Steps, "dpo" => settings.Dpo.Steps, "grpo" => settings.Grpo.Steps, _ => 0 };
            OnStageStart?.Invoke(stage, total);
            string? command = null;
            SftResult? run = null;
            string modelDir = baseDir;
            string? evalAdapter = adapter;
            switch (stage)
            {
                case "base":
                    evalAdapter = null;
                    break;
                case "sft":
                {
                    var o = Options(settings.Sft, "sft.jsonl", dir) with { InitAdapter = null };
                    command = Command("sft", o);
                    run = Wire(new SftTrainer(o, backend), stage, (t, s, w) => { t.OnStep = s; t.OnWarning = w; }).Run(cancel);
                    break;
                }
                case "dpo":
                {
                    var o = Options(settings.Dpo, "dpo.jsonl", dir);
                    var p = new PreferenceOptions { Beta = settings.DpoBeta, RefAdapter = adapter };
                    command = Command("dpo", o, p.RefAdapter == null ? "" : $" --ref-adapter {Q(p.RefAdapter)}", $" --beta {F(p.Beta)}");
                    run = Wire(new DpoTrainer(o, p, backend), stage, (t, s, w) => { t.OnStep = s; t.OnWarning = w; }).Run(cancel);
                    break;
                }
                case "grpo":
                {
                    var o = Options(settings.Grpo, "grpo.jsonl", dir) with { InitAdapter = adapter };
                    var g = new GrpoOptions
                    {
                        NumGenerations = settings.GrpoGenerations, MaxCompletionLength = settings.GrpoMaxCompletionLength,
                        Temperature = settings.GrpoTemperature, Rewards = ["addition"],
                    };
                    command = Command("grpo", o, o.InitAdapter == null ? "" : $" --init-adapter {Q(o.InitAdapter)}",
                        $" --reward addition --num-generations {g.NumGenerations} --max-completion-length {g.MaxCompletionLength} --temperature {F(g.Temperature)}");
                    run = Wire(new GrpoTrainer(o, g, backend), stage, (t, s, w) => { t.OnStep = s; t.OnWarning = w; }).Run(cancel);
                    break;
                }
                case "merge":
                {
                    if (adapter == null) throw new TemperException("--stages: merge needs a trained stage before it");
                    using (var merged = LanguageModel.Load(baseDir, backend, adapter, mergeAdapter: true))
                        ModelExport.Save(dir, merged, backend);
                    command = $"temper merge --model {Q(baseDir)} --adapter {Q(adapter)} --out {Q(dir)}";
                    modelDir = dir;
                    evalAdapter = null;
                    break;
                }
            }
            if (run != null)
            {
                if (run.Interrupted) throw new OperationCanceledException();
                adapter = dir;
                evalAdapter = dir;
            }
            var (eval, sampled, answers) = Evaluate(modelDir, evalAdapter, heldOut);
            results.Add(new DemoStageResult(stage, eval, sampled, clock.Elapsed.TotalSeconds, run?.Steps ?? 0, stage == "base" ? null : dir, command, answers));
            WriteSummary(results);
        }
        return results;
    }

    private T Wire<T>(T trainer, string stage, Action<T, Action<StepReport>, Action<string>> wire)
    {
        wire(trainer, r => OnStep?.Invoke(stage, r), w => OnWarning?.Invoke($"{stage}: {w}"));
        return trainer;
    }

    private SftOptions Options(DemoStageSettings s, string data, string dir) => new()
    {
        ModelDir = baseDir, DataPath = Path.Combine(DataDir, data), OutDir = dir, LoraRank = settings.LoraRank, LoraAlpha = settings.LoraAlpha,
        LearningRate = s.LearningRate, Scheduler = Optim.ScheduleKind.Cosine, WarmupSteps = s.WarmupSteps, BatchSize = s.BatchSize,
        MaxSteps = s.Steps, MaxLength = settings.MaxLength, Seed = seed, Threads = threads,
    };

    // The standalone verb with the flags that reproduce the options (those the CLI defaults differently).
    private static string Command(string verb, SftOptions o, params string[] extra) =>
        $"temper {verb} --model {Q(o.ModelDir)} --data {Q(o.DataPath)} --out {Q(o.OutDir)}" + string.Concat(extra)
        + $" --lora-r {o.LoraRank} --lora-alpha {F(o.LoraAlpha)}"
        + $" --lr {F(o.LearningRate)} --lr-scheduler cosine --warmup-steps {o.WarmupSteps} --batch-size {o.BatchSize}"
        + $" --max-steps {o.MaxSteps} --max-len {o.MaxLength} --seed {o.Seed}" + (o.Threads > 0 ? $" --threads {o.Threads}" : "");

    private static string F(double v) => v.ToString("R", CultureInfo.InvariantCulture);
    private static string F(float v) => v.ToString(CultureInfo.InvariantCulture);
    private static string Q(string path) => path.Contains(' ') ? $"\"{path}\"" : path;

    private (TaskEvaluation, double, IReadOnlyList<string>) Evaluate(string modelDir, string? adapterDir, IReadOnlyList<TaskItem> heldOut)
    {
        using var lm = LanguageModel.Load(modelDir, backend, adapterDir);
        var (summary, completions) = TaskEvaluator.Evaluate(lm, heldOut, conversational: false);
        double sampled = TaskEvaluator.SampledReward(lm, heldOut, conversational: false, settings.EvalSamples, settings.EvalTemperature, (ulong)seed + 17);
        // The showcase prompts are the first held-out items, so their answers are already there.
        return (summary, sampled, completions.Take(Showcase.Count).ToList());
    }

    private void WriteSummary(IReadOnlyList<DemoStageResult> results)
    {
        var root = new JsonObject
        {
            ["seed"] = seed,
            ["base"] = Path.GetFullPath(baseDir),
            ["held_out"] = settings.HeldOutItems,
            ["reward_samples"] = settings.EvalSamples,
            ["reward_temperature"] = settings.EvalTemperature,
            ["prompts"] = new JsonArray(Showcase.Select(i => (JsonNode)i.Prompt).ToArray()),
            ["stages"] = new JsonArray(results.Select(r => (JsonNode)new JsonObject
            {
                ["stage"] = r.Stage,
                ["accuracy"] = r.Eval.Accuracy,
                ["format"] = r.Eval.FormatRate,
                ["reward"] = r.SampledReward,
                ["greedy_reward"] = r.Eval.MeanReward,
                ["mean_length"] = r.Eval.MeanLength,
                ["seconds"] = Math.Round(r.Seconds, 2),
                ["steps"] = r.Steps,
                ["dir"] = r.OutDir,
                ["command"] = r.Command,
                ["answers"] = new JsonArray(r.Answers.Select(a => (JsonNode)a).ToArray()),
            }).ToArray()),
        };
        AtomicFile.WriteAllText(Path.Combine(outDir, "summary.json"), root.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
    }
}
