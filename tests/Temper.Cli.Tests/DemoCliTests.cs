// `temper demo --quick` end to end on a fixed seed, as CI runs it: held-out exact match after SFT is at
// least 30 points above the base's, the mean reward (of sampled answers) after GRPO is above the one
// after SFT, summary.json lists the stages in order with their figures, and report.html carries its SVG
// charts and the standalone commands.
using System.Text.Json.Nodes;

namespace Temper.Tests;

public class DemoCliTests
{
    [Fact]
    public void Quick_demo_improves_stage_by_stage_and_reports()
    {
        string dir = Directory.CreateTempSubdirectory("temper-demo-").FullName;
        var r = TemperCli.Run("demo", "--quick", "--seed", "1", "--threads", "2", "--out", dir);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        var stages = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")))!["stages"]!.AsArray();
        Assert.Equal(["base", "sft", "dpo", "grpo"], stages.Select(s => s!["stage"]!.GetValue<string>()));
        foreach (var s in stages)
            foreach (var key in new[] { "accuracy", "format", "reward", "mean_length", "seconds" })
                Assert.True(s![key] is JsonValue v && v.TryGetValue<double>(out _), $"{s["stage"]}: {key}");
        double Get(int i, string key) => stages[i]![key]!.GetValue<double>();
        TestContext.Current.SendDiagnosticMessage(string.Join("; ", stages.Select(s => $"{s!["stage"]}: acc {s["accuracy"]} reward {s["reward"]}")));
        Assert.True(Get(1, "accuracy") >= Get(0, "accuracy") + 0.30, $"held-out accuracy after SFT {Get(1, "accuracy")} vs base {Get(0, "accuracy")}");
        Assert.True(Get(3, "reward") > Get(1, "reward"), $"mean reward after GRPO {Get(3, "reward")} vs after SFT {Get(1, "reward")}");
        string html = File.ReadAllText(Path.Combine(dir, "report.html"));
        Assert.Contains("<svg", html);
        Assert.Contains("temper grpo --model", html);
        foreach (var stage in new[] { "sft", "dpo", "grpo" })
            Assert.True(File.Exists(Path.Combine(dir, stage, "adapter_model.safetensors")), stage);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Bad_settings_files_get_one_line_naming_the_file()
    {
        string dir = Directory.CreateTempSubdirectory("temper-demo-settings-").FullName;
        string bad = Path.Combine(dir, "bad.json"), unknown = Path.Combine(dir, "unknown.json");
        File.WriteAllText(bad, "{\"Sft\": ");
        File.WriteAllText(unknown, "{\"Stepz\": 3}");
        foreach (var (file, says) in new[] { (bad, "not valid JSON"), (unknown, "unknown setting 'Stepz'"), (Path.Combine(dir, "missing.json"), "settings file not found") })
        {
            var r = TemperCli.Run("demo", "--quick", "--settings", file, "--out", Path.Combine(dir, "out"));
            Assert.Equal(2, r.ExitCode);
            var line = r.Stderr.Trim();
            Assert.DoesNotContain('\n', line);
            Assert.Contains(file, line);
            Assert.Contains(says, line);
        }
        Assert.False(Directory.Exists(Path.Combine(dir, "out", "sft")));
        Directory.Delete(dir, true);
    }
}
