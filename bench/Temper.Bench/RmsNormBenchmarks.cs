// RMSNorm forward over x[N,C]: GB/s counts x read, weight read and y written once.
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Temper.Core;
using Temper.Kernels.Cpu;

namespace Temper.Bench;

[Config(typeof(Config))]
public class RmsNormBenchmarks : IDisposable
{
    private sealed class Config : ManualConfig
    {
        public Config() => AddColumn(new ThroughputColumn("GB/s", c =>
        {
            var s = ThroughputColumn.Param(c, nameof(Shape)).Split('x').Select(long.Parse).ToArray();
            return 4.0 * (2 * s[0] * s[1] + s[1]);
        }));
    }

    /// <summary>N x C.</summary>
    [Params("256x576", "4096x2048")]
    public string Shape { get; set; } = "";

    private CpuBackend _backend = null!;
    private Tensor _x = null!, _w = null!, _y = null!;

    [GlobalSetup]
    public void Setup()
    {
        var s = Shape.Split('x').Select(int.Parse).ToArray();
        var rng = new Random(1);
        _backend = new CpuBackend();
        _x = Tensor.FromFloats(new Shape(s[0], s[1]), Enumerable.Range(0, s[0] * s[1]).Select(_ => (float)rng.NextDouble()).ToArray());
        _w = Tensor.FromFloats(new Shape(s[1]), Enumerable.Range(0, s[1]).Select(_ => (float)rng.NextDouble()).ToArray());
        _y = Tensor.Zeros(new Shape(s[0], s[1]));
    }

    [Benchmark(Description = "Temper RmsNorm")]
    public void RmsNorm() => _backend.RmsNorm(_x, _w, 1e-5f, _y);

    [GlobalCleanup]
    public void Dispose()
    {
        _backend?.Dispose();
        GC.SuppressFinalize(this);
    }
}
