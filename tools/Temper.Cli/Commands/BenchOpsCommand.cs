// `temper bench ops [--device cuda] [--dtype bf16] [--batch 8] [--seq 1024] [--hidden 576] [--ffn 1536]
//   [--heads 9] [--kv-heads 3] [--head-dim 64] [--vocab 49152] [--rank 16] [--reps 5]`
// Times each op of one decoder layer's training step (and the LM head) alone, at the shapes a model of
// those sizes sees with batch x seq tokens: every op runs once as a warm-up, then reps times between
// two device synchronisations, and prints milliseconds per call with GFLOP/s (matrix products,
// attention) or GB/s (element-wise ops). Inputs are seeded random values, never zeros.
// Defaults are the SmolLM-135M shape at 8 x 1024 tokens, the training bench's workload.
using System.CommandLine;
using System.Diagnostics;
using Temper.Core;
using Temper.Kernels.Ilgpu;

namespace Temper.Cli.Commands;

internal static class BenchOpsCommand
{
    public static Command Create()
    {
        Option<int> Int(string name, string what, int value) => new(name) { Description = what, DefaultValueFactory = _ => value };
        var batch = Int("--batch", "Sequences", 8);
        var seq = Int("--seq", "Tokens per sequence", 1024);
        var hidden = Int("--hidden", "Hidden size C", 576);
        var ffn = Int("--ffn", "MLP size F", 1536);
        var heads = Int("--heads", "Query heads", 9);
        var kvHeads = Int("--kv-heads", "Key/value heads", 3);
        var headDim = Int("--head-dim", "Head dimension", 64);
        var vocab = Int("--vocab", "Vocabulary", 49152);
        var rank = Int("--rank", "LoRA rank", 16);
        var reps = Int("--reps", "Timed calls of each op", 5);
        var threads = CliOptions.Threads();
        var cmd = new Command("ops", "Per-op times of one layer's training step at a model's shapes") { batch, seq, hidden, ffn, heads, kvHeads, headDim, vocab, rank, reps, threads };
        cmd.SetGuardedAction(p =>
        {
            int b = p.GetValue(batch), t = p.GetValue(seq), c = p.GetValue(hidden), f = p.GetValue(ffn), h = p.GetValue(heads), hk = p.GetValue(kvHeads);
            int d = p.GetValue(headDim), v = p.GetValue(vocab), r = p.GetValue(rank), n = p.GetValue(reps);
            if (b < 1 || t < 1 || c < 1 || f < 1 || h < 1 || hk < 1 || h % hk != 0 || d < 2 || v < 1 || r < 1 || n < 1)
                throw new TemperException("bench ops: sizes must be >= 1, --heads a multiple of --kv-heads, --head-dim >= 2");
            var dtype = CliOptions.WeightDType(p) ?? DType.F32;
            using var be = CliOptions.Backend(p, p.GetValue(threads));
            int tokens = b * t;
            var rng = new Random(11);
            var owned = new List<Tensor>();
            Tensor Rand(DType dt, params int[] dims)
            {
                var x = BenchTensors.Random(be, rng, new Shape(dims), 0.05f, dt);
                owned.Add(x);
                return x;
            }
            Console.WriteLine($"backend: {be.Name}; {b} x {t} tokens, C {c}, F {f}, heads {h}/{hk} x {d}, vocab {v}, rank {r}, weights {dtype}");
            void Time(string name, double flops, double bytes, Action op)
            {
                double s = OpTimer.Seconds(be, n, op);
                string rate = flops > 0 ? $"{flops / s / 1e9,9:F0} GFLOP/s" : $"{bytes / s / 1e9,9:F0} GB/s";
                Console.WriteLine($"{name,-34} {s * 1e3,10:F3} ms {rate}");
            }
            var x = Rand(DType.F32, tokens, c);
            var y = Rand(DType.F32, tokens, f);
            var w = Rand(dtype, f, c);
            var dy = Rand(DType.F32, tokens, f);
            var dx = Rand(DType.F32, tokens, c);
            var a = Rand(DType.F32, r, c);
            var bl = Rand(DType.F32, f, r);
            var xa = Rand(DType.F32, tokens, r);
            var dA = Rand(DType.F32, r, c);
            var dB = Rand(DType.F32, f, r);
            double mm = 2.0 * tokens * c * f;
            Time($"Linear [{tokens},{c}]->{f}", mm, 0, () => be.Linear(x, w, null, y));
            Time("LinearBackward dx", mm, 0, () => be.LinearBackward(dy, x, w, dx, null, null));
            Time("LoraLinear", mm + 2.0 * tokens * r * (c + f), 0, () => be.LoraLinear(x, w, null, a, bl, 2f, y, xa));
            Time("LoraLinearBackward (dx, dA, dB)", 4.0 * tokens * r * (c + f), 0, () => be.LoraLinearBackward(dy, x, xa, a, bl, 2f, dx, dA, dB));
            var g = Rand(DType.F32, tokens, f);
            var u = Rand(DType.F32, tokens, f);
            var dg = Rand(DType.F32, tokens, f);
            var du = Rand(DType.F32, tokens, f);
            Time("SwiGlu", 0, 12.0 * tokens * f, () => be.SwiGlu(g, u, y));
            Time("SwiGluBackward", 0, 20.0 * tokens * f, () => be.SwiGluBackward(dy, g, u, dg, du));
            var norm = Rand(DType.F32, c);
            var rstd = Rand(DType.F32, tokens);
            var xn = Rand(DType.F32, tokens, c);
            Time("RmsNorm", 0, 8.0 * tokens * c, () => be.RmsNorm(x, norm, 1e-5f, xn, rstd));
            Time("RmsNormBackward", 0, 12.0 * tokens * c, () => be.RmsNormBackward(xn, x, norm, rstd, dx, null));
            Time("Add", 0, 12.0 * tokens * c, () => be.Add(x, xn, dx));
            var q = Rand(DType.F32, b, t, h, d);
            var k = Rand(DType.F32, b, t, hk, d);
            var vv = Rand(DType.F32, b, t, hk, d);
            var o = Rand(DType.F32, b, t, h, d);
            var lse = Rand(DType.F32, b, h, t);
            var positions = Enumerable.Range(0, tokens).Select(i => i % t).ToArray();
            var inv = Enumerable.Range(0, d / 2).Select(i => 1f / MathF.Pow(10000f, 2f * i / d)).ToArray();
            var freqs = new RopeFrequencies(inv);
            Time("Rope (q)", 0, 8.0 * tokens * h * d, () => be.Rope(q, positions, freqs));
            var args = new AttentionArgs(q, k, vv, o, t, 0, 1f / MathF.Sqrt(d), Lse: lse);
            double att = 4.0 * b * h * d * t * (t + 1) / 2; // QK^T and PV over the causal half
            Time("Attention (causal)", att, 0, () => be.Attention(args));
            var dq = Rand(DType.F32, b, t, h, d);
            var dk = Rand(DType.F32, b, t, hk, d);
            var dv = Rand(DType.F32, b, t, hk, d);
            Time("AttentionBackward", 2.5 * att, 0, () => be.AttentionBackward(args, o, dq, dk, dv));
            var head = Rand(dtype, v, c);
            var labels = Enumerable.Range(0, tokens).Select(_ => rng.Next(v)).ToArray();
            var losses = Rand(DType.F32, tokens);
            double lm = 2.0 * tokens * c * v;
            Time($"LmHeadCrossEntropy V {v}", lm, 0, () => be.LmHeadCrossEntropy(x, head, labels, losses, 1f / tokens, null, null));
            Time("LmHeadCrossEntropy + dHidden", 3 * lm, 0, () => be.LmHeadCrossEntropy(x, head, labels, losses, 1f / tokens, dx, null));
            foreach (var tensor in owned) tensor.Dispose();
            return 0;
        });
        return cmd;
    }
}
