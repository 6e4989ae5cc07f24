// Reward functions for GRPO: each scores one completion of a prompt row (the JSONL object, so a row
// can carry its reference answer). Built in: "addition" (the synthetic task's 1 / 0.1 / 0 scorer,
// reading the row's "answer"), "format" (1 when the answer line's format holds), "brevity"
// (1 / (1 + chars/100)); and a trained reward model (RewardModelReward: sigmoid of its score of the
// row's prompt + the completion, so in [0,1]). A function that throws or returns NaN/Inf gives that
// sample 0 and is counted.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Training.Reward;
using Temper.Training.Tasks;

namespace Temper.Training.Rl;

public interface IRewardFunction
{
    string Name { get; }
    double Score(JsonObject row, string completion);
}

public sealed class DelegateReward(string name, Func<JsonObject, string, double> score) : IRewardFunction
{
    public string Name { get; } = name;
    public double Score(JsonObject row, string completion) => score(row, completion);
}

/// <summary>A trained reward model as a GRPO reward: sigmoid(score(prompt + completion)), in [0,1].</summary>
public sealed class RewardModelReward(RewardModel model) : IRewardFunction
{
    public string Name => "reward-model:" + model.Directory;

    public double Score(JsonObject row, string completion)
    {
        var prompt = row["prompt"] ?? throw new TemperException("the reward model needs a \"prompt\" field in each prompt row");
        JsonNode answer = prompt is JsonArray
            ? new JsonArray(new JsonObject { ["role"] = "assistant", ["content"] = completion })
            : JsonValue.Create(completion);
        double s = model.Score(prompt, answer);
        return 1 / (1 + Math.Exp(-s));
    }
}

public static class RewardFunctions
{
    public static IRewardFunction Parse(string name) => name switch
    {
        "addition" => new DelegateReward(name, (row, c) => AdditionTask.Score(c, Item(row)).Reward),
        "format" => new DelegateReward(name, (row, c) => AdditionTask.Score(c, Item(row)).FormatOk ? 1 : 0),
        "brevity" => new DelegateReward(name, (_, c) => 1.0 / (1 + c.Length / 100.0)),
        _ => throw new TemperException($"--reward: unknown reward function '{name}' (built in: addition, format, brevity)"),
    };

    private static TaskItem Item(JsonObject row)
    {
        var answer = row["answer"] ?? throw new TemperException("reward 'addition' needs an \"answer\" field in each prompt row");
        return new TaskItem("", "", answer.GetValue<long>());
    }

    /// <summary>The sum of the functions' rewards; a failing function contributes 0 and bumps <paramref name="errors"/>.</summary>
    public static double Total(IReadOnlyList<IRewardFunction> fns, JsonObject row, string completion, ref int errors)
    {
        double sum = 0;
        foreach (var f in fns)
        {
            double r;
            try { r = f.Score(row, completion); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                errors++;
                continue;
            }
            if (!double.IsFinite(r)) { errors++; continue; }
            sum += r;
        }
        return sum;
    }
}
