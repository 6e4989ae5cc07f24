// The CUDA C++ kernels' build contract, checked in CI without nvcc or a GPU: every
// kernels/Temper.Kernels.Cuda/cuda/*.cu has a Ptx/*.ptx whose first line records the SHA-256 of that
// source followed by the local headers it includes (#include "x.cuh", in order; build-ptx.sh writes it),
// so a .cu or a header changed without rebuilding the .ptx fails here (and its compute_90 build Ptx/NAME.sm90.ptx, for a
// source marked `// ptx-also: compute_90`); no .ptx
// lacks its source; and each .ptx is the one embedded in Temper.Kernels.Cuda, byte for byte.
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Temper.Kernels.Cuda;

namespace Temper.Cuda.Tests;

public partial class PtxSourceChecks
{
    private static string KernelsDir()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
            for (var d = new DirectoryInfo(start); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Engine.sln"))) return Path.Combine(d.FullName, "kernels", "Temper.Kernels.Cuda");
        Assert.Skip("the source tree (Engine.sln) is not above this test binary or the working folder");
        return "";
    }

    [GeneratedRegex(@"^// source-sha256: ([0-9a-f]{64}) cuda/([A-Za-z0-9_]+)\.cu ")]
    private static partial Regex Stamp();

    [Fact]
    public void Every_cu_has_its_ptx_built_from_this_source()
    {
        string dir = KernelsDir();
        var sources = Directory.GetFiles(Path.Combine(dir, "cuda"), "*.cu");
        Assert.NotEmpty(sources);
        foreach (var cu in sources)
        {
            string name = Path.GetFileNameWithoutExtension(cu), ptx = Path.Combine(dir, "Ptx", name + ".ptx");
            Assert.True(File.Exists(ptx), $"{name}.cu has no Ptx/{name}.ptx: run kernels/Temper.Kernels.Cuda/build-ptx.sh");
            var m = Stamp().Match(File.ReadLines(ptx).First());
            Assert.True(m.Success, $"Ptx/{name}.ptx: the first line is not build-ptx.sh's source-sha256 stamp");
            Assert.Equal(name, m.Groups[2].Value);
            string sha = Convert.ToHexStringLower(SHA256.HashData(SourceBytes(cu)));
            Assert.True(sha == m.Groups[1].Value, $"cuda/{name}.cu changed since Ptx/{name}.ptx was built (source {sha[..12]}, stamp {m.Groups[1].Value[..12]}): run kernels/Temper.Kernels.Cuda/build-ptx.sh");
            // A source marked `// ptx-also: compute_90` has its compute_90 build beside, from the same source.
            string sm90 = Path.Combine(dir, "Ptx", name + ".sm90.ptx");
            bool also = File.ReadLines(cu).Contains("// ptx-also: compute_90");
            Assert.True(also == File.Exists(sm90), $"cuda/{name}.cu {(also ? "asks for" : "does not ask for")} Ptx/{name}.sm90.ptx, which {(also ? "is missing" : "exists")}: run kernels/Temper.Kernels.Cuda/build-ptx.sh");
            if (also) Assert.True(File.ReadLines(sm90).First().StartsWith($"// source-sha256: {sha} cuda/{name}.cu ", StringComparison.Ordinal),
                $"cuda/{name}.cu changed since Ptx/{name}.sm90.ptx was built: run kernels/Temper.Kernels.Cuda/build-ptx.sh");
        }
    }

    [GeneratedRegex("^#include \"([^\"]+)\"", RegexOptions.Multiline)]
    private static partial Regex LocalInclude();

    // The bytes the stamp covers: the .cu, then each local header it includes, in order.
    private static byte[] SourceBytes(string cu)
    {
        var bytes = new List<byte>(File.ReadAllBytes(cu));
        foreach (Match m in LocalInclude().Matches(File.ReadAllText(cu)))
            bytes.AddRange(File.ReadAllBytes(Path.Combine(Path.GetDirectoryName(cu)!, m.Groups[1].Value)));
        return [.. bytes];
    }

    [Fact]
    public void Every_ptx_has_its_source_and_is_the_embedded_one()
    {
        string dir = KernelsDir();
        var files = Directory.GetFiles(Path.Combine(dir, "Ptx"), "*.ptx").Select(f => Path.GetFileName(f)).Order().ToList();
        Assert.Equal(files, KernelPtx.Names);
        foreach (var f in files)
        {
            string source = Path.GetFileNameWithoutExtension(f);
            if (source.EndsWith(".sm90", StringComparison.Ordinal)) source = source[..^".sm90".Length]; // the compute_90 build of NAME.cu
            Assert.True(File.Exists(Path.Combine(dir, "cuda", source + ".cu")), $"Ptx/{f} has no source in cuda/");
            Assert.Equal(File.ReadAllText(Path.Combine(dir, "Ptx", f)), KernelPtx.Read(f));
        }
    }
}
