// WorkerPool, the CPU kernels' threads: every part of a job runs exactly once (also many jobs back to
// back, several callers at once and a job started from inside a part), a part's exception reaches the
// caller, and the pool's workers, not only the caller, take parts.
using Temper.Kernels.Cpu;

namespace Temper.Kernels.Tests;

public sealed class WorkerPoolTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(64)]
    public void Every_part_runs_exactly_once(int parts)
    {
        for (int job = 0; job < 200; job++)
        {
            var counts = new int[parts];
            WorkerPool.Run(parts, p => Interlocked.Increment(ref counts[p]));
            Assert.All(counts, c => Assert.Equal(1, c));
        }
    }

    [Fact]
    public void Several_callers_and_nested_jobs_each_run_every_part_once()
    {
        const int callers = 4, jobs = 100, parts = 5, inner = 3;
        var counts = new int[callers, jobs, parts, inner];
        var threads = Enumerable.Range(0, callers).Select(c => new Thread(() =>
        {
            for (int j = 0; j < jobs; j++)
                WorkerPool.Run(parts, p => WorkerPool.Run(inner, q => Interlocked.Increment(ref counts[c, j, p, q])));
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromMinutes(2)), "a caller did not finish");
        foreach (int c in counts) Assert.Equal(1, c);
    }

    [Fact]
    public void A_part_that_throws_fails_the_call_and_the_pool_keeps_working()
    {
        var e = Assert.ThrowsAny<Exception>(() => WorkerPool.Run(4, p => { if (p == 2) throw new InvalidOperationException("part 2"); }));
        Assert.Contains("part 2", e is AggregateException a ? a.InnerExceptions[0].Message : e.Message);
        var counts = new int[4];
        WorkerPool.Run(4, p => Interlocked.Increment(ref counts[p]));
        Assert.All(counts, c => Assert.Equal(1, c));
    }

    [Fact]
    public void Workers_beside_the_caller_take_parts()
    {
        if (Environment.ProcessorCount < 2)
        {
            Assert.Skip("one logical processor: the pool has no workers");
            return;
        }
        int caller = Environment.CurrentManagedThreadId;
        var seen = new HashSet<int>();
        // Each part waits until another thread has taken one, so a pool that ran every part on the caller
        // would never finish; the deadline turns that into a failure instead of a hang.
        var deadline = DateTime.UtcNow.AddSeconds(30);
        int started = 0;
        WorkerPool.Run(2, _ =>
        {
            lock (seen) seen.Add(Environment.CurrentManagedThreadId);
            Interlocked.Increment(ref started);
            while (Volatile.Read(ref started) < 2 && DateTime.UtcNow < deadline) Thread.SpinWait(100);
        });
        Assert.Equal(2, seen.Count);
        Assert.Contains(caller, seen);
    }
}
