// GRPO's own knobs (the run's others are SftOptions'): completions per prompt, sampling, the clipped
// ratio, the KL weight (k3 estimator; 0 skips the reference), updates per generated batch, rewards.
using System.Text.Json.Nodes;

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
    };
}
