// `temper sft` (LoRA by default, --full for all weights) and `temper pretrain` (continued
// pre-training on {"text": ...} lines: all weights by default, --lora for an adapter, --from-scratch
// for seeded random initial weights from config.json).
using System.CommandLine;
using Temper.Training.Trainers;

namespace Temper.Cli.Commands;

internal static class SftCommand
{
    public static Command Create(bool pretrain)
    {
        var flags = new TrainingFlags(pretrain ? 1e-3f : 2e-4f);
        var evalData = new Option<string?>("--eval-data") { Description = "Held-out JSONL scored for loss and perplexity" };
        var evalEvery = new Option<int>("--eval-every") { Description = "Evaluate every N steps (0 = at the end only)", DefaultValueFactory = _ => 0 };
        var lora = new Option<bool>("--lora") { Description = "Train a LoRA adapter instead of all weights" };
        var fromScratch = new Option<bool>("--from-scratch") { Description = "Initialise the weights randomly from config.json (seeded)" };
        var packing = new Option<bool>("--packing") { Description = "Pack examples into rows of --max-len tokens; each example still attends only to itself, with its own positions" };
        var assistantOnly = new Option<bool>("--assistant-only-loss")
        {
            Description = "\"messages\" lines: true (default) learns only what the assistant turns add; false learns every token (TRL's default assistant_only_loss=False)",
            DefaultValueFactory = _ => true,
        };
        var completionOnly = new Option<bool>("--completion-only-loss")
        {
            Description = "\"prompt\"/\"completion\" lines: true (default, as TRL's completion_only_loss) learns only the completion; false the prompt too",
            DefaultValueFactory = _ => true,
        };
        var cmd = new Command(pretrain ? "pretrain" : "sft", pretrain ? "Continued pre-training on text" : "Supervised fine-tuning (LoRA by default)") { evalData, evalEvery, packing };
        if (!pretrain) { cmd.Add(assistantOnly); cmd.Add(completionOnly); }
        flags.AddTo(cmd);
        if (pretrain) { cmd.Add(lora); cmd.Add(fromScratch); }
        cmd.SetGuardedAction(p =>
        {
            var o = flags.Read(p) with { EvalData = p.GetValue(evalData), EvalEvery = p.GetValue(evalEvery), Packing = p.GetValue(packing) };
            if (!pretrain) o = o with { AssistantOnlyLoss = p.GetValue(assistantOnly), CompletionOnlyLoss = p.GetValue(completionOnly) };
            if (pretrain) o = o with { Full = !p.GetValue(lora), FromScratch = p.GetValue(fromScratch) };
            var trainer = new SftTrainer(o, CliOptions.Backend(p, o.Threads));
            return TrainingFlags.RunWithProgress(cmd.Name, o.OutDir, (step, warn) => { trainer.OnStep = step; trainer.OnWarning = warn; }, trainer.Run);
        });
        return cmd;
    }
}
