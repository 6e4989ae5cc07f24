// `temper grpo --model DIR --data PROMPTS.jsonl --out DIR [--reward NAME ...] [--num-generations G]
//  [--num-iterations N] [--beta B] [--epsilon E] [--max-completion-length L] [--temperature T]
//  [--reward-model DIR]`: GRPO with the built-in verifiable rewards and/or a trained reward model;
// --batch-size counts prompts per step.
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
        var cmd = new Command("grpo", "Group Relative Policy Optimization with verifiable rewards") { reward, rewardModel, gens, iters, beta, eps, maxLen, temp, topP };
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
            };
            var trainer = new GrpoTrainer(o, g, CliOptions.Backend(p, o.Threads));
            return TrainingFlags.RunWithProgress("grpo", o.OutDir, (s, w) => { trainer.OnStep = s; trainer.OnWarning = w; }, trainer.Run);
        });
        return cmd;
    }
}
