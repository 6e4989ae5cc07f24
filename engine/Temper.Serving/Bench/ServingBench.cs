// A serving workload measured end to end: every request is submitted at once to a running engine,
// each stream is read as it arrives (event times are the engine's emission times), and the result is the generated tokens per second of wall time,
// time to first token and inter-token latency (p50, p99, in ms) and the engine's counters.
using System.Diagnostics;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Bench;

public sealed record ServingBenchResult(int Requests, int Tokens, double Seconds, double CpuSeconds, double TtftP50Ms, double TtftP99Ms, double ItlP50Ms, double ItlP99Ms, ServingStats Stats)
{
    public double TokensPerSecond => Tokens / Seconds;
    /// <summary>Tokens per second of CPU time this process used: steadier than wall time on a shared machine.</summary>
    public double TokensPerCpuSecond => Tokens / CpuSeconds;
}

public static class ServingBench
{
    public static ServingBenchResult Run(ServingEngine engine, IReadOnlyList<ServingRequest> requests)
    {
        engine.Start();
        var before = engine.Stats;
        var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        var runs = requests.Select(r =>
        {
            var handle = engine.Submit(r);
            return Task.Run(async () =>
            {
                var times = new List<double>();
                await foreach (var e in handle.Events.ReadAllAsync().ConfigureAwait(false))
                {
                    if (e.Error != null) throw new InvalidOperationException(e.Error);
                    if (e.Token >= 0) times.Add(Stopwatch.GetElapsedTime(handle.SubmittedAt, e.Timestamp).TotalMilliseconds);
                }
                return times;
            });
        }).ToArray();
        Task.WaitAll(runs);
        double seconds = clock.Elapsed.TotalSeconds;
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
        var all = runs.Select(t => t.Result).ToArray();
        var ttft = all.Where(t => t.Count > 0).Select(t => t[0]).ToArray();
        var itl = all.SelectMany(t => t.Zip(t.Skip(1), (a, b) => b - a)).ToArray();
        var s = engine.Stats;
        var delta = s with
        {
            Steps = s.Steps - before.Steps, PrefillTokens = s.PrefillTokens - before.PrefillTokens, DecodeTokens = s.DecodeTokens - before.DecodeTokens,
            CachedPrefixTokens = s.CachedPrefixTokens - before.CachedPrefixTokens, Preemptions = s.Preemptions - before.Preemptions,
            RequestsFinished = s.RequestsFinished - before.RequestsFinished, CopiedOnWrite = s.CopiedOnWrite - before.CopiedOnWrite,
            Swaps = s.Swaps - before.Swaps, Recomputations = s.Recomputations - before.Recomputations,
        };
        return new ServingBenchResult(requests.Count, all.Sum(t => t.Count), seconds, cpuSeconds, Percentile(ttft, 0.5), Percentile(ttft, 0.99), Percentile(itl, 0.5), Percentile(itl, 0.99), delta);
    }

    /// <summary>The nearest-rank percentile (NaN for no values).</summary>
    public static double Percentile(IReadOnlyCollection<double> values, double p)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToArray();
        return sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
    }
}
