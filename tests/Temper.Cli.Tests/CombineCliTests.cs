// `temper combine` and `temper merge` with several adapters as a user runs them: the fixture's adapter combined
// with itself at weights 0.25 and 0.75 is a rank-8 adapter whose model gives the logits of the adapter merged
// once (the weights add to 1), as does `temper merge` of the two at those weights; mismatched weights are one
// line and exit 2.
using Temper.Core.SafeTensors;

namespace Temper.Tests;

public class CombineCliTests
{
    private static float[] Logits(string model, string dir, string name, string? adapter = null)
    {
        string ids = Path.Combine(dir, "ids.json"), output = Path.Combine(dir, name + ".safetensors");
        File.WriteAllText(ids, "[[1, 40, 41, 42, 50, 51]]");
        string[] args = ["logits", "--model", model, "--ids", ids, "--out", output];
        var r = TemperCli.Run(adapter == null ? args : [.. args, "--adapter", adapter]);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var f = SafetensorsFile.Open(output);
        return f.Get("logits").ToFloatArray();
    }

    [Fact]
    public void Combined_and_multi_merged_adapters_give_the_logits_of_their_weighted_sum()
    {
        string model = Fixtures.Hf("llama-tiny"), adapter = Path.Combine(model, "adapter");
        string dir = Directory.CreateTempSubdirectory("temper-combine-cli-").FullName;
        var c = TemperCli.Run("combine", "--adapter", adapter, "--adapter", adapter, "--weights", "0.25,0.75", "--out", Path.Combine(dir, "combined"));
        Assert.True(c.ExitCode == 0, c.Stderr);
        Assert.Contains("(rank 8)", c.Stdout);
        var m = TemperCli.Run("merge", "--model", model, "--adapter", adapter, "--adapter", adapter, "--weights", "0.25,0.75", "--out", Path.Combine(dir, "merged"));
        Assert.True(m.ExitCode == 0, m.Stderr);

        var once = Logits(model, dir, "once", adapter);
        var combined = Logits(model, dir, "combined", Path.Combine(dir, "combined"));
        var merged = Logits(Path.Combine(dir, "merged"), dir, "merged");
        float scale = once.Max(Math.Abs);
        for (int i = 0; i < once.Length; i++)
        {
            Assert.True(Math.Abs(combined[i] - once[i]) <= 1e-4 * scale, $"combined logit {i}: {combined[i]} vs {once[i]}");
            Assert.True(Math.Abs(merged[i] - once[i]) <= 1e-4 * scale, $"merged logit {i}: {merged[i]} vs {once[i]}");
        }

        var bad = TemperCli.Run("merge", "--model", model, "--adapter", adapter, "--weights", "0.5,0.5", "--out", Path.Combine(dir, "bad"));
        Assert.Equal(2, bad.ExitCode);
        Assert.Equal("temper: --weights has 2 values for 1 adapters", bad.Stderr.Trim());
        Directory.Delete(dir, true);
    }
}
