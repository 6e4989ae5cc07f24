// The flags every training verb shares (model, data, LoRA, optimizer, schedule, batching, checkpoints)
// and the live progress display that runs a trainer: a Spectre progress bar with loss, tokens/s and
// ETA; Ctrl-C asks the trainer to stop, which saves a checkpoint (exit 130).
using System.CommandLine;
using Spectre.Console;
using Temper.Training.Data;
using Temper.Training.Optim;
using Temper.Training.Trainers;

namespace Temper.Cli;

internal sealed class TrainingFlags
{
    public readonly Option<string> Model = CliOptions.Model();
    public readonly Option<string> Data = new("--data") { Description = "JSONL training data", Required = true };
    public readonly Option<string> Out = new("--out") { Description = "Run folder: adapter or model, metrics.jsonl, manifest.json, checkpoints", Required = true };
    public readonly Option<string?> InitAdapter = new("--init-adapter") { Description = "Continue training this PEFT adapter (its r, alpha and targets apply)" };
    public readonly Option<bool> Full = new("--full") { Description = "Train all weights instead of a LoRA adapter" };
    public readonly Option<bool> QLora = CliOptions.QLora();
    public readonly Option<int> R = new("--lora-r") { Description = "LoRA rank", DefaultValueFactory = _ => 16 };
    public readonly Option<double> Alpha = new("--lora-alpha") { Description = "LoRA alpha", DefaultValueFactory = _ => 32 };
    public readonly Option<string> Targets = new("--lora-targets") { Description = "Comma-separated module names", DefaultValueFactory = _ => "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj" };
    public readonly Option<string?> ModulesToSave = new("--modules-to-save") { Description = "PEFT modules_to_save: embed_tokens and/or lm_head (comma-separated) trained in full beside the LoRA, e.g. after adding chat-template tokens' embeddings; a tied pair is untied as PEFT does" };
    public readonly Option<string> LoraInitFlag = new("--lora-init") { Description = "How a fresh LoRA starts (PEFT init_lora_weights): default (A kaiming-uniform, B = 0), gaussian (A ~ N(0, 1/r)) pissa (the weights' top-r SVD, the base keeping the residual; pissa_niter_N: from N subspace iterations, faster, as PEFT's) or olora (the QR of the weights' first r columns, likewise); pissa and olora on sft and pretrain, saved converted for the original base at rank 2r", DefaultValueFactory = _ => "default" };
    public readonly Option<bool> RsLora = new("--rslora") { Description = "Scale by alpha/sqrt(r) (rsLoRA)" };
    public readonly Option<bool> Dora = new("--use-dora") { Description = "Train a DoRA adapter (PEFT use_dora): a magnitude per output row beside the LoRA matrices" };
    public readonly Option<double> Neftune = new("--neftune-noise-alpha") { Description = "NEFTune: uniform noise of this alpha on the embeddings while training (sft, pretrain; transformers' neftune_noise_alpha)", DefaultValueFactory = _ => 0 };
    public readonly Option<int> PromptTuning = new("--prompt-tuning") { Description = "Prompt tuning (PEFT PROMPT_TUNING): train this many virtual tokens placed before every sequence instead of a LoRA adapter", DefaultValueFactory = _ => 0 };
    public readonly Option<string?> PromptInit = new("--prompt-tuning-init") { Description = "random (N(0,1)), text (the embeddings of --prompt-tuning-init-text's tokens; the default when a text is given) or random-discrete (embeddings of random vocabulary tokens)" };
    public readonly Option<string?> PromptInitText = new("--prompt-tuning-init-text") { Description = "The text whose token embeddings start the virtual tokens (cut or repeated to their number)" };
    public readonly Option<int> PrefixTuning = new("--prefix-tuning") { Description = "Prefix tuning (PEFT PREFIX_TUNING): train this many key/value rows per layer that every token attends to, instead of a LoRA adapter", DefaultValueFactory = _ => 0 };
    public readonly Option<bool> Ia3 = new("--ia3") { Description = "(IA)^3 (PEFT IA3): train one scaling vector per targeted projection (ones at the start) instead of a LoRA adapter" };
    public readonly Option<string> Ia3Targets = new("--ia3-targets") { Description = "IA3 target modules (comma-separated; PEFT's llama/qwen2/mistral default)", DefaultValueFactory = _ => string.Join(",", Models.Ia3Config.DefaultTargets) };
    public readonly Option<string> Ia3Feedforward = new("--ia3-feedforward") { Description = "IA3 feedforward modules, a subset of --ia3-targets: their input is scaled, the others' output", DefaultValueFactory = _ => string.Join(",", Models.Ia3Config.DefaultFeedforward) };
    public readonly Option<double> Dropout = new("--lora-dropout") { Description = "PEFT lora_dropout on the LoRA branch's input while training (sft, pretrain)", DefaultValueFactory = _ => 0 };
    public readonly Option<float> Lr;
    public readonly Option<string> Scheduler = new("--lr-scheduler") { Description = "constant, linear or cosine", DefaultValueFactory = _ => "linear" };
    public readonly Option<int> Warmup = new("--warmup-steps") { Description = "Linear warmup steps", DefaultValueFactory = _ => 0 };
    public readonly Option<float> WeightDecay = new("--weight-decay") { Description = "AdamW decoupled weight decay", DefaultValueFactory = _ => 0f };
    public readonly Option<float> LoraPlus = new("--loraplus-lr-ratio") { Description = "LoRA+: lora_B (and DoRA's magnitudes) learn at --lr times this (PEFT's create_loraplus_optimizer; 16 is the paper's suggestion); 1 = off", DefaultValueFactory = _ => 1f };
    public readonly Option<float> Clip = new("--max-grad-norm") { Description = "Global gradient norm clip (0 = off)", DefaultValueFactory = _ => 1f };
    public readonly Option<string> Truncation = new("--truncation") { Description = "right, left, drop or error", DefaultValueFactory = _ => "right" };
    public readonly Option<int> Batch = new("--batch-size") { Description = "Examples per micro-batch", DefaultValueFactory = _ => 8 };
    public readonly Option<int> Accum = new("--grad-accum") { Description = "Micro-batches per optimizer step", DefaultValueFactory = _ => 1 };
    public readonly Option<int?> MaxSteps = new("--max-steps") { Description = "Optimizer steps (overrides --epochs)" };
    public readonly Option<int> Epochs = new("--epochs") { Description = "Passes over the data", DefaultValueFactory = _ => 1 };
    public readonly Option<int> MaxLen = new("--max-len") { Description = "Maximum tokens per example", DefaultValueFactory = _ => 1024 };
    public readonly Option<int> Seed = new("--seed") { Description = "Seed for shuffling and initialisation", DefaultValueFactory = _ => 42 };
    public readonly Option<int> SaveEvery = new("--save-every") { Description = "Checkpoint every N steps (0 = only on Ctrl-C)", DefaultValueFactory = _ => 0 };
    public readonly Option<bool> Resume = new("--resume") { Description = "Continue from the latest checkpoint in --out" };
    public readonly Option<bool> SkipBad = new("--skip-bad-lines") { Description = "Skip malformed data lines (counted) instead of failing" };
    public readonly Option<int> Threads = CliOptions.Threads();
    public readonly Option<bool> Checkpointing = new("--gradient-checkpointing") { Description = "Recompute each layer's activations in backward (less memory, about a third more compute)" };

    public TrainingFlags(float defaultLr) => Lr = new Option<float>("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => defaultLr };

    public void AddTo(Command c)
    {
        foreach (Option o in new Option[] { Model, Data, Out, InitAdapter, Full, QLora, R, Alpha, Targets, ModulesToSave, LoraInitFlag, RsLora, Dora, Dropout, Neftune, PromptTuning, PromptInit, PromptInitText, PrefixTuning, Ia3, Ia3Targets, Ia3Feedforward, Lr, Scheduler, Warmup, WeightDecay, LoraPlus, Clip, Truncation, Batch, Accum, MaxSteps, Epochs, MaxLen, Seed, SaveEvery, Resume, SkipBad, Threads, Checkpointing })
            c.Add(o);
    }

    public SftOptions Read(ParseResult p)
    {
        // Prompt and prefix tuning train no LoRA: LoRA shape flags given with them would be ignored, so they are refused.
        if (p.GetValue(PromptTuning) > 0 || p.GetValue(PrefixTuning) > 0)
            foreach (var o in new Option[] { R, Alpha, Targets, ModulesToSave })
                if (p.GetResult(o) is { Implicit: false })
                    throw new Core.TemperException($"{(p.GetValue(PromptTuning) > 0 ? "prompt" : "prefix")} tuning trains only its virtual tokens; {o.Name} cannot be combined with it");
        // (IA)^3 trains no LoRA either: LoRA flags given with it would be ignored, so they are refused; its own flags need it.
        bool Given(Option o) => p.GetResult(o) is { Implicit: false };
        if (p.GetValue(Ia3))
        {
            foreach (var o in new Option[] { R, Alpha, Targets, ModulesToSave, LoraInitFlag, RsLora, Dora, Dropout, LoraPlus, Full, PromptTuning, PrefixTuning })
                if (Given(o)) throw new Core.TemperException($"--ia3 trains one scaling vector per targeted projection; {o.Name} cannot be combined with it");
            if (p.GetValue(InitAdapter) != null && (Given(Ia3Targets) || Given(Ia3Feedforward)))
                throw new Core.TemperException("--ia3-targets and --ia3-feedforward shape a fresh IA3 adapter; --init-adapter continues one as it is");
        }
        else if (Given(Ia3Targets) || Given(Ia3Feedforward)) throw new Core.TemperException($"{(Given(Ia3Targets) ? "--ia3-targets" : "--ia3-feedforward")} needs --ia3");
        return ReadOptions(p);
    }

    private SftOptions ReadOptions(ParseResult p) => new()
    {
        ModelDir = p.GetValue(Model)!,
        DataPath = p.GetValue(Data)!,
        OutDir = p.GetValue(Out)!,
        InitAdapter = p.GetValue(InitAdapter),
        Full = p.GetValue(Full),
        QLora = p.GetValue(QLora),
        LoraRank = p.GetValue(R),
        LoraAlpha = p.GetValue(Alpha),
        LoraTargets = p.GetValue(Targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
        ModulesToSave = p.GetValue(ModulesToSave)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? [],
        UseRsLora = p.GetValue(RsLora),
        LoraInit = Training.Lora.LoraInitMethods.Parse(p.GetValue(LoraInitFlag)!),
        UseDora = p.GetValue(Dora),
        LoraDropout = p.GetValue(Dropout),
        NeftuneNoiseAlpha = p.GetValue(Neftune),
        PromptTuningTokens = p.GetValue(PromptTuning),
        PromptTuningInit = p.GetValue(PromptInit) is { } init ? Models.PromptTuningConfig.ParseInit(init)
            : p.GetValue(PromptInitText) != null ? Models.PromptTuningConfig.Text : Models.PromptTuningConfig.Random,
        PromptTuningInitText = p.GetValue(PromptInitText),
        PrefixTuningTokens = p.GetValue(PrefixTuning),
        Ia3 = p.GetValue(Ia3),
        Ia3Targets = p.GetValue(Ia3Targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
        Ia3Feedforward = p.GetValue(Ia3Feedforward)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
        LearningRate = p.GetValue(Lr),
        Scheduler = LrSchedule.Parse(p.GetValue(Scheduler)!),
        WarmupSteps = p.GetValue(Warmup),
        WeightDecay = p.GetValue(WeightDecay),
        LoraPlusRatio = p.GetValue(LoraPlus),
        MaxGradNorm = p.GetValue(Clip),
        Truncation = SftDataOptions.ParseTruncation(p.GetValue(Truncation)!),
        BatchSize = p.GetValue(Batch),
        GradAccum = p.GetValue(Accum),
        MaxSteps = p.GetValue(MaxSteps),
        Epochs = p.GetValue(Epochs),
        MaxLength = p.GetValue(MaxLen),
        Seed = p.GetValue(Seed),
        SaveEvery = p.GetValue(SaveEvery),
        Resume = p.GetValue(Resume),
        SkipBadLines = p.GetValue(SkipBad),
        Threads = p.GetValue(Threads),
        GradientCheckpointing = p.GetValue(Checkpointing),
    };

    /// <summary>Runs a trainer under a live progress bar; returns the exit code (130 when interrupted).</summary>
    public static int RunWithProgress(string verb, string outDir, Action<Action<StepReport>, Action<string>> wire, Func<CancellationToken, SftResult> run)
    {
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
        Console.CancelKeyPress += onCancel;
        SftResult? result = null;
        try
        {
            AnsiConsole.Progress()
                .AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask(verb, maxValue: 1);
                    wire(s =>
                    {
                        task.MaxValue = s.TotalSteps;
                        task.Value = s.Step;
                        task.Description = $"{verb} step {s.Step}/{s.TotalSteps} loss {s.Loss:F4} {s.TokensPerSecond:F0} tok/s";
                    }, w => AnsiConsole.MarkupLine($"[yellow]warning:[/] {Markup.Escape(w)}"));
                    result = run(cancel.Token);
                });
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
        if (result!.Interrupted)
        {
            AnsiConsole.MarkupLine($"[yellow]interrupted at step {result.Steps}: checkpoint saved in {Markup.Escape(outDir)}; continue with --resume[/]");
            return 130;
        }
        AnsiConsole.MarkupLine($"done: {result.Steps} steps, final loss {result.Reports.LastOrDefault()?.Loss:F4}; wrote {Markup.Escape(outDir)}");
        if (result.Memory != null) AnsiConsole.WriteLine(result.Memory.ToString());
        return 0;
    }
}
