// `temper bench attention [--batch 8] [--heads 9] [--kv-heads 3] [--seq 1024] [--head-dim 64] [--reps 10] [--device cuda]`:
// causal self-attention alone (q[B,T,H,D], k/v[B,T,Hkv,D], seeded random inputs), forward (with lse,
// as training runs it), the inference forward (no lse) and backward (`--kernels ptx`: all three on the CUDA
// C++ kernels for D = 64 and 128), timed over --reps calls after one warm-up, in ms and GFLOP/s. FLOPs count the causal
// half only: forward 4 B H D T(T+1)/2 (q k^T and P V), backward 2.5 times that (the FlashAttention
// convention: five products, none of the recomputation counted). --inputs bf16 gives all three q, k and v in bf16, as
// PyTorch's SDPA takes them and a bf16 model's training keeps them (the CUDA C++ kernels' _bf16in builds read them as they are).
using System.CommandLine;
using System.Diagnostics;
using Temper.Core;
using Temper.Kernels.Ilgpu;

namespace Temper.Cli.Commands;

internal static class BenchAttentionCommand
{
    public static Command Create()
    {
        var batch = new Option<int>("--batch") { Description = "Sequences (B)", DefaultValueFactory = _ => 8 };
        var heads = new Option<int>("--heads") { Description = "Query heads (H)", DefaultValueFactory = _ => 9 };
        var kvHeads = new Option<int>("--kv-heads") { Description = "Key/value heads (Hkv, divides H)", DefaultValueFactory = _ => 3 };
        var seq = new Option<int>("--seq") { Description = "Tokens per sequence (T)", DefaultValueFactory = _ => 1024 };
        var headDim = new Option<int>("--head-dim") { Description = "Head dimension (D)", DefaultValueFactory = _ => 64 };
        var reps = new Option<int>("--reps") { Description = "Timed calls of each (after one warm-up)", DefaultValueFactory = _ => 10 };
        var inputs = new Option<string>("--inputs") { Description = "q, k, v: f32 or bf16", DefaultValueFactory = _ => "f32" };
        inputs.AcceptOnlyFromAmong("f32", "bf16");
        var threads = CliOptions.Threads();
        var cmd = new Command("attention", "Causal attention forward and backward alone: ms and GFLOP/s") { batch, heads, kvHeads, seq, headDim, reps, inputs, threads };
        cmd.SetGuardedAction(p =>
        {
            int b = p.GetValue(batch), h = p.GetValue(heads), hkv = p.GetValue(kvHeads), t = p.GetValue(seq), d = p.GetValue(headDim), n = p.GetValue(reps);
            if (b < 1 || h < 1 || hkv < 1 || h % hkv != 0 || t < 1 || d < 1 || n < 1)
                throw new TemperException($"--batch, --heads, --seq, --head-dim and --reps must be >= 1 and --kv-heads must divide --heads (got H {h}, Hkv {hkv})");
            using var be = CliOptions.Backend(p, p.GetValue(threads));
            var rng = new Random(11);
            Tensor Random(params int[] shape) => BenchTensors.Random(be, rng, new Shape(shape));
            var dtype = p.GetValue(inputs) == "bf16" ? DType.BF16 : DType.F32;
            using var q = BenchTensors.Random(be, rng, new Shape(b, t, h, d), dtype: dtype);
            using var k = BenchTensors.Random(be, rng, new Shape(b, t, hkv, d), dtype: dtype);
            using var v = BenchTensors.Random(be, rng, new Shape(b, t, hkv, d), dtype: dtype);
            using var dOut = Random(b, t, h, d);
            using var output = be.Zeros(new Shape(b, t, h, d));
            using var lse = be.Zeros(new Shape(b, h, t));
            using var dq = be.Zeros(new Shape(b, t, h, d));
            using var dk = be.Zeros(new Shape(b, t, hkv, d));
            using var dv = be.Zeros(new Shape(b, t, hkv, d));
            var args = new AttentionArgs(q, k, v, output, t, 0, 1f / MathF.Sqrt(d), Lse: lse);
            double Time(Action op) => OpTimer.Seconds(be, n, op);
            double fwd = Time(() => be.Attention(args));
            double inference = Time(() => be.Attention(args with { Lse = null }));
            double bwd = Time(() => be.AttentionBackward(args, dOut, dq, dk, dv));
            double fwdFlops = 4.0 * b * h * d * (t * (t + 1.0) / 2);
            Console.WriteLine($"backend: {be.Name}; causal attention B{b} H{h} Hkv{hkv} T{t} D{d}, {n} reps; q, k, v {(dtype == DType.BF16 ? "bf16" : "f32")}");
            Console.WriteLine($"forward:  {fwd * 1e3:F3} ms = {fwdFlops / fwd / 1e9:F1} GFLOP/s");
            Console.WriteLine($"forward, inference (no lse): {inference * 1e3:F3} ms = {fwdFlops / inference / 1e9:F1} GFLOP/s");
            Console.WriteLine($"backward: {bwd * 1e3:F3} ms = {2.5 * fwdFlops / bwd / 1e9:F1} GFLOP/s");
            return 0;
        });
        return cmd;
    }
}
