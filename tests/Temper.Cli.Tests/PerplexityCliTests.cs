// `temper perplexity` as a script runs it: on demo/base's own held-out base-text (made by `temper task-data`)
// --json prints one object that parses, whose figures agree with each other and with the windows asked for (a
// model that learned the sums below the uniform 512; the joined lines are not its pretraining form, so not far
// below: docs/QLORA.md); bad input is one stderr line naming the file and
// line (JSONL) or the flag, exit 2.
using System.Text.Json.Nodes;

namespace Temper.Tests;

public class PerplexityCliTests
{
    private static string DemoBase => Path.Combine(AppContext.BaseDirectory, "demo", "base");

    [Fact]
    public void Json_on_demo_base_parses_and_adds_up()
    {
        string dir = TempFolder.Create("temper-cli-ppl"), data = Path.Combine(dir, "held-out.jsonl");
        var made = TemperCli.Run("task-data", "--form", "base-text", "--split", "held-out", "--count", "24", "--seed", "5", "--out", data);
        Assert.True(made.ExitCode == 0, made.Stderr);
        var r = TemperCli.Run("perplexity", "--model", DemoBase, "--data", data, "--ctx", "64", "--stride", "32", "--batch-size", "2", "--json", "--device", "cpu", "--threads", "2");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var o = JsonNode.Parse(r.Stdout)!.AsObject();
        int tokens = (int)o["tokens"]!, textTokens = (int)o["text_tokens"]!, windows = (int)o["windows"]!;
        double nll = (double)o["nll"]!, ppl = (double)o["ppl"]!, err = (double)o["ppl_stderr"]!;
        Assert.Equal(64, (int)o["ctx"]!);
        Assert.Equal(32, (int)o["stride"]!);
        Assert.True(textTokens > 128, r.Stdout);
        Assert.Equal(textTokens - 1, tokens);
        Assert.Equal((textTokens - 64 + 31) / 32 + 1, windows); // begins 0, 32, ... until a window reaches the end
        Assert.Equal(Math.Exp(nll), ppl, 9);
        Assert.InRange(ppl, 1.0, 512.0); // uniform over the vocabulary would be 512
        Assert.InRange(err, 1e-6, ppl);
    }

    [Fact]
    public void Bad_input_is_one_line_naming_the_file_line_or_flag()
    {
        string dir = TempFolder.Create("temper-cli-ppl"), data = Path.Combine(dir, "bad.jsonl");
        File.WriteAllText(data, "{\"text\": \"23+58=81\"}\n{\"text\": 23}\n");
        var r = TemperCli.Run("perplexity", "--model", DemoBase, "--data", data, "--device", "cpu");
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(data + ":2:", r.Stderr);
        Assert.Equal("", r.Stdout);

        string good = Path.Combine(dir, "good.txt");
        File.WriteAllText(good, "23+58=81\n14+20=34\n");
        var stride = TemperCli.Run("perplexity", "--model", DemoBase, "--data", good, "--ctx", "8", "--stride", "9", "--device", "cpu");
        Assert.Equal(2, stride.ExitCode);
        Assert.Single(stride.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--stride 9", stride.Stderr);
        var ctx = TemperCli.Run("perplexity", "--model", DemoBase, "--data", good, "--ctx", "257", "--device", "cpu");
        Assert.Equal(2, ctx.ExitCode);
        Assert.Contains("max_position_embeddings (256)", ctx.Stderr);
        var missing = TemperCli.Run("perplexity", "--model", DemoBase, "--data", Path.Combine(dir, "none.txt"), "--device", "cpu");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("none.txt: data file not found", missing.Stderr);
    }
}
