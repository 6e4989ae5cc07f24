// `temper cpo` and `temper dpo --rpo-alpha` as scripts call them: a SimPO run with every CPO flag (and DoRA, as
// `temper orpo` takes it) records its method in manifest.json, logs TRL's metric names and saves a PEFT adapter;
// --rpo-alpha logs nll_loss; bad values are refused in one line naming the flag (exit 2).
using System.Text.Json.Nodes;

namespace Temper.Tests;

public class CpoCliTests
{
    private static string Temp() => Directory.CreateTempSubdirectory("temper-cpo-cli-").FullName;

    private static string[] Verb(string verb, string model, string dir) =>
        [verb, "--model", model, "--data", Path.Combine(model, "trainer", "dpo.jsonl"), "--out", dir, "--max-steps", "1", "--lora-r", "2"];

    [Fact]
    public void Simpo_run_records_its_method_logs_trls_metrics_and_saves_a_dora_adapter()
    {
        string model = Fixtures.Hf("llama-tiny"), dir = Temp();
        var r = TemperCli.Run([.. Verb("cpo", model, dir), "--loss-type", "simpo", "--beta", "2", "--simpo-gamma", "0.8", "--cpo-alpha", "0.5",
            "--label-smoothing", "0.1", "--use-dora"]);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        var method = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!["data"]!["method"]!;
        Assert.Equal("simpo", method["cpo_loss_type"]!.GetValue<string>());
        Assert.Equal(0.8, method["simpo_gamma"]!.GetValue<double>());
        Assert.Equal(0.5, method["cpo_alpha"]!.GetValue<double>());
        Assert.Equal(0.1, method["label_smoothing"]!.GetValue<double>());
        var line = JsonNode.Parse(File.ReadLines(Path.Combine(dir, "metrics.jsonl")).First())!;
        foreach (var key in new[] { "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "nll_loss" })
            Assert.NotNull(line[key]);
        Assert.True(line["nll_loss"]!.GetValue<double>() > 0);
        Assert.True(JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!["use_dora"]!.GetValue<bool>());
        Assert.True(File.Exists(Path.Combine(dir, "adapter_model.safetensors")));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Dpo_rpo_alpha_logs_the_chosen_nll()
    {
        string model = Fixtures.Hf("llama-tiny"), dir = Temp();
        var r = TemperCli.Run([.. Verb("dpo", model, dir), "--rpo-alpha", "1"]);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        var line = JsonNode.Parse(File.ReadLines(Path.Combine(dir, "metrics.jsonl")).First())!;
        Assert.True(line["nll_loss"]!.GetValue<double>() > 0);
        Assert.Equal(1.0, JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!["data"]!["method"]!["rpo_alpha"]!.GetValue<double>());
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData("cpo", "--simpo-gamma needs --loss-type simpo (got sigmoid)", "--simpo-gamma", "0.3")]
    [InlineData("cpo", "--simpo-gamma must be >= 0 (got -1)", "--loss-type", "simpo", "--simpo-gamma", "-1")]
    [InlineData("cpo", "--cpo-alpha must be >= 0 (got -1)", "--cpo-alpha", "-1")]
    [InlineData("cpo", "--loss-type must be one of sigmoid, hinge, ipo, simpo for cpo, not 'robust'", "--loss-type", "robust")]
    [InlineData("cpo", "--label-smoothing applies to the sigmoid and simpo losses, not ipo", "--loss-type", "ipo", "--label-smoothing", "0.1")]
    [InlineData("dpo", "--rpo-alpha must be >= 0 (got -1)", "--rpo-alpha", "-1")]
    public void Bad_values_are_refused_in_one_line_naming_the_flag(string verb, string message, params string[] flags)
    {
        string model = Fixtures.Hf("llama-tiny"), dir = Temp();
        var r = TemperCli.Run([.. Verb(verb, model, Path.Combine(dir, "run")), .. flags]);
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Contains(message, r.Stderr);
        Assert.DoesNotContain("   at ", r.Stderr);
        Directory.Delete(dir, true);
    }
}
