// Static work partitions for the multi-threaded kernels: [0, count) is cut into `parts` contiguous ranges
// of near-equal size, range p = [p*count/parts, (p+1)*count/parts), each run by one thread. Every output
// element belongs to exactly one range and is computed the same way whatever the partition, so results
// do not depend on the thread count or on scheduling. ForBalanced cuts by a per-unit weight instead (causal
// attention rows, whose work grows with position); the same holds, since units stay whole.
namespace Temper.Kernels.Cpu;

internal static class StaticPartition
{
    /// <summary>How many parts to use: at most `threads`, and none smaller than `minWork` units of work.</summary>
    public static int Parts(int threads, int count, long totalWork, long minWork)
    {
        long byWork = minWork <= 0 ? threads : Math.Max(1, totalWork / minWork);
        return (int)Math.Max(1, Math.Min(Math.Min(threads, count), byWork));
    }

    /// <summary>Runs body(start, end) over `parts` ranges of [0, count), in parallel when parts &gt; 1.</summary>
    public static void For(int count, int parts, Action<int, int> body)
    {
        if (count <= 0) return;
        parts = Math.Clamp(parts, 1, count);
        if (parts == 1)
        {
            body(0, count);
            return;
        }
        WorkerPool.Run(parts, p => body((int)((long)p * count / parts), (int)((long)(p + 1) * count / parts)));
    }

    // Runs body over `parts` contiguous ranges of [0, count) of near-equal total weight (rows of
    // independent outputs, so the split only moves work between threads, never changes a result).
    public static void ForBalanced(int count, Func<int, long> weight, int parts, Action<int, int> body)
    {
        if (count <= 0) return;
        parts = Math.Clamp(parts, 1, count);
        if (parts == 1)
        {
            body(0, count);
            return;
        }
        var prefix = new long[count + 1];
        for (int u = 0; u < count; u++) prefix[u + 1] = prefix[u] + weight(u);
        var bounds = new int[parts + 1];
        bounds[parts] = count;
        for (int p = 1; p < parts; p++)
        {
            long target = prefix[count] * p / parts;
            int at = Array.BinarySearch(prefix, target);
            bounds[p] = Math.Clamp(at >= 0 ? at : ~at, bounds[p - 1], count);
        }
        WorkerPool.Run(parts, p => body(bounds[p], bounds[p + 1]));
    }
}
