// `temper bench gemm [--shapes NxKxM,...] [--reps 20]`: issue 7's GEMM bar at the kernel level: the forward
// Linear product y[N,M] = x[N,K] W[M,K]^T with x and W already bf16 and y f32 (no activation conversion,
// which `bench ops`' Linear line includes), on each of Temper's kernels: gemm_bf16.cu (sm_80: mma.sync from a
// cp.async ring) everywhere, and on compute capability 9.0 gemm_bf16_sm90.cu's wgmma kernels (128 x 128 and
// wide 128 x 256 tiles, from cp.async or, where the driver encodes tensor maps, TMA). Each kernel is first
// validated: y starts as NaN bytes, and 512 sampled entries (the corners among them) must be within
// 1e-4 x sum_k |x w| of a float64 sum over the same bf16 values; a kernel that fails prints its error and the
// command exits 1 after the table. Then one warm-up launch and --reps launches between two events.
// The peer, run in the same lease: bench/peer/torch_gemm.py (torch.matmul on the same shapes: cuBLAS).
// Default shapes: the Llama-3.2-1B training products at 8192 tokens (N) and 8192^3.
// On the CUDA emulator it runs (tiny --shapes) to check the kernels and this command; its times mean nothing.
using System.CommandLine;
using Temper.Core;
using Temper.Cuda;
using Temper.Cuda.Driver;
using Temper.Kernels.Cuda;

namespace Temper.Cli.Commands;

internal static class BenchGemmCommand
{
    private const int Samples = 512;
    private const double Tolerance = 1e-4; // of sum_k |x w|: f32 sums over K = 8192 stay near 1e-6; a lost 64-deep slice is ~1e-2

    public static Command Create()
    {
        var shapes = new Option<string>("--shapes") { Description = "Products NxKxM (tokens x in-features x out-features), comma-separated", DefaultValueFactory = _ => "8192x2048x2048,8192x2048x8192,8192x8192x2048,8192x8192x8192" };
        var reps = new Option<int>("--reps") { Description = "Timed launches of each kernel (after one warm-up)", DefaultValueFactory = _ => 20 };
        var cmd = new Command("gemm", "The forward bf16 GEMM kernels alone (x already bf16, y f32) on a CUDA GPU: validated, then TFLOP/s") { shapes, reps };
        cmd.SetGuardedAction(p =>
        {
            int n = p.GetValue(reps);
            if (n < 1) throw new TemperException($"bench gemm: --reps must be >= 1, not {n}");
            var products = p.GetValue(shapes)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(Parse).ToArray();
            using var device = CliOptions.OpenCudaDevice("bench gemm runs");
            var kernels = Kernels(device);
            Console.WriteLine($"device: {device.Name}, {device.MultiprocessorCount} SMs, compute capability {device.ComputeCapability.Major}.{device.ComputeCapability.Minor}" +
                $"{(device.IsEmulated ? " (the CUDA emulator: times mean nothing)" : "")}; {n} reps; kernels: {string.Join(", ", kernels.Select(k => k.Name))}");
            bool allValid = true;
            try
            {
                foreach (var (rows, depth, cols) in products)
                    allValid &= Run(device, kernels, rows, depth, cols, n);
            }
            finally
            {
                foreach (var k in kernels) k.Dispose();
            }
            return allValid ? 0 : 1;
        });
        return cmd;
    }

    private sealed record Kernel(string Name, Action<CudaDeviceMemory, CudaDeviceMemory, CudaDeviceMemory, int, int, int> Forward, IDisposable Owner) : IDisposable
    {
        public void Dispose() => Owner.Dispose();
    }

    // The sm_80 GEMM always; the sm_90a kernels on compute capability 9.0 (and on the emulator, which runs any PTX).
    private static List<Kernel> Kernels(CudaDevice device)
    {
        var linear = new CudaLinear(device) { Sm90 = false };
        var list = new List<Kernel> { new("sm80", (x, w, y, rows, depth, cols) => linear.ForwardBf16(x, w, null, y, rows, depth, cols), linear) };
        if (device.ComputeCapability != (9, 0) && !device.IsEmulated) return list;
        foreach (var (name, wide, tma) in new[] { ("sm90", false, false), ("sm90-wide", true, false), ("tma", false, true), ("tma-wide", true, true) })
        {
            if (tma && CudaTensorMaps.Unavailable is { } why)
            {
                Console.WriteLine($"{name}: not run: {why}");
                continue;
            }
            var gemm = new CudaGemmSm90(device) { Wide = wide, Tma = tma };
            list.Add(new(name, (x, w, y, rows, depth, cols) => gemm.Forward(x, w, null, y, rows, depth, cols), gemm));
        }
        return list;
    }

    private static (int N, int K, int M) Parse(string shape)
    {
        var parts = shape.Split('x');
        if (parts.Length != 3 || !parts.All(s => int.TryParse(s, out int v) && v > 0))
            throw new TemperException($"bench gemm: --shapes takes NxKxM with positive sizes, not '{shape}'");
        var (n, k, m) = (int.Parse(parts[0]), int.Parse(parts[1]), int.Parse(parts[2]));
        if (k % 8 != 0) throw new TemperException($"bench gemm: K must be a multiple of 8 (the kernels' 16-byte loads), not {k} in '{shape}'");
        if ((long)n * m > Array.MaxLength || (long)n * k > Array.MaxLength || (long)m * k > Array.MaxLength)
            throw new TemperException($"bench gemm: '{shape}' has an operand of more than {Array.MaxLength} elements");
        return (n, k, m);
    }

    // Validates then times every kernel on one shape; false when a kernel's sampled entries are off.
    private static bool Run(CudaDevice device, List<Kernel> kernels, int rows, int depth, int cols, int reps)
    {
        var rng = new Random(7);
        ushort[] Bf16(long count)
        {
            var v = new ushort[count];
            for (long i = 0; i < count; i++) v[i] = BFloat16.FromSingle((float)(rng.NextDouble() * 2 - 1));
            return v;
        }
        ushort[] x = Bf16((long)rows * depth), w = Bf16((long)cols * depth);
        using var dx = device.Upload<ushort>(x);
        using var dw = device.Upload<ushort>(w);
        using var dy = device.Allocate<float>((long)rows * cols);
        var samples = Enumerable.Range(0, Samples).Select(i => i == 0 ? (0, 0) : i == 1 ? (rows - 1, cols - 1) : (rng.Next(rows), rng.Next(cols))).ToArray();
        var reference = samples.Select(s => Reference(x, w, depth, s.Item1, s.Item2)).ToArray();
        bool valid = true;
        foreach (var k in kernels)
        {
            try
            {
                valid &= ValidateAndTime(device, k, dx, dw, dy, rows, depth, cols, reps, samples, reference);
            }
            catch (CudaException e) // an sm_90a module the driver refuses, say: the other kernels still run
            {
                Console.WriteLine($"[{rows},{depth}]->{cols} {k.Name,-10} failed: {e.Message}");
                valid = false;
            }
        }
        return valid;
    }

    private static bool ValidateAndTime(CudaDevice device, Kernel k, CudaDeviceMemory dx, CudaDeviceMemory dw, CudaDeviceMemory dy, int rows, int depth, int cols, int reps,
        (int, int)[] samples, (double Sum, double AbsSum)[] reference)
    {
        double flops = 2.0 * rows * depth * cols;
        CudaDriver.SetBytesAsync(dy.Pointer, 0xFF, 4L * rows * cols, device.Stream); // NaN: an entry never written fails
        k.Forward(dx, dw, dy, rows, depth, cols);
        var y = device.Download<float>(dy);
        double worst = 0;
        for (int i = 0; i < Samples; i++)
        {
            var (r, c) = samples[i];
            double error = Math.Abs(y[(long)r * cols + c] - reference[i].Sum) / Math.Max(reference[i].AbsSum, 1e-30);
            worst = double.IsNaN(error) ? double.PositiveInfinity : Math.Max(worst, error);
        }
        bool ok = worst <= Tolerance;
        double s = DeviceTiming.Seconds(device, reps, _ => k.Forward(dx, dw, dy, rows, depth, cols));
        Console.WriteLine($"[{rows},{depth}]->{cols} {k.Name,-10} {s * 1e3,9:F3} ms {flops / s / 1e12,8:F1} TFLOP/s; " +
            $"sampled error {worst:E1} of sum|xw| {(ok ? "ok" : $"WRONG (bound {Tolerance:E0})")}");
        return ok;
    }

    private static (double Sum, double AbsSum) Reference(ushort[] x, ushort[] w, int depth, int r, int c)
    {
        double sum = 0, abs = 0;
        for (int k = 0; k < depth; k++)
        {
            double p = (double)BFloat16.ToSingle(x[(long)r * depth + k]) * BFloat16.ToSingle(w[(long)c * depth + k]);
            sum += p;
            abs += Math.Abs(p);
        }
        return (sum, abs);
    }
}
