// `temper reward-model --model DIR --data PAIRS.jsonl --out DIR [--center-rewards-coefficient C] [sft flags]`:
// trains a scalar reward head (+ LoRA, or --full) Bradley-Terry on prompt/chosen/rejected pairs. The
// result (a PEFT SEQ_CLS adapter with the head, or a *ForSequenceClassification folder) is what
// `temper grpo --reward-model DIR` scores with.
using System.CommandLine;
using Temper.Training.Reward;

namespace Temper.Cli.Commands;

internal static class RewardModelCommand
{
    public static Command Create()
    {
        var flags = new TrainingFlags(1e-4f);
        var center = new Option<double>("--center-rewards-coefficient") { Description = "Weight of mean((r_chosen + r_rejected)^2), keeping rewards centred (TRL)", DefaultValueFactory = _ => 0 };
        var cmd = new Command("reward-model", "Train a reward model (scalar head, Bradley-Terry) on prompt/chosen/rejected data") { center };
        flags.AddTo(cmd);
        cmd.SetGuardedAction(p =>
        {
            var o = flags.Read(p);
            var trainer = new RewardTrainer(o, new RewardOptions(p.GetValue(center)), CliOptions.Backend(p, o.Threads));
            return TrainingFlags.RunWithProgress("reward-model", o.OutDir, (s, w) => { trainer.OnStep = s; trainer.OnWarning = w; }, trainer.Run);
        });
        return cmd;
    }
}
