// The SIMD kernels pick the widest vector the CPU runs, so one run of the suite tests one path. This
// re-runs the kernel op-checks in a child process with the runtime told to ignore AVX-512 (Vector256
// paths, AVX2 GEMM), AVX2 (Vector128 paths, scalar GEMM) and all hardware intrinsics (scalar paths). The
// child is told which vector width to expect and checks it (GemmKernelTests.Runs_on_the_vector_width_asked_for):
// .NET 10 ignores the older knob DOTNET_EnableAVX512F, and a switch that does nothing would re-run the
// AVX-512 paths and pass.
using System.Diagnostics;

namespace Temper.Kernels.Tests;

public class SimdPathTests
{
    [Theory]
    [InlineData("DOTNET_EnableAVX512", 256)]
    [InlineData("DOTNET_EnableAVX2", 128)]
    [InlineData("DOTNET_EnableHWIntrinsic", 0)]
    public async Task OpChecksPass_WithNarrowerVectors(string switchOff, int widest)
    {
        var self = Environment.ProcessPath!;
        var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(typeof(SimdPathTests).Assembly.Location);
        foreach (var a in new[] { "-class", typeof(CpuOpChecks).FullName!, "-class", typeof(GemmKernelTests).FullName!, "-noColor" }) psi.ArgumentList.Add(a);
        psi.Environment[switchOff] = "0";
        psi.Environment[GemmKernelTests.ExpectedWidthVariable] = widest.ToString(System.Globalization.CultureInfo.InvariantCulture);
        using var child = Process.Start(psi)!;
        var ct = TestContext.Current.CancellationToken;
        var stderrTask = child.StandardError.ReadToEndAsync(ct);
        string output = await child.StandardOutput.ReadToEndAsync(ct);
        string stderr = await stderrTask;
        await child.WaitForExitAsync(ct);
        string tail = output.Length > 3000 ? output[^3000..] : output;
        Assert.True(child.ExitCode == 0, $"{switchOff}=0: the op-checks exited {child.ExitCode}\n{tail}\n{stderr}");
        Assert.Contains("Failed: 0", output);
        Assert.Contains(GemmKernelTests.WidthCheckedLine(widest), output); // the width check ran, and passed
    }
}
