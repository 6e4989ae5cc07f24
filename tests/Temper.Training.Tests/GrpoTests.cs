// GRPO on the synthetic addition task: from a weak SFT start (a tiny model trained from scratch for a
// few steps), the mean reward of the last 10 steps beats the first 10 by >= 0.2, and with
// --num-iterations 2 the ratio gets clipped on the reused batches (clip fraction > 0). Fixed seeds.
using System.Globalization;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Training.Rl;
using Temper.Training.Tasks;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class GrpoTests
{
    private static string Env(string k, string d) => Environment.GetEnvironmentVariable(k) ?? d;
    private static int I(string k, int d) => int.Parse(Env(k, d.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
    private static float F(string k, float d) => float.Parse(Env(k, d.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);

    [Fact]
    public void Failing_reward_functions_count_and_score_zero()
    {
        int errors = 0;
        var fns = new IRewardFunction[]
        {
            new DelegateReward("boom", (_, _) => throw new InvalidOperationException("boom")),
            new DelegateReward("nan", (_, _) => double.NaN),
            new DelegateReward("one", (_, _) => 1),
        };
        Assert.Equal(1, RewardFunctions.Total(fns, new JsonObject(), "x", ref errors));
        Assert.Equal(2, errors);
        Assert.Throws<TemperException>(() => RewardFunctions.Parse("telepathy"));
    }
}
