// GEMM: Temper's Linear (y[N,M] = x[N,K] W[M,K]^T, f32 and bf16 weights) against OpenBLAS cblas_sgemm
// on the same shapes in the same run, both on all cores and both on one. GFLOP/s = 2 N K M / mean time; GFLOP/s@Min uses
// the fastest iteration instead (the figure other processes on a shared machine disturb least).
// Shapes: 2048^3, and SmolLM-135M's (C 576, MLP 1536, vocab 49152) prefill of 256 tokens and decode.
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using Temper.Core;
using Temper.Kernels.Cpu;

namespace Temper.Bench;

[Config(typeof(Config))]
public unsafe class GemmBenchmarks : IDisposable
{
    private sealed class Config : ManualConfig
    {
        public Config()
        {
            AddColumn(StatisticColumn.Min);
            AddColumn(new ThroughputColumn("GFLOP/s", Flops));
            AddColumn(new ThroughputColumn("GFLOP/s@Min", Flops, fastest: true));
        }

        private static double Flops(BenchmarkDotNet.Running.BenchmarkCase c)
        {
            var s = ThroughputColumn.Param(c, nameof(Shape)).Split('x').Select(long.Parse).ToArray();
            return 2.0 * s[0] * s[1] * s[2];
        }
    }

    /// <summary>N x K x M.</summary>
    [Params("2048x2048x2048", "256x576x1536", "256x1536x576", "256x576x576", "1x576x1536", "1x576x49152")]
    public string Shape { get; set; } = "";

    /// <summary>Threads for both sides: every logical processor, and 1 (kernel against kernel).</summary>
    [ParamsSource(nameof(ThreadCounts))]
    public int Threads { get; set; }

    public static IEnumerable<int> ThreadCounts => new[] { Environment.ProcessorCount, 1 }.Distinct();

    private int _n, _k, _m;
    private CpuBackend _backend = null!;
    private Tensor _x = null!, _w = null!, _wBf16 = null!, _y = null!;

    [GlobalSetup]
    public void Setup()
    {
        var s = Shape.Split('x').Select(int.Parse).ToArray();
        (_n, _k, _m) = (s[0], s[1], s[2]);
        _backend = new CpuBackend(Threads);
        OpenBlas.SetThreads(Threads);
        var rng = new Random(1);
        _x = Tensor.FromFloats(new Shape(_n, _k), Enumerable.Range(0, _n * _k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray());
        var w = Enumerable.Range(0, _m * _k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _w = Tensor.FromFloats(new Shape(_m, _k), w);
        var wb = new ushort[w.Length];
        BFloat16.FromSingle(w, wb);
        _wBf16 = Tensor.FromArray<ushort>(new Shape(_m, _k), wb, DType.BF16);
        _y = Tensor.Zeros(new Shape(_n, _m));
        Console.WriteLine($"// threads: Temper {_backend.Threads}; peer: {OpenBlas.Describe()}");
    }

    [Benchmark(Baseline = true, Description = "OpenBLAS sgemm")]
    public void OpenBlasSgemm()
    {
        fixed (float* x = _x.Floats) fixed (float* w = _w.Floats) fixed (float* y = _y.Floats)
            OpenBlas.Sgemm(OpenBlas.RowMajor, OpenBlas.NoTrans, OpenBlas.Trans, _n, _m, _k, 1f, x, _k, w, _k, 0f, y, _m);
    }

    [Benchmark(Description = "Temper Linear f32")]
    public void TemperLinear() => _backend.Linear(_x, _w, null, _y);

    [Benchmark(Description = "Temper Linear bf16 W")]
    public void TemperLinearBf16() => _backend.Linear(_x, _wBf16, null, _y);

    [GlobalCleanup]
    public void Dispose()
    {
        _backend?.Dispose();
        GC.SuppressFinalize(this);
    }
}
