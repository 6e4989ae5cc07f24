// GRPO's own knobs (the run's others are SftOptions'): completions per prompt, sampling, the clipped
// ratio (epsilon, DAPO's epsilon_high, the two-sided delta), the KL weight (k3 estimator; 0 skips the
// reference), updates per generated batch, rewards and how they become advantages (scale_rewards), which
// completions count (mask_truncated_completions), and TRL's loss_type and importance_sampling_level.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Training.Losses;

namespace Temper.Training.Rl;

public sealed record GrpoOptions
{
    public int NumGenerations { get; init; } = 8;
    public int MaxCompletionLength { get; init; } = 32;
    public float Temperature { get; init; } = 1f;
    public float TopP { get; init; } = 1f;
    public double Epsilon { get; init; } = 0.2;
    public double Beta { get; init; }
    public int NumIterations { get; init; } = 1;
    public IReadOnlyList<string> Rewards { get; init; } = ["addition"];
    /// <summary>A trained reward model folder (RewardModel) whose sigmoid score is added to the rewards; null = none.</summary>
    public string? RewardModel { get; init; }
    /// <summary>TRL's loss_type: grpo, bnpo, dr_grpo or dapo (TRL's default).</summary>
    public string LossType { get; init; } = "dapo";
    /// <summary>The upper clip bound's epsilon (DAPO's clip-higher); null: Epsilon.</summary>
    public double? EpsilonHigh { get; init; }
    /// <summary>Two-sided clipping's cap on the ratio; null: none.</summary>
    public double? Delta { get; init; }
    /// <summary>TRL's importance_sampling_level: token (GRPO) or sequence (GSPO).</summary>
    public string ImportanceSamplingLevel { get; init; } = "token";
    /// <summary>TRL's scale_rewards: group (the std within each prompt's group), batch (the std of the whole batch) or none.</summary>
    public string ScaleRewards { get; init; } = "group";
    /// <summary>Completions cut off at MaxCompletionLength (no EOS) take no part in the loss (DAPO's practice).</summary>
    public bool MaskTruncatedCompletions { get; init; }

    /// <summary>The loss settings.</summary>
    public GrpoObjective Objective => new()
    {
        LossType = LossType, Epsilon = Epsilon, EpsilonHigh = EpsilonHigh, Delta = Delta, Beta = Beta,
        SequenceLevel = ImportanceSamplingLevel == "sequence", MaxCompletionLength = MaxCompletionLength,
    };

    public void Validate()
    {
        if (NumGenerations < 2) throw new TemperException("GRPO needs --num-generations >= 2 (advantages compare completions within a group)");
        if (NumIterations < 1) throw new TemperException("--num-iterations must be >= 1");
        if (MaxCompletionLength < 1) throw new TemperException("--max-completion-length must be >= 1");
        if (ImportanceSamplingLevel is not ("token" or "sequence"))
            throw new TemperException($"--importance-sampling-level '{ImportanceSamplingLevel}' is not one of token, sequence");
        if (ScaleRewards is not ("group" or "batch" or "none")) throw new TemperException($"--scale-rewards '{ScaleRewards}' is not one of group, batch, none");
        Objective.Validate();
    }

    public JsonObject ToJson() => new()
    {
        ["num_generations"] = NumGenerations,
        ["max_completion_length"] = MaxCompletionLength,
        ["temperature"] = Temperature,
        ["top_p"] = TopP,
        ["epsilon"] = Epsilon,
        ["beta"] = Beta,
        ["num_iterations"] = NumIterations,
        ["rewards"] = new JsonArray(Rewards.Select(r => (JsonNode)r).ToArray()),
        ["reward_model"] = RewardModel,
        ["loss_type"] = LossType,
        ["epsilon_high"] = EpsilonHigh ?? Epsilon,
        ["delta"] = Delta,
        ["importance_sampling_level"] = ImportanceSamplingLevel,
        ["scale_rewards"] = ScaleRewards,
        ["mask_truncated_completions"] = MaskTruncatedCompletions,
    };
}
