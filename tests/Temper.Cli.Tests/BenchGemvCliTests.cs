// `temper bench gemv` as a user runs it without a GPU: one line naming what is missing and exit 2 (on a GPU
// machine the bench runs instead, and the first check is skipped: the lease's gemv step is its run there);
// options it cannot take are one line and exit 2 before any device is opened.
namespace Temper.Tests;

public class BenchGemvCliTests
{
    [Fact]
    public void Bench_gemv_without_a_gpu_is_one_line_and_exit_2()
    {
        var r = TemperCli.Run("bench", "gemv", "--shape", "smollm-135m", "--reps", "1");
        Assert.SkipWhen(r.ExitCode == 0 && r.Stdout.Contains("GB/s", StringComparison.Ordinal), "a CUDA GPU is present: the bench ran");
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Matches("^temper: .*(CUDA|cuda)", r.Stderr.Trim());
    }

    [Theory]
    [InlineData("--rows", "9", "bench gemv: --rows must be 1 to 8, not 9")]
    [InlineData("--reps", "0", "bench gemv: --reps must be >= 1, not 0")]
    [InlineData("--shape", "gpt2", "--shape must be smollm-135m, llama-3.2-1b, llama-3.1-8b or qwen3-0.6b, not 'gpt2'")]
    public void Bench_gemv_refuses_options_it_cannot_take_in_one_line(string option, string value, string message)
    {
        var r = TemperCli.Run("bench", "gemv", option, value);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"temper: {message}", r.Stderr.Trim());
    }
}
