// QLoRA benchmarks, for the GPU machine (they run anywhere; CPU figures are only a smoke test):
//   temper bench train [--qlora] [--use-dora] [--shape smollm-135m|llama-3.2-1b|llama-3.1-8b] [--layers N] [--lora-r 16]
//       [--batch-size 1] [--seq-len 2048] [--steps 3] [--dtype bf16] [--device cuda] [--profile]
//     LoRA (or QLoRA) SFT steps on a seeded random model of that shape (--layers overrides its layer
//     count): all seven projections adapted, AdamW; prints tokens/s of the timed steps (after one
//     warm-up) and the memory plan beside the backend's measured peak. Run it with and without --qlora
//     (bf16) for the PERF.md pair. --profile wraps the backend in ProfilingBackend (a device sync after
//     every op, so the steps run slower) and prints a table of ops by total time after the timed steps.
//   temper bench nf4 [--rows 14336] [--cols 4096] [--reps 20] [--device cuda]
//     NF4 dequantisation of one [rows, cols] weight (reads 0.5 + 1/64 + ... bytes, writes 4 bytes per
//     weight) against a device copy of the f32 matrix (CopyRows) measured in the same run, in GB/s.
using System.CommandLine;
using System.Diagnostics;
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Diagnostics;
using Temper.Training.Lora;
using Temper.Training.Optim;

namespace Temper.Cli.Commands;

internal static class BenchQLoraCommands
{
    public static ModelConfig Shape(string name) => name switch
    {
        "smollm-135m" => BenchCommand.SmolLm135M,
        "llama-3.2-1b" => new ModelConfig
        {
            ModelType = "llama", HiddenSize = 2048, IntermediateSize = 8192, NumLayers = 16, NumHeads = 32, NumKvHeads = 8,
            HeadDim = 64, VocabSize = 128256, RmsNormEps = 1e-5f, TieWordEmbeddings = true, AttentionBias = false,
            OutputBias = false, MlpBias = false, MaxPositions = 131072, Rope = new RopeSpec("llama3", 500000, 32, 1, 4, 8192),
        },
        "llama-3.1-8b" => new ModelConfig
        {
            ModelType = "llama", HiddenSize = 4096, IntermediateSize = 14336, NumLayers = 32, NumHeads = 32, NumKvHeads = 8,
            HeadDim = 128, VocabSize = 128256, RmsNormEps = 1e-5f, TieWordEmbeddings = false, AttentionBias = false,
            OutputBias = false, MlpBias = false, MaxPositions = 131072, Rope = new RopeSpec("llama3", 500000, 8, 1, 4, 8192),
        },
        "qwen3-0.6b" => new ModelConfig
        {
            ModelType = "qwen3", HiddenSize = 1024, IntermediateSize = 3072, NumLayers = 28, NumHeads = 16, NumKvHeads = 8,
            HeadDim = 128, VocabSize = 151936, RmsNormEps = 1e-6f, TieWordEmbeddings = true, AttentionBias = false,
            OutputBias = false, MlpBias = false, QkNorm = true, MaxPositions = 40960, Rope = new RopeSpec("default", 1000000),
        },
        _ => throw new TemperException($"--shape must be smollm-135m, llama-3.2-1b, llama-3.1-8b or qwen3-0.6b, not '{name}'"),
    };

    public static Command Train()
    {
        var qlora = CliOptions.QLora();
        var dora = new Option<bool>("--use-dora") { Description = "Train DoRA adapters (a magnitude per output row) instead of plain LoRA" };
        var shape = new Option<string>("--shape") { Description = "smollm-135m, llama-3.2-1b, llama-3.1-8b or qwen3-0.6b", DefaultValueFactory = _ => "smollm-135m" };
        var rank = new Option<int>("--lora-r") { Description = "LoRA rank", DefaultValueFactory = _ => 16 };
        var batch = new Option<int>("--batch-size") { Description = "Rows per step", DefaultValueFactory = _ => 1 };
        var seq = new Option<int>("--seq-len") { Description = "Tokens per row", DefaultValueFactory = _ => 2048 };
        var steps = new Option<int>("--steps") { Description = "Timed steps (after one warm-up step)", DefaultValueFactory = _ => 3 };
        var layers = new Option<int?>("--layers") { Description = "Layer count instead of the shape's (a smaller model of the same widths)" };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "Recompute each layer's activations in backward (less memory, about a third more compute)" };
        var profile = new Option<bool>("--profile") { Description = "Time every backend op (synchronised) and print the ops by total time" };
        var threads = CliOptions.Threads();
        var cmd = new Command("train", "LoRA / QLoRA SFT steps/s and peak memory on a random model of a given shape") { qlora, dora, shape, layers, rank, batch, seq, steps, checkpointing, profile, threads };
        cmd.SetGuardedAction(p =>
        {
            var cfg = Shape(p.GetValue(shape)!);
            if (p.GetValue(layers) is int l) cfg = l >= 1 ? cfg with { NumLayers = l } : throw new TemperException("--layers must be >= 1");
            int b = p.GetValue(batch), t = p.GetValue(seq), n = p.GetValue(steps), r = p.GetValue(rank);
            if (b < 1 || t < 2 || n < 1 || r < 1) throw new TemperException("--batch-size, --lora-r and --steps must be >= 1, --seq-len >= 2");
            bool q = p.GetValue(qlora);
            var dtype = CliOptions.WeightDType(p) ?? DType.F32;
            using var device = CliOptions.Backend(p, p.GetValue(threads));
            var gpu = device as IlgpuBackend;
            var profiler = p.GetValue(profile) ? new ProfilingBackend(device, gpu == null ? null : gpu.Synchronize) : null;
            IBackend be = profiler ?? device; // every op of the model, LoRA and optimizer goes through be
            var build = Stopwatch.StartNew();
            using var weights = ModelWeights.Random(cfg, be, seed: 1, dtype, nf4: q, parallel: true);
            var lora = new LoraConfig(r, 2 * r, false, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], null, 0) { UseDora = p.GetValue(dora) };
            LoraInit.Attach(weights, lora, be, seed: 1);
            using var ps = TrainableParameters.Lora(weights, be);
            using var opt = new AdamW(ps, be, new AdamWOptions());
            var bp = new DecoderBackprop(new Decoder(cfg, weights, be)) { GradientCheckpointing = p.GetValue(checkpointing) };
            var rng = new Random(3);
            var ids = Enumerable.Range(0, b * t).Select(_ => rng.Next(cfg.VocabSize)).ToArray();
            Console.WriteLine($"model: random {p.GetValue(shape)}-shaped, {cfg.NumLayers} layers, {(q ? "NF4 projections (QLoRA)" : dtype + " weights (LoRA)")}{(lora.UseDora ? ", DoRA" : "")}, r{r}, batch {b} x {t}; built in {build.Elapsed.TotalSeconds:F1} s");
            Console.WriteLine($"backend: {be.Name}{(profiler == null ? "" : ", profiled (synchronised after every op)")}");
            var meter = device as IMemoryMeter;
            meter?.ResetPeak();
            void Step()
            {
                ps.ZeroGrads();
                bp.Run(ids, ids, [], b, 1f / (b * (t - 1)), ps.GradOf);
                opt.Update(1e-5f);
                gpu?.Synchronize();
            }
            Step(); // warm-up: JIT, kernel compilation, pool
            profiler?.Reset();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < n; i++) Step();
            double s = sw.Elapsed.TotalSeconds;
            Console.WriteLine($"train: {n} steps in {s:F2} s = {(double)n * b * t / s:F0} tokens/s");
            profiler?.WriteTable(Console.Out, s, n);
            var plan = MemoryPlan.For(cfg, new MemoryPlanOptions(b, t, q, false, lora, p.GetValue(checkpointing), MatrixBytes: dtype == DType.BF16 ? 2 : 4, EmbeddingBytes: dtype == DType.BF16 ? 2 : 4)
                {
                    Bf16ProductCopies = meter is { HoldsBf16ProductCopies: true }, LmHeadScratchBytes = meter == null ? null : meter.LmHeadScratchBytes,
                    Bf16MlpActivations = weights.Layers.FirstOrDefault(l => l.Moe == null) is { } dense && DecoderBackprop.KeepsBf16Mlp(be, dense),
                    Bf16AttentionInputs = weights.Layers.Length > 0 && DecoderBackprop.KeepsBf16Attention(be, weights.Layers[0]),
                });
            Console.WriteLine(new MemoryReport(plan, meter == null ? null : MemoryPlan.HostHeldBytes(weights) + meter.PeakBytes, Process.GetCurrentProcess().PeakWorkingSet64));
            return 0;
        });
        return cmd;
    }

    public static Command Nf4()
    {
        var rows = new Option<int>("--rows") { Description = "Weight rows (M)", DefaultValueFactory = _ => 14336 };
        var cols = new Option<int>("--cols") { Description = "Weight columns (K)", DefaultValueFactory = _ => 4096 };
        var reps = new Option<int>("--reps") { Description = "Timed repetitions of each", DefaultValueFactory = _ => 20 };
        var threads = CliOptions.Threads();
        var cmd = new Command("nf4", "NF4 dequantisation GB/s against a device copy of the same f32 matrix") { rows, cols, reps, threads };
        cmd.SetGuardedAction(p =>
        {
            int m = p.GetValue(rows), k = p.GetValue(cols), n = p.GetValue(reps);
            if (m < 1 || k < 1 || n < 1) throw new TemperException("--rows, --cols and --reps must be >= 1");
            using var be = CliOptions.Backend(p, p.GetValue(threads));
            var rng = new Random(5);
            var values = new float[(long)m * k];
            for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1) * 0.02f;
            using var host = Nf4Weight.Quantize(values, new Shape(m, k), "w");
            var w = host.To(be);
            using var src = be.FromHost(Tensor.FromFloats(new Shape(m, k), values));
            using var dst = be.Zeros(new Shape(m, k));
            double Time(Action op) => OpTimer.Seconds(be, n, op);
            double dq = Time(() => be.Nf4Dequantize(w, dst));
            double copy = Time(() => be.CopyRows(src, 0, dst, 0, m));
            double dqBytes = w.ByteCount + 4.0 * m * k, copyBytes = 8.0 * m * k;
            Console.WriteLine($"backend: {be.Name}; weight [{m},{k}]");
            Console.WriteLine($"nf4 dequantize: {dq * 1e3:F3} ms = {dqBytes / dq / 1e9:F1} GB/s (codes and scales read, f32 written)");
            Console.WriteLine($"f32 copy:       {copy * 1e3:F3} ms = {copyBytes / copy / 1e9:F1} GB/s (read + write)");
            Console.WriteLine($"dequantize / copy bandwidth: {dqBytes / dq / (copyBytes / copy) * 100:F0}%");
            if (!ReferenceEquals(w, host)) w.Dispose();
            return 0;
        });
        return cmd;
    }
}
