// Static work partitions for the multi-threaded kernels: [0, count) is cut into `parts` contiguous ranges
// of near-equal size, range p = [p*count/parts, (p+1)*count/parts), each run by one thread. Every output
// element belongs to exactly one range and is computed the same way whatever the partition, so results
// do not depend on the thread count or on scheduling.
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
        Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts },
            p => body((int)((long)p * count / parts), (int)((long)(p + 1) * count / parts)));
    }
}
