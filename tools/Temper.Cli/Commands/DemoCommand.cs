// `temper demo [--stages base,sft,dpo,grpo[,merge]] [--steps N] [--seed S] [--out DIR] [--quick]
//  [--base DIR] [--threads N] [--settings FILE]`: the post-training explorer on the built-in tiny base model (demo/base,
// copied beside the binary). Each stage trains under a live progress bar, is evaluated on held-out sums,
// and the run ends with a table, OUT/summary.json and OUT/report.html.
using System.CommandLine;
using Spectre.Console;
using Temper.Training.Demo;

namespace Temper.Cli.Commands;

internal static class DemoCommand
{
    public static string DefaultBase => Path.Combine(AppContext.BaseDirectory, "demo", "base");

    public static Command Create()
    {
        var stages = new Option<string>("--stages") { Description = $"Comma-separated stages in order (known: {string.Join(",", DemoPipeline.AllStages)})", DefaultValueFactory = _ => string.Join(",", DemoPipeline.DefaultStages) };
        var steps = new Option<int?>("--steps") { Description = "Optimizer steps of every trained stage (default: the recipe's, per stage)" };
        var seed = new Option<int>("--seed") { Description = "Seed for the data and every stage", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "Output folder: data/, one folder per stage, summary.json, report.html", DefaultValueFactory = _ => "demo-out" };
        var quick = new Option<bool>("--quick") { Description = "The sub-minute version (fewer steps and examples)" };
        var baseDir = new Option<string>("--base") { Description = "Base model folder", DefaultValueFactory = _ => DefaultBase };
        var settingsFile = new Option<string?>("--settings") { Description = "JSON file overriding the recipe (DemoSettings' properties, e.g. {\"Sft\": {\"Steps\": 80, ...}})" };
        var threads = CliOptions.Threads();
        var cmd = new Command("demo", "Post-train the built-in tiny base model stage by stage (SFT, DPO, GRPO) and report") { stages, steps, seed, output, quick, baseDir, settingsFile, threads };
        cmd.SetGuardedAction(p =>
        {
            var settings = p.GetValue(quick) ? DemoSettings.Quick : DemoSettings.Default;
            if (p.GetValue(settingsFile) is string file) settings = DemoSettings.Override(settings, file);
            if (p.GetValue(steps) is int n)
            {
                if (n < 1) throw new Core.TemperException("--steps must be >= 1");
                settings = settings.WithSteps(n);
            }
            var list = p.GetValue(stages)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            string outDir = p.GetValue(output)!;
            int t = p.GetValue(threads);
            var pipeline = new DemoPipeline(settings, p.GetValue(baseDir)!, outDir, p.GetValue(seed), CliOptions.Backend(p, t), t);
            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
            Console.CancelKeyPress += onCancel;
            IReadOnlyList<DemoStageResult> results;
            try
            {
                results = RunWithProgress(pipeline, list, cancel.Token);
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
            string report = DemoReport.Write(outDir, results, pipeline.Showcase);
            var table = new Table().AddColumns("stage", "accuracy", "format", "reward (sampled)", "length", "seconds");
            foreach (var r in results)
                table.AddRow(r.Stage, $"{r.Eval.Accuracy:P1}", $"{r.Eval.FormatRate:P1}", $"{r.SampledReward:F3}", $"{r.Eval.MeanLength:F1}", $"{r.Seconds:F1}");
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLine($"wrote {Markup.Escape(Path.Combine(outDir, "summary.json"))} and {Markup.Escape(report)}");
            return 0;
        });
        return cmd;
    }

    private static IReadOnlyList<DemoStageResult> RunWithProgress(DemoPipeline pipeline, IReadOnlyList<string> stages, CancellationToken cancel)
    {
        IReadOnlyList<DemoStageResult> results = [];
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var tasks = stages.ToDictionary(s => s, s => ctx.AddTask(s, autoStart: false, maxValue: 1));
                ProgressTask? current = null;
                pipeline.OnStageStart = (stage, total) =>
                {
                    if (current != null) { current.Value = current.MaxValue; current.StopTask(); }
                    current = tasks[stage];
                    current.MaxValue = Math.Max(1, total + 1); // the last unit is the evaluation
                    current.Description = total > 0 ? $"{stage} training" : $"{stage} evaluating";
                    current.StartTask();
                };
                pipeline.OnStep = (stage, s) =>
                {
                    var task = tasks[stage];
                    task.Value = s.Step;
                    task.Description = $"{stage} step {s.Step}/{s.TotalSteps} loss {s.Loss:F4}" + (s.Step == s.TotalSteps ? " (evaluating)" : "");
                };
                pipeline.OnWarning = w => AnsiConsole.MarkupLine($"[yellow]warning:[/] {Markup.Escape(w)}");
                results = pipeline.Run(stages, cancel);
                if (current != null) { current.Value = current.MaxValue; current.StopTask(); }
            });
        return results;
    }
}
