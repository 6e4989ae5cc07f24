// CudaDecodeGraph (kernels/Temper.Kernels.Cuda, built from a model by Temper.Models' GraphDecoding)
// against the CPU decoder on the same bf16 weights: a tiny random Qwen2-shaped model (q/k/v biases, made
// non-zero, GQA 2:1, head dim 64, untied LM head), two rows (and eight) with prompts of different lengths fed through
// the graph one token a step. After every step each row's logits match the CPU decoder's for the same
// tokens (fed one at a time through its own KV cache) within 1e-4 of their largest magnitude, and the
// token the graph chose is the argmax of its logits, and the CPU's unless the CPU's top two are closer
// than that tolerance. Generate's tokens equal the CPU Generator's greedy ones and stop at a stop id.
// GraphGenerator (one row, Generator's semantics) gives the CPU Generator's tokens greedy (device argmax),
// greedy with a repetition penalty and sampled (both picked on the host from the graph's logits), and
// stops at an EOS id. Profile's steps (a second graph with timing events) decode as plain ones do. Prefill
// (the prompt's first tokens through the GEMM, flash attention and fused kernels, in chunks) leaves caches
// from which the following steps' logits match the CPU decoder's within the bf16 bound (2e-2 of the largest).
// The step and prefill checks run again on the same shape with Qwen3's q/k head norms (random, away from 1),
// and the step check with those and YaRN RoPE scaling (its tables' attention factor, 1.14, on q and k). The step and
// profile checks run again with DependentLaunch (each kernel launched to overlap the one before; on the emulator every
// thread of such a launch must wait for it, or the launch fails).
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cuda;
using Temper.Models;

namespace Temper.Cuda.Tests;

[Trait("Kernels", "cuda")]
public class CudaDecodeGraphChecks
{
    private static readonly ModelConfig Tiny = new()
    {
        ModelType = "qwen2", HiddenSize = 128, IntermediateSize = 256, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 64,
        VocabSize = 320, RmsNormEps = 1e-6f, TieWordEmbeddings = false, AttentionBias = true, OutputBias = false, MlpBias = false,
        MaxPositions = 4096, Rope = new RopeSpec("default", 10000), InitializerRange = 0.08f,
    };

    // The same shape as Qwen3 has it: q and k heads RMS-normed before RoPE, no biases.
    private static readonly ModelConfig Tiny3 = Tiny with { ModelType = "qwen3", AttentionBias = false, QkNorm = true };

    // Qwen3 with YaRN: factor 4 over 64 original positions puts the ramp inside head dim 64.
    private static readonly ModelConfig Tiny3Yarn = Tiny3 with { Rope = new RopeSpec("yarn", 10000, 4, OriginalMaxPositions: 64) };

    private static ModelWeights Weights(CpuBackend cpu, ModelConfig? cfg = null)
    {
        var w = ModelWeights.Random(cfg ?? Tiny, cpu, seed: 7, DType.BF16);
        var r = new Random(3);
        foreach (var l in w.Layers)
        {
            foreach (var b in new[] { l.Q.Bias, l.K.Bias, l.V.Bias }) if (b != null) foreach (ref float v in b.Floats) v = (float)(r.NextDouble() - 0.5);
            foreach (var norm in new[] { l.InputNorm, l.QNorm, l.KNorm }) if (norm != null) foreach (ref float v in norm.Floats) v = 0.5f + (float)r.NextDouble();
        }
        return w;
    }

    [Theory]
    [InlineData(1, 12, false)] // one row: RoPE and the cache append in the qkv GEMV's epilogue (with Qwen2's q, k, v biases)
    [InlineData(2, 12, false)]
    [InlineData(8, 6, false)] // the GEMVs' widest row count
    [InlineData(2, 12, true)] // Qwen3's head norms
    [InlineData(2, 12, true, true)] // and YaRN scaling
    [InlineData(1, 12, false, false, true)] // each kernel launched to overlap the one before (DependentLaunch)
    [InlineData(2, 12, true, false, true)]  // the same with the separate RoPE kernel
    public void Every_step_matches_the_cpu_decoder(int rows, int capacity, bool qwen3, bool yarn = false, bool dependent = false)
    {
        using var device = Gpu.OpenForKernels();
        if (dependent) SkipUnlessDependentLaunch(device);
        var cpu = new CpuBackend(1);
        var Tiny = yarn ? Tiny3Yarn : qwen3 ? Tiny3 : CudaDecodeGraphChecks.Tiny;
        using var weights = Weights(cpu, Tiny);
        int[][] prompts = [.. Enumerable.Range(0, rows).Select(r => Enumerable.Range(0, 1 + (r * 2 + 2) % 5).Select(i => (r * 37 + i * 11 + 5) % Tiny.VocabSize).ToArray())];
        using var graph = GraphDecoding.Build(device, Tiny, weights, prompts.Length, capacity, dependent);
        Assert.Equal(dependent, graph.DependentLaunch);
        var decoder = new Decoder(Tiny, weights, cpu);
        var caches = prompts.Select(_ => new KvCache(Tiny, cpu, 1, capacity)).ToArray();
        graph.Start(prompts);
        int v = Tiny.VocabSize;
        for (int step = 0; step < capacity - 1; step++)
        {
            var tokensBefore = graph.Tokens();
            graph.Step();
            var logits = graph.Logits();
            var tokens = graph.Tokens();
            for (int r = 0; r < prompts.Length; r++)
            {
                Assert.Equal(tokensBefore[r], tokens[r][..(step + 1)]);
                using var reference = decoder.Forward([tokensBefore[r][step]], [step], [], 1, caches[r], allPositions: false);
                var want = reference.Floats;
                var got = logits.AsSpan(r * v, v);
                float max = 0;
                foreach (float x in want) max = Math.Max(max, Math.Abs(x));
                float tol = 1e-4f * max;
                for (int i = 0; i < v; i++)
                    Assert.True(Math.Abs(got[i] - want[i]) <= tol, $"row {r} step {step} logit {i}: graph {got[i]}, cpu {want[i]} (tolerance {tol})");
                int next = tokens[r][step + 1];
                if (step + 1 < prompts[r].Length)
                {
                    Assert.Equal(prompts[r][step + 1], next);
                    continue;
                }
                Assert.Equal(ArgMax(got), next);
                var sorted = want.ToArray().Select((x, i) => (x, i)).OrderByDescending(p => p.x).ToArray();
                if (sorted[0].x - sorted[1].x > tol) Assert.Equal(sorted[0].i, next);
            }
        }
        foreach (var c in caches) c.Dispose();
    }

    [Fact]
    public void Generate_gives_the_cpu_generators_greedy_tokens_and_stops_at_a_stop_id()
    {
        using var device = Gpu.OpenForKernels();
        var cpu = new CpuBackend(1);
        using var weights = Weights(cpu);
        int[][] prompts = [[11, 12, 13, 14]];
        using var graph = GraphDecoding.Build(device, Tiny, weights, 1, 16);
        var generated = graph.Generate(prompts, maxNew: 8, syncEvery: 3);
        var want = new Generator(new Decoder(Tiny, weights, cpu)).Generate([prompts[0]], new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true });
        Assert.Equal(want[0].GeneratedIds, generated[0]);

        int stop = generated[0][2];
        var stopped = graph.Generate(prompts, maxNew: 8, stopIds: [stop], syncEvery: 2);
        Assert.Equal(generated[0][..(Array.IndexOf(generated[0], stop) + 1)], stopped[0]);
        Assert.Equal(stop, stopped[0][^1]);
    }

    [Theory]
    [InlineData(true, 1f)]
    [InlineData(true, 1.3f)]
    [InlineData(false, 1f)]
    public void Graph_generator_gives_the_cpu_generators_tokens(bool greedy, float repetitionPenalty)
    {
        using var device = Gpu.OpenForKernels();
        var cpu = new CpuBackend(1);
        using var weights = Weights(cpu);
        int[] prompt = [7, 7, 30, 2];
        using var graph = GraphDecoding.Build(device, Tiny, weights, 1, 12);
        var o = new GenerationOptions
        {
            MaxNewTokens = 7, IgnoreEos = true,
            Sampling = new SamplingOptions { Greedy = greedy, Temperature = 0.7f, TopK = 40, RepetitionPenalty = repetitionPenalty, Seed = 5 },
        };
        var streamed = new List<int>();
        var got = new GraphGenerator(graph).Generate(prompt, o, (_, id) => streamed.Add(id));
        var want = new Generator(new Decoder(Tiny, weights, cpu)).Generate([prompt], o)[0];
        Assert.Equal(want.GeneratedIds, got.GeneratedIds);
        Assert.Equal(got.GeneratedIds, streamed);
        Assert.Equal(FinishReason.Length, got.Finish);

        int eos = got.GeneratedIds[3];
        var stopped = new GraphGenerator(graph).Generate(prompt, o with { IgnoreEos = false, EosIds = [eos] });
        Assert.Equal(FinishReason.Eos, stopped.Finish);
        Assert.Equal(got.GeneratedIds.Take(got.GeneratedIds.ToList().IndexOf(eos) + 1), stopped.GeneratedIds);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // the profile's graph does not overlap; the plain one's steps after it still do
    public void Profiled_steps_decode_like_plain_ones_and_name_every_kernel(bool dependent)
    {
        using var device = Gpu.OpenForKernels();
        if (dependent) SkipUnlessDependentLaunch(device);
        var cpu = new CpuBackend(1);
        using var weights = Weights(cpu);
        int[][] prompt = [[4, 8, 15]];
        using var graph = GraphDecoding.Build(device, Tiny, weights, 1, 10, dependent);
        graph.Start(prompt);
        graph.Step(6);
        var plain = graph.Tokens()[0];

        graph.Start(prompt);
        graph.Step(2);
        var parts = graph.Profile(4);
        Assert.Equal(6, graph.Position);
        Assert.Equal(plain, graph.Tokens()[0]);
        int layers = Tiny.NumLayers;
        // One row: the qkv GEMV does RoPE and the cache append (no separate part for them).
        Assert.Equal([1, layers, layers, layers, layers, layers, 1, 1], parts.Select(p => p.Calls));
        Assert.StartsWith("q, cache = RoPE", parts[1].Part);
        Assert.StartsWith("attention", parts[2].Part);
        Assert.All(parts, p => Assert.True(p.Ms >= 0, $"{p.Part}: {p.Ms} ms"));
        Assert.Throws<ArgumentOutOfRangeException>(() => graph.Profile(4)); // 6 + 4 positions pass the capacity of 10
        graph.Start(prompt);
        graph.Step(6);
        Assert.Equal(plain, graph.Tokens()[0]);
    }

    // Programmatic dependent launch needs compute capability 9.0 (the kernels' compute_90 builds); the emulator runs them.
    private static void SkipUnlessDependentLaunch(Temper.Cuda.CudaDevice device)
    {
        if (!device.IsEmulated && device.ComputeCapability.Major < 9) Assert.Skip($"dependent launch needs compute capability 9.0; {device.Name} is {device.ComputeCapability}");
    }

    [Theory]
    [InlineData(70, false)]  // one chunk
    [InlineData(260, false)] // two chunks of up to 256 tokens
    [InlineData(70, true)]   // Qwen3's head norms
    public void Prefill_fills_the_caches_as_the_cpu_decoder_does(int promptLength, bool qwen3)
    {
        using var device = Gpu.OpenForKernels();
        var cpu = new CpuBackend(1);
        var Tiny = qwen3 ? Tiny3 : CudaDecodeGraphChecks.Tiny;
        using var weights = Weights(cpu, Tiny);
        int capacity = promptLength + 6;
        int[][] prompts = [[.. Enumerable.Range(0, promptLength).Select(i => (i * 7 + 3) % Tiny.VocabSize)], [.. Enumerable.Range(0, promptLength + 2).Select(i => (i * 13 + 1) % Tiny.VocabSize)]];
        using var graph = GraphDecoding.Build(device, Tiny, weights, prompts.Length, capacity);
        graph.Start(prompts);
        graph.Prefill();
        int n = promptLength - 1;
        Assert.Equal(n, graph.Position);
        var decoder = new Decoder(Tiny, weights, cpu);
        int v = Tiny.VocabSize;
        for (int r = 0; r < prompts.Length; r++)
        {
            using var cache = new KvCache(Tiny, cpu, 1, capacity);
            var ids = prompts[r][..n];
            decoder.Forward(ids, [.. Enumerable.Range(0, n)], [], 1, cache, allPositions: false).Dispose();
            graph.Start(prompts);
            graph.Prefill();
            for (int step = n; step < n + 4; step++)
            {
                graph.Step();
                var tokens = graph.Tokens()[r];
                using var reference = decoder.Forward([tokens[step]], [step], [], 1, cache, allPositions: false);
                var want = reference.Floats;
                var got = graph.Logits().AsSpan(r * v, v);
                float max = 0;
                foreach (float x in want) max = Math.Max(max, Math.Abs(x));
                // The prefill's products and attention round their inputs to bf16 (tensor cores): the bf16 bound.
                for (int i = 0; i < v; i++)
                    Assert.True(Math.Abs(got[i] - want[i]) <= 2e-2f * max, $"row {r} step {step} logit {i}: graph {got[i]}, cpu {want[i]}");
            }
        }
    }

    [Fact]
    public void Graph_generator_prefills_a_long_prompt()
    {
        using var device = Gpu.OpenForKernels();
        var cpu = new CpuBackend(1);
        using var weights = Weights(cpu);
        int[] prompt = [.. Enumerable.Range(0, GraphGenerator.PrefillFrom + 6).Select(i => (i * 5 + 2) % Tiny.VocabSize)];
        using var graph = GraphDecoding.Build(device, Tiny, weights, 1, prompt.Length + 3);
        var r = new GraphGenerator(graph).Generate(prompt, new GenerationOptions { MaxNewTokens = 3, IgnoreEos = true });
        Assert.Equal(3, r.GeneratedIds.Count);
        Assert.Equal(prompt.Length + 2, graph.Position); // prefilled to prompt - 1, then one step a new token
        Assert.Equal([.. prompt, .. r.GeneratedIds], graph.Tokens()[0]);
    }

    [Fact]
    public void Bad_input_is_refused_with_a_message()
    {
        using var device = Gpu.OpenForKernels();
        var cpu = new CpuBackend(1);
        using var weights = Weights(cpu);
        using var graph = GraphDecoding.Build(device, Tiny, weights, 1, 8);
        Assert.Contains("outside the vocabulary", Assert.Throws<ArgumentException>(() => graph.Start([[1, Tiny.VocabSize]])).Message);
        Assert.Contains("1 to 8 fit", Assert.Throws<ArgumentException>(() => graph.Start([new int[9]])).Message);
        Assert.Contains("capacity", Assert.Throws<ArgumentOutOfRangeException>(() => graph.Generate([[1, 2, 3]], maxNew: 6)).Message);
        Assert.Contains("2 prompts", Assert.Throws<ArgumentException>(() => graph.Start([[1], [2]])).Message);
        Assert.Contains("head dim", Assert.Throws<ArgumentException>(() => new CudaDecodeGraph(device, GraphDecoding.Shape(Tiny with { HeadDim = 32, NumHeads = 8, NumKvHeads = 4 }), 1, 8)).Message);
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }
}
