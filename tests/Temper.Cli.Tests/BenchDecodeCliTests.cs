// `temper bench decode` as a user runs it, on the tiny fixture model: prefill and decode tokens/s, the
// weight bytes a token reads with the effective bandwidth they imply, the host's read bandwidth measured
// in the same run (the CPU roofline) with decode's share of it, and with --profile the per-op table
// of the decoding run; --gguf writes the model decoded as a GGUF file first; bad sizes are one line and exit 2.
namespace Temper.Tests;

public class BenchDecodeCliTests
{
    [Fact]
    public void Bench_decode_prints_throughput_weight_bandwidth_and_the_op_profile()
    {
        var r = TemperCli.Run("bench", "decode", "--model", Fixtures.Hf("llama-tiny"), "--prompt-len", "4", "--tokens", "3", "--threads", "1", "--profile");
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Matches(@"decode: 3 tokens in [0-9.]+ ms = [0-9.]+ tokens/s \(batch 1\)", r.Stdout);
        Assert.Matches(@"weights read per token: [0-9.]+ MB; effective weight bandwidth [0-9.]+ GB/s", r.Stdout);
        Assert.Matches(@"host memory read bandwidth \(1 thread, 256 MiB, same process\): [0-9.]+ GB/s; decode reaches [0-9.]+ ?% of that roofline", r.Stdout);
        Assert.Contains("| op | ms/step | calls/step | share of step |", r.Stdout);
        Assert.Matches(@"\| Linear \[1,\d+\]->\d+ \| [0-9.]+ \|", r.Stdout); // a decoded token's product
    }

    [Fact]
    public void Bench_decode_writes_the_decoded_model_as_gguf_for_the_llama_cpp_peer()
    {
        string file = Path.Combine(TempFolder.Create("temper-bench-gguf"), "m.gguf");
        var r = TemperCli.Run("bench", "decode", "--model", Fixtures.Hf("llama-tiny"), "--prompt-len", "4", "--tokens", "2", "--threads", "1", "--gguf", file);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains($"wrote {file}: llama, f32", r.Stdout);
        var g = new GgufFile(file);
        Assert.Equal(20, g.Tensors.Count);
        Assert.Equal("llama", g.Get<string>("general.architecture"));
    }

    [Fact]
    public void Bench_decode_refuses_zero_tokens_in_one_line()
    {
        var r = TemperCli.Run("bench", "decode", "--model", Fixtures.Hf("llama-tiny"), "--tokens", "0");
        Assert.Equal(2, r.ExitCode);
        Assert.Equal("temper: --prompt-len and --tokens must be >= 1", r.Stderr.Trim());
    }
}
