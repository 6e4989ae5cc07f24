// The host's memory read bandwidth, for the CPU decode roofline: `threads` threads each sum their slice of
// a 256 MiB buffer (far past any cache) with 512-bit (else 256-bit) loads, best of five passes. Decode
// reads every weight once a token, so weight bytes x tokens/s over this figure is the share of the
// roofline that decode reaches. The sum is its own two-accumulator loop, not TensorPrimitives.Sum, which
// read 41-47 GB/s against this loop's 48-57 in 3 alternating runs: the roofline must be the fastest read.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Temper.Cli.Commands;

internal static class HostBandwidth
{
    public static double ReadGBps(int threads)
    {
        const int Floats = 64 << 20; // 256 MiB
        threads = Math.Max(1, threads);
        var buffer = GC.AllocateUninitializedArray<float>(Floats);
        buffer.AsSpan().Fill(1f); // fault the pages in before timing
        double best = 0;
        var sums = new float[threads];
        for (int pass = 0; pass < 5; pass++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                int lo = (int)((long)Floats * t / threads), hi = (int)((long)Floats * (t + 1) / threads);
                sums[t] = Sum(buffer, lo, hi);
            });
            best = Math.Max(best, Floats * 4.0 / sw.Elapsed.TotalSeconds / 1e9);
        }
        // The sums are kept (and checked loosely: f32 partial sums past 2^24 round) so no pass can be skipped.
        double total = sums.Sum(v => (double)v);
        return Math.Abs(total - Floats) <= 1e-3 * Floats ? best : throw new InvalidOperationException($"host bandwidth: the buffer sums to {total}, not {Floats}");
    }

    private static float Sum(float[] a, int lo, int hi)
    {
        ref float p = ref MemoryMarshal.GetArrayDataReference(a);
        int i = lo;
        float s = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<float> x = default, y = default;
            for (; i <= hi - 32; i += 32)
            {
                x += Vector512.LoadUnsafe(ref p, (nuint)i);
                y += Vector512.LoadUnsafe(ref p, (nuint)i + 16);
            }
            s = Vector512.Sum(x + y);
        }
        else
        {
            Vector256<float> x = default, y = default;
            for (; i <= hi - 16; i += 16)
            {
                x += Vector256.LoadUnsafe(ref p, (nuint)i);
                y += Vector256.LoadUnsafe(ref p, (nuint)i + 8);
            }
            s = Vector256.Sum(x + y);
        }
        for (; i < hi; i++) s += a[i];
        return s;
    }
}
