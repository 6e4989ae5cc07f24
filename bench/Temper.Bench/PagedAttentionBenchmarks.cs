// Paged attention (IBackend.PagedAttention on the CPU backend) over f32 and bf16 KV caches, SmolLM-135M heads (H 9, Hkv 3,
// D 64), blocks of 16 in a shuffled table: a decode step of 16 sequences of T keys each (one row each), a batch-1 decode step
// (one sequence, one row), a speculative verify of the 16 sequences (5 rows each, the last seeing T keys), and a prefill chunk
// of 128 rows of one sequence ending at key T. GB/s counts the cache bytes a pass reads once (K and V of every (sequence, kv head)
// in its dtype) plus q read and out written: the bytes the bf16 cache halves.
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using Temper.Core;
using Temper.Kernels.Cpu;

namespace Temper.Bench;

[Config(typeof(Config))]
public class PagedAttentionBenchmarks
{
    private const int H = 9, Hkv = 3, D = 64, BlockSize = 16, Sequences = 16, ChunkRows = 128, VerifyRows = 5;

    public enum Step { Decode, Single, Verify, Chunk }

    private sealed class Config : ManualConfig
    {
        public Config() => AddColumn(new ThroughputColumn("GB/s", c =>
        {
            long t = long.Parse(ThroughputColumn.Param(c, nameof(T)), System.Globalization.CultureInfo.InvariantCulture);
            var step = Enum.Parse<Step>(ThroughputColumn.Param(c, nameof(Rows)));
            int bytes = ThroughputColumn.Param(c, nameof(Cache)) == "BF16" ? 2 : 4;
            long seqs = step is Step.Chunk or Step.Single ? 1 : Sequences, rows = step switch { Step.Decode => Sequences, Step.Single => 1, Step.Verify => Sequences * VerifyRows, _ => ChunkRows };
            return seqs * t * 2.0 * Hkv * D * bytes + rows * 2.0 * H * D * 4;
        }));
    }

    [Params(512, 2048)] public int T { get; set; }
    [Params(Step.Decode, Step.Single, Step.Verify, Step.Chunk)] public Step Rows { get; set; }
    [Params(DType.F32, DType.BF16)] public DType Cache { get; set; }

    private CpuBackend _backend = null!;
    private PagedAttentionArgs _args;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(1);
        int seqs = Rows is Step.Chunk or Step.Single ? 1 : Sequences, per = Rows switch { Step.Decode or Step.Single => 1, Step.Verify => VerifyRows, _ => ChunkRows }, rows = seqs * per, maxBlocks = (T + BlockSize - 1) / BlockSize, blocks = seqs * maxBlocks;
        float[] R(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var order = Enumerable.Range(0, blocks).ToArray();
        rng.Shuffle(order);
        var cacheShape = new Shape(blocks, BlockSize, Hkv, D);
        Tensor CacheTensor() => Tensor.FromFloatsAs(cacheShape, R(cacheShape.Elements), Cache);
        var rowSeq = Enumerable.Range(0, rows).Select(r => r / per).ToArray();
        var rowLen = Enumerable.Range(0, rows).Select(r => T - per + r % per + 1).ToArray();
        _backend = new CpuBackend();
        _args = new PagedAttentionArgs(Tensor.FromFloats(new Shape(rows, H, D), R((long)rows * H * D)), CacheTensor(), CacheTensor(), Tensor.Zeros(new Shape(rows, H, D)),
            order, maxBlocks, rowSeq, rowLen, 0.125f);
    }

    [Benchmark]
    public void PagedAttention() => _backend.PagedAttention(_args);
}
