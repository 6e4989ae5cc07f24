// `temper grpo --model DIR --data PROMPTS.jsonl --out DIR [--reward NAME ...] [--num-generations G]
//  [--num-iterations N] [--beta B] [--epsilon E] [--max-completion-length L] [--temperature T]
//  [--reward-model DIR] [--loss-type grpo|bnpo|dr_grpo|dapo] [--epsilon-high E] [--delta D]
//  [--importance-sampling-level token|sequence] [--scale-rewards group|batch|none] [--mask-truncated-completions]`:
// GRPO (and with those flags Dr. GRPO, DAPO, GSPO as TRL configures them) with the built-in verifiable rewards
// and/or a trained reward model; --batch-size counts prompts per step.
using System.CommandLine;
using Temper.Training.Rl;

namespace Temper.Cli.Commands;

internal static class GrpoCommand
{
    public static Command Create()
    {
        var flags = new TrainingFlags(1e-5f);
        var reward = new Option<string[]>("--reward") { Description = "Reward function (repeatable): addition, format, brevity (default addition, none with --reward-model)" };
        var rewardModel = new Option<string?>("--reward-model") { Description = "Trained reward model folder (temper reward-model); its sigmoid score is a reward" };
        var gens = new Option<int>("--num-generations") { Description = "Completions sampled per prompt", DefaultValueFactory = _ => 8 };
        var iters = new Option<int>("--num-iterations") { Description = "Optimizer steps per generated batch", DefaultValueFactory = _ => 1 };
        var beta = new Option<double>("--beta") { Description = "KL weight to the reference (k3); 0 skips the reference", DefaultValueFactory = _ => 0 };
        var eps = new Option<double>("--epsilon") { Description = "Ratio clip range", DefaultValueFactory = _ => 0.2 };
        var maxLen = new Option<int>("--max-completion-length") { Description = "Tokens per completion at most", DefaultValueFactory = _ => 32 };
        var temp = new Option<float>("--temperature") { Description = "Sampling temperature", DefaultValueFactory = _ => 1f };
        var topP = new Option<float>("--top-p") { Description = "Sampling nucleus mass", DefaultValueFactory = _ => 1f };
        var lossType = new Option<string>("--loss-type") { Description = "TRL's loss_type: grpo (per-completion mean), bnpo, dr_grpo (/ completions x max length) or dapo (per-token mean, TRL's default)", DefaultValueFactory = _ => "dapo" };
        var epsHigh = new Option<double?>("--epsilon-high") { Description = "Upper clip range (DAPO's clip-higher; default: --epsilon)" };
        var delta = new Option<double?>("--delta") { Description = "Two-sided clipping: cap on the unclipped ratio (> 1 + epsilon-high; default: none)" };
        var level = new Option<string>("--importance-sampling-level") { Description = "token (GRPO) or sequence (GSPO: one ratio per completion, the mean log-ratio)", DefaultValueFactory = _ => "token" };
        var scale = new Option<string>("--scale-rewards") { Description = "Divide advantages by the std of each group, of the whole batch, or none (Dr. GRPO)", DefaultValueFactory = _ => "group" };
        var maskTruncated = new Option<bool>("--mask-truncated-completions") { Description = "Leave completions cut off at --max-completion-length out of the loss" };
        var cmd = new Command("grpo", "Group Relative Policy Optimization with verifiable rewards")
        {
            reward, rewardModel, gens, iters, beta, eps, maxLen, temp, topP, lossType, epsHigh, delta, level, scale, maskTruncated,
        };
        flags.AddTo(cmd);
        cmd.SetGuardedAction(p =>
        {
            var o = flags.Read(p);
            var g = new GrpoOptions
            {
                Rewards = p.GetValue(reward) is { Length: > 0 } named ? named : p.GetValue(rewardModel) != null ? [] : ["addition"],
                RewardModel = p.GetValue(rewardModel),
                NumGenerations = p.GetValue(gens),
                NumIterations = p.GetValue(iters),
                Beta = p.GetValue(beta),
                Epsilon = p.GetValue(eps),
                MaxCompletionLength = p.GetValue(maxLen),
                Temperature = p.GetValue(temp),
                TopP = p.GetValue(topP),
                LossType = p.GetValue(lossType)!,
                EpsilonHigh = p.GetValue(epsHigh),
                Delta = p.GetValue(delta),
                ImportanceSamplingLevel = p.GetValue(level)!,
                ScaleRewards = p.GetValue(scale)!,
                MaskTruncatedCompletions = p.GetValue(maskTruncated),
            };
            g.Validate();
            var trainer = new GrpoTrainer(o, g, CliOptions.Backend(p, o.Threads));
            return TrainingFlags.RunWithProgress("grpo", o.OutDir, (s, w) => { trainer.OnStep = s; trainer.OnWarning = w; }, trainer.Run);
        });
        return cmd;
    }
}
