// WorkerPool: the CPU kernels' own threads. Run(parts, body) calls body(0..parts-1) once each, the calling
// thread taking parts itself beside the pool's workers, and returns when every part is done.
//
// Why not Parallel.For: decode runs ~400 small ops a token (a 576 x 576 GEMV is ~30 us), and waking a
// thread-pool thread for each costs a large share of that. The workers here spin for a short while after
// each job before they block, so back-to-back ops find them awake; a worker that did block is pulsed when
// the next job is published.
//
// Each job is its own object with its own part counter: a worker that wakes late claims from the job it
// saw, finds every part taken and goes back to waiting, so it never runs a part of a later job with an
// earlier body. Which thread runs which part does not matter to a result: every caller cuts its work into
// static ranges (StaticPartition, the GEMM's tile grid), and a part is computed the same on any thread.
// A call made from inside a part, or while another thread's job holds the pool, runs on Parallel.For.
using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace Temper.Kernels.Cpu;

internal static class WorkerPool
{
    private sealed class Job(Action<int> body, int parts)
    {
        public readonly Action<int> Body = body;
        public readonly int Parts = parts;
        public int Next;
        public int Remaining = parts;
        public Exception? Error;

        // Claims and runs parts until none is left.
        public void Help()
        {
            int p;
            while ((p = Interlocked.Increment(ref Next) - 1) < Parts)
            {
                try { Body(p); }
                catch (Exception e) { Interlocked.CompareExchange(ref Error, e, null); }
                Interlocked.Decrement(ref Remaining);
            }
        }
    }

    private sealed class Worker
    {
        public int Sleeping; // 1 while blocked (or about to block) in Monitor.Wait on this object
    }

    // How long an idle worker spins before it blocks: a few decode ops' worth.
    private static readonly long SpinTicks = Stopwatch.Frequency / 2000; // 0.5 ms

    private static readonly Lock Gate = new();
    private static Worker[]? s_workers;
    private static Job? s_current;
    [ThreadStatic] private static bool t_inPart;

    /// <summary>Runs body(p) for p in [0, parts), in parallel when parts &gt; 1.</summary>
    public static void Run(int parts, Action<int> body)
    {
        if (parts <= 1)
        {
            if (parts == 1) body(0);
            return;
        }
        if (t_inPart || !Gate.TryEnter())
        {
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, body);
            return;
        }
        try
        {
            var workers = s_workers ??= Start(Environment.ProcessorCount - 1);
            var job = new Job(body, parts);
            Volatile.Write(ref s_current, job);
            Interlocked.MemoryBarrier();
            int toWake = parts - 1;
            foreach (var w in workers)
            {
                if (toWake == 0) break;
                if (Volatile.Read(ref w.Sleeping) == 1)
                {
                    lock (w) Monitor.Pulse(w);
                    toWake--;
                }
            }
            t_inPart = true;
            try { job.Help(); }
            finally { t_inPart = false; }
            var spin = new SpinWait();
            while (Volatile.Read(ref job.Remaining) > 0) spin.SpinOnce(sleep1Threshold: -1);
            Volatile.Write(ref s_current, null); // lets go of the body and what it holds
            if (job.Error is { } e) ExceptionDispatchInfo.Throw(e);
        }
        finally
        {
            Gate.Exit();
        }
    }

    private static Worker[] Start(int count)
    {
        var workers = new Worker[Math.Max(0, count)];
        for (int i = 0; i < workers.Length; i++)
        {
            var w = workers[i] = new Worker();
            new Thread(() => Loop(w)) { IsBackground = true, Name = $"temper-cpu-{i + 1}" }.Start();
        }
        return workers;
    }

    private static void Loop(Worker self)
    {
        t_inPart = true;
        Job? seen = null;
        while (true)
        {
            Job? job = Volatile.Read(ref s_current);
            if (job != seen)
            {
                seen = job;
                job?.Help();
                continue;
            }
            long until = Stopwatch.GetTimestamp() + SpinTicks;
            while ((job = Volatile.Read(ref s_current)) == seen && Stopwatch.GetTimestamp() < until) Thread.SpinWait(30);
            if (job != seen) continue;
            // Block: the flag is raised before s_current is read again, and Run publishes its job before it
            // reads the flag, so either this read sees the new job or Run sees the flag, takes the lock (which
            // Monitor.Wait releases) and pulses.
            lock (self)
            {
                Interlocked.Exchange(ref self.Sleeping, 1);
                if (Volatile.Read(ref s_current) == seen) Monitor.Wait(self);
                Interlocked.Exchange(ref self.Sleeping, 0);
            }
        }
    }
}
