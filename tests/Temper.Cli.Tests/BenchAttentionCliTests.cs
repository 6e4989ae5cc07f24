// `temper bench attention` as a user runs it: a tiny causal shape on the ILGPU CPU accelerator prints
// forward (training's, and inference's without lse) and backward times, also from bf16 q, k, v; a head count that the kv heads do not divide is one line and exit 2.
namespace Temper.Tests;

public class BenchAttentionCliTests
{
    [Fact]
    public void Bench_attention_prints_forward_and_backward_times()
    {
        var r = TemperCli.Run("bench", "attention", "--device", "ilgpu-cpu", "--batch", "1", "--heads", "2", "--kv-heads", "1", "--seq", "9", "--head-dim", "8", "--reps", "1");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("causal attention B1 H2 Hkv1 T9 D8", r.Stdout);
        Assert.Matches(@"forward: +[0-9.]+ ms = [0-9.]+ GFLOP/s", r.Stdout);
        Assert.Matches(@"forward, inference \(no lse\): [0-9.]+ ms = [0-9.]+ GFLOP/s", r.Stdout);
        Assert.Matches(@"backward: [0-9.]+ ms = [0-9.]+ GFLOP/s", r.Stdout);
    }

    [Fact]
    public void Bench_attention_takes_bf16_inputs()
    {
        var r = TemperCli.Run("bench", "attention", "--device", "ilgpu-cpu", "--batch", "1", "--heads", "2", "--kv-heads", "1", "--seq", "9", "--head-dim", "8", "--reps", "1",
            "--inputs", "bf16");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("q, k, v bf16", r.Stdout);
        Assert.Matches(@"forward: +[0-9.]+ ms = [0-9.]+ GFLOP/s", r.Stdout);
        Assert.Matches(@"backward: [0-9.]+ ms = [0-9.]+ GFLOP/s", r.Stdout);
        var bad = TemperCli.Run("bench", "attention", "--device", "cpu", "--inputs", "fp8");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("fp8", bad.Stderr);
    }

    [Fact]
    public void Bench_attention_refuses_kv_heads_that_do_not_divide_the_heads()
    {
        var r = TemperCli.Run("bench", "attention", "--device", "cpu", "--heads", "3", "--kv-heads", "2");
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Contains("--kv-heads must divide --heads", r.Stderr);
    }
}
