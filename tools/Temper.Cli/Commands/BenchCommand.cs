// `temper bench decode [--model DIR] [--dtype f32|bf16] [--prompt-len P] [--tokens N]`: end-to-end
// batch-1 prefill and decode throughput. Without --model it builds a seeded random model shaped like
// SmolLM-135M (30 layers, C 576, F 1536, 9 heads / 3 KV heads, V 49152, tied embeddings).
using System.CommandLine;
using System.Diagnostics;
using Temper.Core;
using Temper.Models;

namespace Temper.Cli.Commands;

internal static class BenchCommand
{
    /// <summary>The decoder a bench runs: the --model folder (its LanguageModel returned for disposal), or
    /// seeded random SmolLM-135M-shaped weights in --dtype; and the words the bench prints for it.</summary>
    public static (Decoder Decoder, LanguageModel? Owned, string What) ModelOrRandom(ParseResult p, Option<string?> model, IBackend be)
    {
        if (p.GetValue(model) is string dir)
        {
            var lm = LanguageModel.Load(dir, be, weightDType: CliOptions.WeightDType(p));
            return (lm.Decoder, lm, dir);
        }
        var dt = CliOptions.WeightDType(p) ?? DType.F32;
        return (new Decoder(SmolLm135M, ModelWeights.Random(SmolLm135M, be, seed: 1, dt), be), null, $"random SmolLM-135M-shaped model ({dt} weights)");
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
        var threads = CliOptions.Threads();
        decode.Add(model); decode.Add(promptLen); decode.Add(tokens); decode.Add(threads);
        decode.SetGuardedAction(p =>
        {
            var be = CliOptions.Backend(p, p.GetValue(threads));
            var (decoder, lm, what) = ModelOrRandom(p, model, be);
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
            sw.Restart();
            var r = gen.Generate([prompt], opts with { MaxNewTokens = n + 1 })[0];
            double total = sw.Elapsed.TotalSeconds;
            double decodeS = Math.Max(1e-9, total - prefill);
            Console.WriteLine($"model: {what}");
            Console.WriteLine($"backend: {decoder.Backend.Name}, threads {(p.GetValue(threads) == 0 ? Environment.ProcessorCount : p.GetValue(threads))}");
            Console.WriteLine($"prefill: {pl} tokens in {prefill * 1000:F1} ms = {pl / prefill:F1} tokens/s");
            Console.WriteLine($"decode: {r.GeneratedIds.Count - 1} tokens in {decodeS * 1000:F1} ms = {(r.GeneratedIds.Count - 1) / decodeS:F2} tokens/s (batch 1)");
            return 0;
        });
        return new Command("bench", "End-to-end benchmarks") { decode, BenchQLoraCommands.Train(), BenchQLoraCommands.Nf4(), ServeBenchCommand.Create(), ServeSweepCommand.Create(), BenchOpsCommand.Create(), BenchAttentionCommand.Create() };
    }
}
