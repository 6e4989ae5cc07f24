// A quick, noise-resistant GEMM comparison for shared machines: `-- --gemm-best-of [seconds]` times
// Temper's Linear (f32 and bf16 weights) and OpenBLAS sgemm on the GemmBenchmarks shapes in interleaved
// rounds and keeps each side's fastest call (other processes only ever make a call slower), then prints a
// markdown table of GFLOP/s and the Temper / OpenBLAS ratio, for all cores and for one thread.
using System.Diagnostics;
using Temper.Core;
using Temper.Kernels.Cpu;

namespace Temper.Bench;

public static unsafe class GemmBestOf
{
    public static void Run(double secondsPerCase)
    {
        string[] shapes = ["2048x2048x2048", "256x576x1536", "256x1536x576", "256x576x576", "4x576x1536", "1x576x1536", "1x576x49152"];
        Console.WriteLine($"| shape NxKxM | threads | Temper f32 GFLOP/s | Temper bf16 W GFLOP/s | OpenBLAS GFLOP/s | f32 / OpenBLAS |");
        Console.WriteLine($"| --- | --- | --- | --- | --- | --- |");
        foreach (int threads in new[] { Environment.ProcessorCount, 1 }.Distinct())
        foreach (var shape in shapes)
        {
            var s = shape.Split('x').Select(int.Parse).ToArray();
            int n = s[0], k = s[1], m = s[2];
            var rng = new Random(1);
            var x = Tensor.FromFloats(new Shape(n, k), Enumerable.Range(0, n * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray());
            var wf = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
            var w = Tensor.FromFloats(new Shape(m, k), wf);
            var wbArr = new ushort[wf.Length];
            BFloat16.FromSingle(wf, wbArr);
            var wb = Tensor.FromArray<ushort>(new Shape(m, k), wbArr, DType.BF16);
            var y = Tensor.Zeros(new Shape(n, m));
            using var backend = new CpuBackend(threads);
            OpenBlas.SetThreads(threads);
            Action[] sides =
            [
                () => backend.Linear(x, w, null, y),
                () => backend.Linear(x, wb, null, y),
                () =>
                {
                    fixed (float* px = x.Floats) fixed (float* pw = w.Floats) fixed (float* py = y.Floats)
                        OpenBlas.Sgemm(OpenBlas.RowMajor, OpenBlas.NoTrans, OpenBlas.Trans, n, m, k, 1f, px, k, pw, k, 0f, py, m);
                },
            ];
            var best = new double[sides.Length];
            Array.Fill(best, double.MaxValue);
            foreach (var side in sides) side(); // warm up
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed.TotalSeconds < secondsPerCase)
                for (int i = 0; i < sides.Length; i++)
                {
                    long t0 = Stopwatch.GetTimestamp();
                    sides[i]();
                    best[i] = Math.Min(best[i], Stopwatch.GetElapsedTime(t0).TotalSeconds);
                }
            double flops = 2.0 * n * k * m;
            Console.WriteLine($"| {shape} | {threads} | {flops / best[0] / 1e9:F1} | {flops / best[1] / 1e9:F1} | {flops / best[2] / 1e9:F1} | {best[2] / best[0]:F2} |");
        }
    }
}
