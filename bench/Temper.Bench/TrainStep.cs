// End-to-end CPU training throughput: `-- --train-step [steps]` times LoRA SFT steps (r16 on all seven
// linear projections, seq 256, batch 1) of a seeded random SmolLM-135M-shaped model (30 layers, C 576,
// F 1536, 9/3 heads, V 49152, tied) and reports tokens/s and the step's achieved GFLOP/s from model
// FLOPs (forward, input gradients and LoRA terms; no recomputation, no frozen-weight gradients), next
// to OpenBLAS sgemm's best GFLOP/s at 2048^3 measured in the same process; then one step with gradient
// checkpointing, and the peak bytes of the pass's own tensors (activations, gradient buffers) both ways.
// With `--bf16` the frozen weight matrices are held in bf16 (as a bf16 checkpoint loads; f32 otherwise).
// With `--profile` the backend is wrapped in ProfilingBackend (engine/Temper.Training/Diagnostics) and
// the timed steps are followed by a table of ops by total time, each with its calls and share of the
// step (the wrapper's own cost is noise next to a ~3 s step: a few thousand calls of two timestamps each).
using System.Diagnostics;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Diagnostics;
using Temper.Training.Lora;

namespace Temper.Bench;

public static unsafe class TrainStep
{
    private const int WarmUpSteps = 3;

    public static void Run(int steps, bool profile = false, bool bf16 = false)
    {
        var cfg = new ModelConfig
        {
            ModelType = "llama", HiddenSize = 576, IntermediateSize = 1536, NumLayers = 30, NumHeads = 9, NumKvHeads = 3,
            HeadDim = 64, VocabSize = 49152, RmsNormEps = 1e-5f, TieWordEmbeddings = true, AttentionBias = false,
            OutputBias = false, MlpBias = false, MaxPositions = 8192, Rope = new RopeSpec("default", 100000),
        };
        const int seq = 256, batch = 1, rank = 16;
        var cpu = new CpuBackend();
        var profiler = profile ? new ProfilingBackend(cpu) : null;
        IBackend be = profiler ?? (IBackend)cpu;
        using var weights = ModelWeights.Random(cfg, be, seed: 1, dtype: bf16 ? DType.BF16 : DType.F32);
        var lora = new LoraConfig(rank, 32, false, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], null, 0);
        LoraInit.Attach(weights, lora, be, seed: 1);
        using var ps = TrainableParameters.Lora(weights, be);
        var bp = new DecoderBackprop(new Decoder(cfg, weights, be));
        var rng = new Random(3);
        var ids = Enumerable.Range(0, batch * seq).Select(_ => rng.Next(cfg.VocabSize)).ToArray();
        int n = ids.Length;

        double linear = weights.Projections.Sum(p => (double)p.In * p.Out) + (double)cfg.VocabSize * cfg.HiddenSize;
        double loraParams = weights.Projections.Sum(p => (double)rank * (p.In + p.Out));
        double attention = 2.0 * seq * seq * cfg.NumHeads * cfg.HeadDim * cfg.NumLayers * batch; // QK^T and AV, causal half, fwd
        double flops = 2 * linear * n * 2 + 2 * loraParams * n * 3 + attention * 3;

        void Step()
        {
            ps.ZeroGrads();
            bp.Run(ids, ids, [], batch, 1f / (n - batch), ps.GradOf);
        }
        // Warm-up: page-in, and the JIT's tiers. After one step the first timed step still ran partly tier-0 code
        // (~820 ms against ~600 from the third on; SwiGlu's forward took 6.5 ms a call in the first step, 0.12 later).
        for (int i = 0; i < WarmUpSteps; i++) Step();
        profiler?.Reset();
        var times = new List<double>();
        int gc0 = GC.CollectionCount(0), gc1 = GC.CollectionCount(1), gc2 = GC.CollectionCount(2); var pause = GC.GetTotalPauseDuration(); long alloc = GC.GetTotalAllocatedBytes();
        for (int i = 0; i < steps; i++)
        {
            var sw = Stopwatch.StartNew();
            Step();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        Console.WriteLine($"GC: gen0 {GC.CollectionCount(0) - gc0} gen1 {GC.CollectionCount(1) - gc1} gen2 {GC.CollectionCount(2) - gc2}, pause {(GC.GetTotalPauseDuration() - pause).TotalMilliseconds:F1} ms, allocated {(GC.GetTotalAllocatedBytes() - alloc) / 1e6:F1} MB over {steps} steps");
        double best = times.Min(), mean = times.Average();
        Console.WriteLine($"train step (LoRA r{rank}, seq {seq}, batch {batch}, {cfg.NumLayers} layers, {(bf16 ? "bf16" : "f32")} weights, {ps.Count:N0} trained params): {steps} steps after {WarmUpSteps} warm-up steps");
        Console.WriteLine("  step ms: " + string.Join(" ", times.Select(t => (t * 1000).ToString("F0", System.Globalization.CultureInfo.InvariantCulture))));
        Console.WriteLine($"  mean {mean * 1000:F0} ms = {n / mean:F0} tokens/s, {flops / mean / 1e9:F1} GFLOP/s; best {best * 1000:F0} ms = {n / best:F0} tokens/s, {flops / best / 1e9:F1} GFLOP/s (model FLOPs {flops / 1e9:F1} G/step)");
        profiler?.WriteTable(Console.Out, times.Sum(), steps);
        long keptPeak = bp.PeakActivationBytes;
        bp.GradientCheckpointing = true;
        var ck = Stopwatch.StartNew();
        Step();
        double ckSeconds = ck.Elapsed.TotalSeconds;
        Console.WriteLine($"  activations kept: peak {keptPeak / 1e6:F0} MB; gradient checkpointing: peak {bp.PeakActivationBytes / 1e6:F0} MB, one step {ckSeconds * 1000:F0} ms = {n / ckSeconds:F0} tokens/s");
        Console.WriteLine($"  OpenBLAS sgemm 2048^3, same process: {OpenBlasBest(2048, 3):F1} GFLOP/s (best of 3, {Environment.ProcessorCount} threads)");
    }

    private static double OpenBlasBest(int size, int reps)
    {
        var a = new float[size * size];
        var b = new float[size * size];
        var c = new float[size * size];
        for (int i = 0; i < a.Length; i++) { a[i] = (i % 7) * 0.1f; b[i] = (i % 5) * 0.1f; }
        OpenBlas.SetThreads(Environment.ProcessorCount);
        double best = double.MaxValue;
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
            for (int r = 0; r <= reps; r++)
            {
                var sw = Stopwatch.StartNew();
                OpenBlas.Sgemm(OpenBlas.RowMajor, OpenBlas.NoTrans, OpenBlas.Trans, size, size, size, 1f, pa, size, pb, size, 0f, pc, size);
                if (r > 0) best = Math.Min(best, sw.Elapsed.TotalSeconds);
            }
        return 2.0 * size * size * size / best / 1e9;
    }
}
