// Sampler.Next per token at a Llama-3 vocabulary (128,256 logits), beside its plain reference
// (SamplerReference: full LINQ sorts and fresh arrays, what the sampler was before it went linear).
using BenchmarkDotNet.Attributes;
using Temper.Models;
using Temper.Models.Reference;

namespace Temper.Bench;

public class SamplerBenchmarks
{
    [Params("greedy", "temperature 0.7", "top-p 0.9", "top-k 50", "top-k 50 top-p 0.9 min-p 0.05")]
    public string Options { get; set; } = "";

    private float[] _logits = [];
    private int[] _history = [];
    private Sampler _sampler = null!;
    private SamplerReference _reference = null!;

    [GlobalSetup]
    public void Setup()
    {
        const int vocab = 128_256;
        var rng = new Random(1);
        _logits = Enumerable.Range(0, vocab).Select(_ => (float)(rng.NextDouble() * 8 - 4 + (rng.Next(100) == 0 ? 6 : 0))).ToArray();
        _history = Enumerable.Range(0, 300).Select(_ => rng.Next(vocab)).ToArray();
        var o = Options switch
        {
            "greedy" => new SamplingOptions(),
            "temperature 0.7" => new SamplingOptions { Greedy = false, Temperature = 0.7f, Seed = 1 },
            "top-p 0.9" => new SamplingOptions { Greedy = false, Temperature = 0.7f, TopP = 0.9f, Seed = 1 },
            "top-k 50" => new SamplingOptions { Greedy = false, Temperature = 0.7f, TopK = 50, Seed = 1 },
            _ => new SamplingOptions { Greedy = false, Temperature = 0.7f, TopK = 50, TopP = 0.9f, MinP = 0.05f, Seed = 1 },
        };
        _sampler = new Sampler(o);
        _reference = new SamplerReference(o);
    }

    [Benchmark(Description = "Temper Sampler.Next")]
    public int Next() => _sampler.Next(_logits, _history, 200);

    [Benchmark(Baseline = true, Description = "reference (full sorts)")]
    public int Reference() => _reference.Next(_logits, _history, 200);
}
