// `temper grpo` with TRL's loss settings as a user runs it: a GSPO-style run (sequence-level ratios, loss type
// grpo, rewards not scaled, truncated completions masked) trains a step and logs the share truncated; bad
// settings and --grad-accum are refused in one line with exit 2.
using System.Text.Json.Nodes;

namespace Temper.Tests;

public class GrpoCliTests
{
    private static (string Model, string Prompts, string Dir) Setup()
    {
        string dir = Directory.CreateTempSubdirectory("temper-grpo-cli-").FullName, prompts = Path.Combine(dir, "prompts.jsonl");
        File.WriteAllLines(prompts, ["""{"prompt": "What is 2+3?"}""", """{"prompt": "Name a colour."}"""]);
        return (Fixtures.Hf("llama-tiny"), prompts, dir);
    }

    [Fact]
    public void A_gspo_style_run_trains_and_logs_what_was_truncated()
    {
        var (model, prompts, dir) = Setup();
        var r = TemperCli.Run("grpo", "--model", model, "--data", prompts, "--out", Path.Combine(dir, "out"), "--reward", "brevity",
            "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "3", "--max-steps", "1", "--lora-r", "2",
            "--loss-type", "grpo", "--importance-sampling-level", "sequence", "--scale-rewards", "none", "--mask-truncated-completions",
            "--epsilon-high", "0.28");
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        var first = JsonNode.Parse(File.ReadLines(Path.Combine(dir, "out", "metrics.jsonl")).First())!;
        Assert.InRange(first["truncated"]!.GetValue<double>(), 0, 1);
        var method = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "out", "manifest.json")))!.ToJsonString();
        Assert.Contains("\"importance_sampling_level\":\"sequence\"", method);
        Assert.Contains("\"epsilon_high\":0.28", method);
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData("--loss-type", "ppo", "--loss-type 'ppo' is not one of grpo, bnpo, dr_grpo, dapo")]
    [InlineData("--scale-rewards", "global", "--scale-rewards 'global' is not one of group, batch, none")]
    [InlineData("--grad-accum", "2", "GRPO takes one generated batch per step; --grad-accum is not supported (raise --batch-size)")]
    [InlineData("--neftune-noise-alpha", "5", "--neftune-noise-alpha is supported by sft and pretrain only")]
    public void Bad_settings_are_one_line_and_exit_2(string flag, string value, string message)
    {
        var (model, prompts, dir) = Setup();
        var r = TemperCli.Run("grpo", "--model", model, "--data", prompts, "--out", Path.Combine(dir, "out"), "--max-steps", "1", flag, value);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("temper: " + message, r.Stderr.Trim());
        Directory.Delete(dir, true);
    }
}
