// `temper bench gemm`: bad shapes are one line and exit 2 before any device is opened; on the CUDA emulator
// (test.sh's emulated run, TEMPER_CUDA_DRIVER set; skipped elsewhere) every kernel it lists (sm80, and the
// sm_90a ones the emulator also runs) is validated on partial tiles and reported ok.
namespace Temper.Tests;

public class BenchGemmCliTests
{
    [Theory]
    [InlineData("16x12x16", "K must be a multiple of 8")]
    [InlineData("16x16", "--shapes takes NxKxM")]
    [InlineData("0x16x16", "--shapes takes NxKxM")]
    public void Bad_shapes_are_one_line(string shapes, string message)
    {
        var r = TemperCli.Run("bench", "gemm", "--shapes", shapes);
        Assert.Equal(2, r.ExitCode);
        string line = Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Contains(message, line);
    }

    [Fact]
    [Trait("Kernels", "cuda")]
    public void Every_kernel_is_validated_on_the_emulator()
    {
        if (Environment.GetEnvironmentVariable("TEMPER_CUDA_DRIVER") is not { Length: > 0 })
            Assert.Skip("TEMPER_CUDA_DRIVER does not name the CUDA emulator (test.sh's emulated run sets it)");
        var r = TemperCli.Run("bench", "gemm", "--shapes", "130x64x257", "--reps", "1");
        Assert.True(r.ExitCode == 0, r.Stdout + r.Stderr);
        var rows = r.Stdout.Split('\n').Where(l => l.StartsWith("[130,64]->257")).ToArray();
        Assert.Equal(["sm80", "sm90", "sm90-wide", "tma", "tma-wide"], rows.Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]));
        Assert.All(rows, l => Assert.EndsWith(" ok", l.TrimEnd()));
    }
}
