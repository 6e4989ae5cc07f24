// `temper sft` (LoRA by default, --full for all weights) and `temper pretrain` (continued
// pre-training on {"text": ...} lines: all weights by default, --from-scratch for random init).
// Shows a live progress bar with loss, tokens/s and ETA; Ctrl-C saves a checkpoint (exit 130) and
// --resume continues from it.
using System.CommandLine;
using Spectre.Console;
using Temper.Training.Data;
using Temper.Training.Optim;
using Temper.Training.Trainers;

namespace Temper.Cli.Commands;

internal static class SftCommand
{
    public static Command Create(bool pretrain)
    {
        var model = CliOptions.Model();
        var data = new Option<string>("--data") { Description = "JSONL training data (messages, prompt/completion or text)", Required = true };
        var output = new Option<string>("--out") { Description = "Run folder: adapter or model, metrics.jsonl, manifest.json, checkpoints", Required = true };
        var initAdapter = new Option<string?>("--init-adapter") { Description = "Continue training this PEFT adapter (its r, alpha and targets apply)" };
        var full = new Option<bool>("--full") { Description = "Train all weights instead of a LoRA adapter" };
        var lora = new Option<bool>("--lora") { Description = "Train a LoRA adapter (pretrain trains all weights by default)" };
        var fromScratch = new Option<bool>("--from-scratch") { Description = "Initialise the weights randomly from config.json (seeded)" };
        var r = new Option<int>("--lora-r") { Description = "LoRA rank", DefaultValueFactory = _ => 16 };
        var alpha = new Option<double>("--lora-alpha") { Description = "LoRA alpha", DefaultValueFactory = _ => 32 };
        var targets = new Option<string>("--lora-targets") { Description = "Comma-separated module names", DefaultValueFactory = _ => "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" };
        var rslora = new Option<bool>("--rslora") { Description = "Scale by alpha/sqrt(r) (rsLoRA)" };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => pretrain ? 1e-3f : 2e-4f };
        var scheduler = new Option<string>("--lr-scheduler") { Description = "constant, linear or cosine", DefaultValueFactory = _ => "linear" };
        var warmup = new Option<int>("--warmup-steps") { Description = "Linear warmup steps", DefaultValueFactory = _ => 0 };
        var wd = new Option<float>("--weight-decay") { Description = "AdamW decoupled weight decay", DefaultValueFactory = _ => 0f };
        var clip = new Option<float>("--max-grad-norm") { Description = "Global gradient norm clip (0 = off)", DefaultValueFactory = _ => 1f };
        var truncation = new Option<string>("--truncation") { Description = "right, left, drop or error", DefaultValueFactory = _ => "right" };
        var batch = new Option<int>("--batch-size") { Description = "Examples per micro-batch", DefaultValueFactory = _ => 8 };
        var accum = new Option<int>("--grad-accum") { Description = "Micro-batches per optimizer step", DefaultValueFactory = _ => 1 };
        var maxSteps = new Option<int?>("--max-steps") { Description = "Optimizer steps (overrides --epochs)" };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the data", DefaultValueFactory = _ => 1 };
        var maxLen = new Option<int>("--max-len") { Description = "Maximum tokens per example", DefaultValueFactory = _ => 1024 };
        var seed = new Option<int>("--seed") { Description = "Seed for shuffling and initialisation", DefaultValueFactory = _ => 42 };
        var evalData = new Option<string?>("--eval-data") { Description = "Held-out JSONL scored for loss and perplexity" };
        var evalEvery = new Option<int>("--eval-every") { Description = "Evaluate every N steps (0 = only at the end when --eval-data is given)", DefaultValueFactory = _ => 0 };
        var saveEvery = new Option<int>("--save-every") { Description = "Checkpoint every N steps (0 = only on Ctrl-C)", DefaultValueFactory = _ => 0 };
        var resume = new Option<bool>("--resume") { Description = "Continue from the latest checkpoint in --out" };
        var skipBad = new Option<bool>("--skip-bad-lines") { Description = "Skip malformed data lines (counted) instead of failing" };
        var threads = CliOptions.Threads();
        var cmd = new Command(pretrain ? "pretrain" : "sft", pretrain ? "Continued pre-training on text" : "Supervised fine-tuning (LoRA by default)")
        {
            model, data, output, initAdapter, full, r, alpha, targets, rslora, lr, scheduler, warmup, wd, clip, truncation,
            batch, accum, maxSteps, epochs, maxLen, seed, evalData, evalEvery, saveEvery, resume, skipBad, threads,
        };
        if (pretrain) { cmd.Add(lora); cmd.Add(fromScratch); }
        cmd.SetGuardedAction(p =>
        {
            var o = new SftOptions
            {
                ModelDir = p.GetValue(model)!,
                DataPath = p.GetValue(data)!,
                OutDir = p.GetValue(output)!,
                InitAdapter = p.GetValue(initAdapter),
                Full = pretrain ? !p.GetValue(lora) : p.GetValue(full),
                FromScratch = pretrain && p.GetValue(fromScratch),
                LoraRank = p.GetValue(r),
                LoraAlpha = p.GetValue(alpha),
                LoraTargets = p.GetValue(targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                UseRsLora = p.GetValue(rslora),
                LearningRate = p.GetValue(lr),
                Scheduler = LrSchedule.Parse(p.GetValue(scheduler)!),
                WarmupSteps = p.GetValue(warmup),
                WeightDecay = p.GetValue(wd),
                MaxGradNorm = p.GetValue(clip),
                Truncation = SftDataOptions.ParseTruncation(p.GetValue(truncation)!),
                BatchSize = p.GetValue(batch),
                GradAccum = p.GetValue(accum),
                MaxSteps = p.GetValue(maxSteps),
                Epochs = p.GetValue(epochs),
                MaxLength = p.GetValue(maxLen),
                Seed = p.GetValue(seed),
                EvalData = p.GetValue(evalData),
                EvalEvery = p.GetValue(evalEvery),
                SaveEvery = p.GetValue(saveEvery),
                Resume = p.GetValue(resume),
                SkipBadLines = p.GetValue(skipBad),
                Threads = p.GetValue(threads),
            };
            var trainer = new SftTrainer(o, CliOptions.Backend(o.Threads));
            trainer.OnWarning = w => AnsiConsole.MarkupLine($"[yellow]warning:[/] {Markup.Escape(w)}");
            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
            Console.CancelKeyPress += onCancel;
            SftResult? result = null;
            AnsiConsole.Progress()
                .AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask(cmd.Name, maxValue: 1);
                    trainer.OnStep = s =>
                    {
                        task.MaxValue = s.TotalSteps;
                        task.Value = s.Step;
                        task.Description = $"{cmd.Name} step {s.Step}/{s.TotalSteps} loss {s.Loss:F4} {s.TokensPerSecond:F0} tok/s";
                    };
                    result = trainer.Run(cancel.Token);
                });
            Console.CancelKeyPress -= onCancel;
            if (result!.Interrupted)
            {
                AnsiConsole.MarkupLine($"[yellow]interrupted at step {result.Steps}: checkpoint saved in {Markup.Escape(o.OutDir)}; continue with --resume[/]");
                return 130;
            }
            AnsiConsole.MarkupLine($"done: {result.Steps} steps, final loss {result.Reports.LastOrDefault()?.Loss:F4}; wrote {Markup.Escape(o.OutDir)}");
            return 0;
        });
        return cmd;
    }
}
