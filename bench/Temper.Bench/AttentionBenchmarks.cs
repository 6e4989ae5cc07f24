// Causal attention forward, SmolLM-135M heads (H 9, Hkv 3, D 64) over a T-token prefill and a decode
// step against a T-token cache. GB/s counts q, k, v read and out written once; GFLOP/s counts the
// 4 D flops of each visible (query, key) pair.
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Temper.Core;
using Temper.Kernels.Cpu;

namespace Temper.Bench;

[Config(typeof(Config))]
public class AttentionBenchmarks : IDisposable
{
    private const int H = 9, Hkv = 3, D = 64;

    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddColumn(new ThroughputColumn("GB/s", c =>
            {
                var (b, tq, t) = Sizes(c);
                return 4.0 * b * (2 * tq * H * D + 2 * t * Hkv * D);
            }));
            AddColumn(new ThroughputColumn("GFLOP/s", c =>
            {
                var (b, tq, t) = Sizes(c);
                double pairs = tq == 1 ? t : t * (t + 1) / 2.0;
                return 4.0 * D * pairs * b * H;
            }));
        }

        private static (long B, long Tq, long T) Sizes(BenchmarkDotNet.Running.BenchmarkCase c)
        {
            long b = long.Parse(ThroughputColumn.Param(c, nameof(Batch)), System.Globalization.CultureInfo.InvariantCulture);
            long t = long.Parse(ThroughputColumn.Param(c, nameof(T)), System.Globalization.CultureInfo.InvariantCulture);
            bool decode = ThroughputColumn.Param(c, nameof(Decode)) == "True";
            return (b, decode ? 1 : t, t);
        }
    }

    [Params(1, 4)] public int Batch { get; set; }
    [Params(256)] public int T { get; set; }
    [Params(false, true)] public bool Decode { get; set; }

    private CpuBackend _backend = null!;
    private AttentionArgs _args;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        float[] R(int n) => Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        int tq = Decode ? 1 : T;
        _backend = new CpuBackend();
        var q = Tensor.FromFloats(new Shape(Batch, tq, H, D), R(Batch * tq * H * D));
        var k = Tensor.FromFloats(new Shape(Batch, T, Hkv, D), R(Batch * T * Hkv * D));
        var v = Tensor.FromFloats(new Shape(Batch, T, Hkv, D), R(Batch * T * Hkv * D));
        _args = new AttentionArgs(q, k, v, Tensor.Zeros(new Shape(Batch, tq, H, D)), T, Decode ? T - 1 : 0, 0.125f);
    }

    [Benchmark(Description = "Temper Attention")]
    public void Attention() => _backend.Attention(_args);

    [GlobalCleanup]
    public void Dispose()
    {
        _backend?.Dispose();
        GC.SuppressFinalize(this);
    }
}
