// `temper combine` and `temper merge` with several adapters as a user runs them: the fixture's adapter combined
// with itself at weights 0.25 and 0.75 is a rank-8 adapter whose model gives the logits of the adapter merged
// once (the weights add to 1), as does `temper merge` of the two at those weights; mismatched weights are one
// line and exit 2. The other combination types: svd of the adapter with itself at 0.25 and 0.75 is the adapter's
// delta (PEFT 0.21 weights the scaled deltas by w alone), and bad options are one line and exit 2.
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

    // s B A of module q_proj of layer 0 in an adapter folder, s = lora_alpha / r.
    private static double[] Delta(string dir)
    {
        var cfg = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        double s = cfg["lora_alpha"]!.GetValue<double>() / cfg["r"]!.GetValue<int>();
        using var f = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
        var a = f.Get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
        var b = f.Get("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
        var (af, bf) = (a.ToFloatArray(), b.ToFloatArray());
        int r = a.Shape[0], n = a.Shape[1], m = b.Shape[0];
        var d = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                for (int x = 0; x < r; x++) d[i * n + j] += s * bf[i * r + x] * af[x * n + j];
        return d;
    }

    [Fact]
    public void Svd_combination_and_bad_options()
    {
        string model = Fixtures.Hf("llama-tiny"), adapter = Path.Combine(model, "adapter");
        string dir = Directory.CreateTempSubdirectory("temper-combine-svd-cli-").FullName;
        var c = TemperCli.Run("combine", "--adapter", adapter, "--adapter", adapter, "--weights", "0.25,0.75", "--combination-type", "svd", "--out", Path.Combine(dir, "svd"));
        Assert.True(c.ExitCode == 0, c.Stderr);
        Assert.Contains("(svd, rank 4)", c.Stdout);
        var once = Delta(adapter);
        var svd = Delta(Path.Combine(dir, "svd"));
        double max = once.Max(Math.Abs);
        for (int i = 0; i < once.Length; i++) Assert.True(Math.Abs(svd[i] - once[i]) <= 1e-5 * max, $"delta {i}: {svd[i]} vs {once[i]}");

        (string[] Args, string Error)[] refusals =
        [
            (["--combination-type", "slerp"], "temper: unknown combination type 'slerp' (one of cat, linear, ties, dare_linear, dare_ties, magnitude_prune, svd, ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune_svd)"),
            (["--combination-type", "ties"], "temper: combination type ties needs a density in (0, 1] (--density)"),
            (["--combination-type", "ties", "--density", "0.5", "--majority-sign-method", "mean"], "temper: --majority-sign-method must be total or frequency, not 'mean'"),
            (["--combination-type", "svd", "--svd-rank", "0"], "temper: combination type svd: the SVD rank must be positive, got 0"),
        ];
        foreach (var (args, error) in refusals)
        {
            var bad = TemperCli.Run(["combine", "--adapter", adapter, "--adapter", adapter, .. args, "--out", Path.Combine(dir, "bad")]);
            Assert.Equal(2, bad.ExitCode);
            Assert.Equal(error, bad.Stderr.Trim());
        }
        Directory.Delete(dir, true);
    }
}
