// Reward functions for GRPO: each scores one completion of a prompt row (the JSONL object, so a row
// can carry its reference answer). Built in: "addition" (the synthetic task's 1 / 0.1 / 0 scorer,
// reading the row's "answer"), "format" (1 when the answer line's format holds), "brevity"
// (1 / (1 + chars/100)). A function that throws or returns NaN/Inf gives that sample 0 and is counted.
using System.Text.Json.Nodes;
using Temper.Core;
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
