// `temper bench decode [--model DIR] [--dtype f32|bf16] [--prompt-len P] [--tokens N] [--profile]`: end-to-end
// batch-1 prefill and decode throughput, and the weight bytes a decoded token reads (every projection and
// the LM head) times tokens/s: the effective weight bandwidth, to hold against the device's (issue 10's
// roofline). --shape picks the random model's shape (default SmolLM-135M). --profile times every backend op of the decoding run (synchronised after each) and prints
// them by total time. Without --model it builds a seeded random model shaped like SmolLM-135M (30
// layers, C 576, F 1536, 9 heads / 3 KV heads, V 49152, tied embeddings). --graph decodes through the
// CUDA graph decoder instead (BenchDecodeGraph.cs). The speculative flags (SpeculativeFlags.cs) add a comparison:
// greedy plain and speculative decoding of the same prompt, timed alternately --repeats times each, with the
// acceptance and whether the tokens agree; --prompt-repeat N builds the prompt from one random block of N tokens
// repeated, a workload prompt lookup can hit (a random model's greedy output also tends to loop).
// --gguf FILE first writes the decoded model as GGUF (GgufExport; a random model with demo/base's tokenizer), so
// bench/peer/llamacpp's peer decodes the same weights.
using System.CommandLine;
using System.Diagnostics;
using Temper.Core;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Models.Text;
using Temper.Training.Diagnostics;

namespace Temper.Cli.Commands;

internal static class BenchCommand
{
    /// <summary>The decoder a bench runs: the --model folder (its LanguageModel returned for disposal), or
    /// seeded random weights in --dtype (or <paramref name="weightDType"/>) of the named shape (SmolLM-135M by
    /// default); and the words the bench prints for it.</summary>
    public static (Decoder Decoder, LanguageModel? Owned, string What) ModelOrRandom(ParseResult p, Option<string?> model, IBackend be, string shape = "smollm-135m",
        DType? weightDType = null)
    {
        weightDType ??= CliOptions.WeightDType(p);
        if (p.GetValue(model) is string dir)
        {
            var lm = LanguageModel.Load(dir, be, weightDType: weightDType);
            return (lm.Decoder, lm, dir);
        }
        var dt = weightDType ?? DType.F32;
        var cfg = BenchQLoraCommands.Shape(shape);
        return (new Decoder(cfg, ModelWeights.Random(cfg, be, seed: 1, dt, parallel: shape != "smollm-135m"), be), null, $"random {shape}-shaped model ({dt} weights)");
    }

    // bench decode --gguf: the same weights for llama.cpp to decode.
    private static void WriteGguf(string path, Decoder decoder, LanguageModel? lm, IBackend be)
    {
        var s = lm != null ? GgufExport.Save(path, lm, be)
            : GgufExport.Save(path, decoder.Config, decoder.Weights, be, new GgufExport.Source(null, DemoCommand.DefaultBase,
                HfTokenizer.Load(DemoCommand.DefaultBase), ChatTemplate.LoadFromModelDir(DemoCommand.DefaultBase)), "auto", "random " + decoder.Config.ModelType);
        Console.WriteLine($"wrote {path}: {s.Architecture}, {s.OutType}, {s.Bytes / 1048576.0:F1} MiB");
    }

    public static ModelConfig SmolLm135M => new()
    {
        ModelType = "llama", HiddenSize = 576, IntermediateSize = 1536, NumLayers = 30, NumHeads = 9, NumKvHeads = 3,
        HeadDim = 64, VocabSize = 49152, RmsNormEps = 1e-5f, TieWordEmbeddings = true, AttentionBias = false,
        OutputBias = false, MlpBias = false, MaxPositions = 8192, Rope = new RopeSpec("default", 100000),
    };

    // Plain and speculative greedy decoding of the prompt, alternated (plain first) so drift in a shared machine's
    // speed hits both; decode tokens/s = the n tokens after the first over (run time - the prefill time measured above).
    private static void CompareSpeculative(Generator gen, int[] prompt, GenerationOptions plain, Models.Speculative.SpeculativeOptions spec, double prefill, int repeats, IReadOnlyList<int> plainIds)
    {
        var fast = plain with { Speculative = spec };
        var warm = gen.Generate([prompt], fast)[0]; // warm-up of the verify and draft paths
        var plainRates = new List<double>();
        var fastRates = new List<double>();
        GenerationResult? last = warm;
        for (int i = 0; i < repeats; i++)
        {
            foreach (bool speculate in new[] { false, true })
            {
                var sw = Stopwatch.StartNew();
                var result = gen.Generate([prompt], speculate ? fast : plain)[0];
                double seconds = Math.Max(1e-9, sw.Elapsed.TotalSeconds - prefill);
                (speculate ? fastRates : plainRates).Add((result.GeneratedIds.Count - 1) / seconds);
                if (speculate) last = result;
            }
        }
        string Rates(List<double> r) => string.Join(", ", r.Select(x => x.ToString("F2", System.Globalization.CultureInfo.InvariantCulture)));
        double plainMedian = Median(plainRates), fastMedian = Median(fastRates);
        Console.WriteLine($"speculative ({spec.Method}, K {spec.NumTokens}{(spec.Draft == null ? $", n-gram {spec.NgramMax}..{spec.NgramMin}" : "")}): decode tokens/s, {repeats} alternating runs each: plain [{Rates(plainRates)}], speculative [{Rates(fastRates)}]");
        double pairMedian = Median(fastRates.Zip(plainRates, (f, q) => f / q).ToList());
        Console.WriteLine($"speculative: median {fastMedian:F2} tokens/s against plain {plainMedian:F2} = {fastMedian / plainMedian:F2}x; median of the {repeats} pairs' ratios {pairMedian:F2}x");
        Console.WriteLine(last.Speculation!.Describe(spec.Method));
        int same = 0;
        while (same < Math.Min(plainIds.Count, last.GeneratedIds.Count) && plainIds[same] == last.GeneratedIds[same]) same++;
        Console.WriteLine(same == plainIds.Count && same == last.GeneratedIds.Count
            ? $"tokens: the {same} speculative tokens are the plain greedy ones"
            : $"tokens: speculative and plain part at token {same} of {plainIds.Count} (a near-tie a {spec.NumTokens + 1}-token forward rounds differently, or a bug)");
    }

    private static double Median(List<double> xs)
    {
        var s = xs.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    public static Command Create()
    {
        var decode = new Command("decode", "Batch-1 prefill and decode tokens/s");
        var model = new Option<string?>("--model", "-m") { Description = "Model folder (default: random SmolLM-135M-shaped weights)" };
        var promptLen = new Option<int>("--prompt-len") { Description = "Prompt tokens", DefaultValueFactory = _ => 128 };
        var tokens = new Option<int>("--tokens") { Description = "Tokens to decode", DefaultValueFactory = _ => 64 };
        var shape = new Option<string>("--shape") { Description = "Without --model: smollm-135m, llama-3.2-1b, llama-3.1-8b or qwen3-0.6b", DefaultValueFactory = _ => "smollm-135m" };
        var profile = new Option<bool>("--profile") { Description = "Time every backend op of the decoding run (synchronised) and print the ops by total time" };
        var rows = new Option<int>("--rows") { Description = "With --graph: sequences decoded in lockstep (1 to 8)", DefaultValueFactory = _ => 1 };
        var graph = new Option<bool>("--graph") { Description = "Decode through Temper's CUDA kernels, each step one captured CUDA graph (greedy, bf16 weights, no ILGPU), against the device's bandwidth roofline" };
        var threads = CliOptions.Threads();
        var promptRepeat = new Option<int>("--prompt-repeat") { Description = "Build the prompt from one random block of N tokens repeated to --prompt-len (0 = all random)" };
        var repeats = new Option<int>("--repeats") { Description = "With speculation: plain and speculative runs, alternated, each timed this many times", DefaultValueFactory = _ => 3 };
        var gguf = new Option<string?>("--gguf") { Description = "First write the model decoded (a random one with demo/base's tokenizer) as this GGUF file in the stored type, for the llama.cpp peer (bench/peer/llamacpp)" };
        var speculative = new SpeculativeFlags();
        speculative.AddTo(decode);
        decode.Add(gguf);
        decode.Add(promptRepeat); decode.Add(repeats);
        decode.Add(model); decode.Add(promptLen); decode.Add(tokens); decode.Add(shape); decode.Add(profile); decode.Add(graph); decode.Add(rows); decode.Add(threads);
        decode.SetGuardedAction(p =>
        {
            if (p.GetValue(rows) != 1 && !p.GetValue(graph)) throw new TemperException("--rows is for --graph (the plain bench decodes batch 1)");
            bool speculating = speculative.Check(p) != null;
            if (speculating && p.GetValue(graph)) throw new TemperException("--graph cannot take --speculative: the CUDA graph decoder runs one token a step and its KV cache does not roll back");
            if (speculating && p.GetValue(profile)) throw new TemperException("--profile times one decoding run: leave out --speculative");
            if (p.GetValue(repeats) < 1) throw new TemperException($"--repeats must be >= 1 (got {p.GetValue(repeats)})");
            if (p.GetValue(promptRepeat) < 0 || p.GetValue(promptRepeat) > p.GetValue(promptLen)) throw new TemperException($"--prompt-repeat must be in 0..--prompt-len (got {p.GetValue(promptRepeat)})");
            if (p.GetValue(graph))
            {
                if (p.GetValue(promptLen) < 1 || p.GetValue(tokens) < 1) throw new TemperException("--prompt-len and --tokens must be >= 1");
                return BenchDecodeGraph.Run(p, model, p.GetValue(shape)!, p.GetValue(promptLen), p.GetValue(tokens), p.GetValue(threads), p.GetValue(profile), p.GetValue(rows));
            }
            var device = CliOptions.Backend(p, p.GetValue(threads));
            var profiler = p.GetValue(profile) ? new ProfilingBackend(device, (device as IlgpuBackend) is { } gpu ? gpu.Synchronize : null) : null;
            IBackend be = profiler ?? device;
            var (decoder, lm, what) = ModelOrRandom(p, model, be, p.GetValue(shape)!);
            using var owned = lm;
            if (p.GetValue(gguf) is string ggufPath) WriteGguf(ggufPath, decoder, lm, be);
            int pl = p.GetValue(promptLen), n = p.GetValue(tokens);
            if (pl < 1 || n < 1) throw new TemperException("--prompt-len and --tokens must be >= 1");
            var (spec, draft) = speculative.Read(p, decoder, lm?.Tokenizer, what);
            using var ownedDraft = draft;
            var rng = new Random(7);
            int block = p.GetValue(promptRepeat) == 0 ? pl : p.GetValue(promptRepeat);
            var blockIds = Enumerable.Range(0, block).Select(_ => rng.Next(decoder.Config.VocabSize)).ToArray();
            var prompt = Enumerable.Range(0, pl).Select(i => blockIds[i % block]).ToArray();
            var gen = new Generator(decoder);
            var opts = new GenerationOptions { MaxNewTokens = 1, IgnoreEos = true };
            gen.Generate([prompt], opts); // warm-up (JIT, page-in)
            var sw = Stopwatch.StartNew();
            gen.Generate([prompt], opts);
            double prefill = sw.Elapsed.TotalSeconds;
            profiler?.Reset();
            sw.Restart();
            var r = gen.Generate([prompt], opts with { MaxNewTokens = n + 1 })[0];
            double total = sw.Elapsed.TotalSeconds;
            double decodeS = Math.Max(1e-9, total - prefill);
            Console.WriteLine($"model: {what}");
            int threadCount = p.GetValue(threads) == 0 ? Environment.ProcessorCount : p.GetValue(threads);
            Console.WriteLine($"backend: {decoder.Backend.Name}, threads {threadCount}");
            Console.WriteLine($"prefill: {pl} tokens in {prefill * 1000:F1} ms = {pl / prefill:F1} tokens/s");
            double perSecond = (r.GeneratedIds.Count - 1) / decodeS;
            Console.WriteLine($"decode: {r.GeneratedIds.Count - 1} tokens in {decodeS * 1000:F1} ms = {perSecond:F2} tokens/s (batch 1)");
            long weightBytes = decoder.Weights.Projections.Append(decoder.Weights.LmHead).Sum(q => q.Nf4?.ByteCount ?? q.Weight.ByteCount);
            double effective = weightBytes * perSecond / 1e9;
            Console.WriteLine($"weights read per token: {weightBytes / 1e6:F1} MB; effective weight bandwidth {effective:F1} GB/s (hold against the device's for the roofline)");
            if (device is Temper.Kernels.Cpu.CpuBackend)
            {
                double host = HostBandwidth.ReadGBps(threadCount);
                Console.WriteLine($"host memory read bandwidth ({threadCount} thread{(threadCount == 1 ? "" : "s")}, 256 MiB, same process): {host:F1} GB/s; decode reaches {effective / host:P0} of that roofline ({host * 1e9 / weightBytes:F1} tokens/s)");
            }
            if (profiler != null)
            {
                Console.WriteLine("(a step below is one decoded token; the run's prefill of the prompt is included)");
                profiler.WriteTable(Console.Out, total, r.GeneratedIds.Count - 1);
            }
            if (spec != null) CompareSpeculative(gen, prompt, opts with { MaxNewTokens = n + 1 }, spec, prefill, p.GetValue(repeats), r.GeneratedIds);
            return 0;
        });
        return new Command("bench", "End-to-end benchmarks") { decode, BenchQLoraCommands.Train(), BenchQLoraCommands.Nf4(), ServeBenchCommand.Create(), ServeSweepCommand.Create(), BenchOpsCommand.Create(), BenchAttentionCommand.Create(), BenchGemvCommand.Create(), BenchGemmCommand.Create(), BenchJsonMaskCommand.Create() };
    }
}
