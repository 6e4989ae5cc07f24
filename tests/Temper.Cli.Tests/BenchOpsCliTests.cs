// `temper bench ops` as a user runs it: tiny widths on the CPU backend print one timed line per op of a
// layer's training step (and the LM head); sizes that cannot form a layer are one line and exit 2.
namespace Temper.Tests;

public class BenchOpsCliTests
{
    [Fact]
    public void Bench_ops_prints_a_line_per_op()
    {
        var r = TemperCli.Run("bench", "ops", "--device", "cpu", "--batch", "1", "--seq", "8", "--hidden", "16", "--ffn", "32", "--heads", "2", "--kv-heads", "1",
            "--head-dim", "8", "--vocab", "50", "--rank", "2", "--reps", "1");
        Assert.True(r.ExitCode == 0, r.Stderr);
        foreach (var op in new[] { "Linear [8,16]->32", "LinearBackward dx", "LoraLinear", "LoraLinearBackward (dx, dA, dB)", "SwiGlu", "SwiGluBackward", "RmsNorm", "RmsNormBackward",
                     "Add", "Rope (q)", "Attention (causal)", "AttentionBackward", "LmHeadCrossEntropy V 50", "LmHeadCrossEntropy + dHidden" })
            Assert.Matches(@"(?m)^" + System.Text.RegularExpressions.Regex.Escape(op) + @" +[0-9.]+ ms +[0-9]+ (GFLOP|GB)/s", r.Stdout);
    }

    [Fact]
    public void Bench_ops_refuses_heads_that_the_kv_heads_do_not_divide()
    {
        var r = TemperCli.Run("bench", "ops", "--device", "cpu", "--heads", "3", "--kv-heads", "2");
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Contains("--heads a multiple of --kv-heads", r.Stderr);
    }
}
