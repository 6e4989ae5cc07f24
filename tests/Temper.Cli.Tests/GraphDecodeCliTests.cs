// `--graph` (the CUDA graph decoder) on `temper bench decode` and `temper generate`: what it cannot run is
// one line and exit 2, with a GPU or without: --rows without --graph, several prompts, --stop, --qlora, and the
// llama-tiny fixture itself (no CUDA device in CI; on a GPU, its head dim of 16, which the kernels do not take).
namespace Temper.Tests;

public class GraphDecodeCliTests
{
    private static readonly string Tiny = Fixtures.Hf("llama-tiny");

    [Theory]
    [InlineData("--rows is for --graph", "bench", "decode", "--rows", "2")]
    [InlineData("--graph decodes one --prompt at a time", "generate", "--graph", "-p", "a", "-p", "b")]
    [InlineData("--graph does not take --stop", "generate", "--graph", "-p", "a", "--stop", "x")]
    [InlineData("--graph decodes bf16 weights; it cannot take --qlora", "generate", "--graph", "-p", "a", "--qlora")]
    public void What_the_graph_cannot_run_is_one_line(string message, params string[] args)
    {
        var r = TemperCli.Run([.. args, "--model", Tiny]);
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith($"temper: {message}", r.Stderr.Trim());
    }

    [Theory]
    [InlineData("bench", "decode", "--graph", "--prompt-len", "2", "--tokens", "2")]
    [InlineData("generate", "--graph", "-p", "hello", "--max-new-tokens", "2")]
    public void The_fixture_is_refused_in_one_line_with_or_without_a_gpu(params string[] args)
    {
        var r = TemperCli.Run([.. args, "--model", Tiny]);
        Assert.Equal(2, r.ExitCode);
        string line = Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Matches("^temper: (--graph decodes on a CUDA GPU: |decode graph: head dim 16 )", line);
    }
}
