// `temper bench decode [--model DIR] [--dtype f32|bf16] [--prompt-len P] [--tokens N] [--profile]`: end-to-end
// batch-1 prefill and decode throughput, and the weight bytes a decoded token reads (every projection and
// the LM head) times tokens/s: the effective weight bandwidth, to hold against the device's (issue 10's
// roofline). --shape picks the random model's shape (default SmolLM-135M). --profile times every backend op of the decoding run (synchronised after each) and prints
// them by total time. Without --model it builds a seeded random model shaped like SmolLM-135M (30
// layers, C 576, F 1536, 9 heads / 3 KV heads, V 49152, tied embeddings). --graph decodes through the
// CUDA graph decoder instead (BenchDecodeGraph.cs).
using System.CommandLine;
using System.Diagnostics;
using Temper.Core;
using Temper.Kernels.Ilgpu;
using Temper.Models;
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

    public static ModelConfig SmolLm135M => new()
    {
        ModelType = "llama", HiddenSize = 576, IntermediateSize = 1536, NumLayers = 30, NumHeads = 9, NumKvHeads = 3,
        HeadDim = 64, VocabSize = 49152, RmsNormEps = 1e-5f, TieWordEmbeddings = true, AttentionBias = false,
        OutputBias = false, MlpBias = false, MaxPositions = 8192, Rope = new RopeSpec("default", 100000),
    };

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
        decode.Add(model); decode.Add(promptLen); decode.Add(tokens); decode.Add(shape); decode.Add(profile); decode.Add(graph); decode.Add(rows); decode.Add(threads);
        decode.SetGuardedAction(p =>
        {
            if (p.GetValue(rows) != 1 && !p.GetValue(graph)) throw new TemperException("--rows is for --graph (the plain bench decodes batch 1)");
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
            int pl = p.GetValue(promptLen), n = p.GetValue(tokens);
            if (pl < 1 || n < 1) throw new TemperException("--prompt-len and --tokens must be >= 1");
            var rng = new Random(7);
            var prompt = Enumerable.Range(0, pl).Select(_ => rng.Next(decoder.Config.VocabSize)).ToArray();
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
            return 0;
        });
        return new Command("bench", "End-to-end benchmarks") { decode, BenchQLoraCommands.Train(), BenchQLoraCommands.Nf4(), ServeBenchCommand.Create(), ServeSweepCommand.Create(), BenchOpsCommand.Create(), BenchAttentionCommand.Create(), BenchGemvCommand.Create(), BenchGemmCommand.Create(), BenchJsonMaskCommand.Create() };
    }
}
