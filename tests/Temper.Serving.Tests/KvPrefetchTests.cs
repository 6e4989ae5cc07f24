// KV prefetch: a prompt whose cached prefix blocks were pushed device -> host -> disk, queued behind
// another request (one running at a time), has those blocks read off disk on a background task while
// the other request runs; the disk tier's evictions meanwhile take other entries, never the ones being
// prefetched; its admission restores them from host memory and gives the cold run's greedy tokens (and
// the reference's), and the counters show the prefetches ready when needed. The read-ahead stays in
// the host tier's room (host entries + swapped + read-ahead blocks never exceed it; a 0-block host tier
// reads nothing ahead), the blocks it has no room for are counted as skipped and still found on disk,
// and it never demotes a block the waiting request wants to make room. Cancelling the waiting
// request gives its prefetched blocks back to the disk policy; disposing the engine while a block read
// is under way waits for it (no read of the closed file) and drops what was held.
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class KvPrefetchTests
{
    private static ServingRequest Request(int[] prompt) => new() { PromptIds = prompt, MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0 };

    private static void Drain(ServingEngine e)
    {
        while (e.Step()) { }
    }

    private static async Task<ChoiceResult> Serve(ServingEngine e, int[] prompt)
    {
        var h = e.Submit(Request(prompt));
        Drain(e);
        return Assert.Single(await h.CollectAsync(TestContext.Current.CancellationToken));
    }

    /// <summary>
    /// An engine of 8 blocks of 4 (one 17-token request + 6 new tokens takes 6), a small host tier (room for
    /// the prompt's 4 read-ahead blocks unless said otherwise) and a small disk tier, in which a served
    /// prompt's 4 full blocks have been pushed to disk by other prompts.
    /// </summary>
    private static async Task<(ServingEngine Engine, int[] Prompt, ChoiceResult Cold, ulong[] Keys, Func<int[]> Other)> PromptOnDisk(LanguageModel lm, int seed, int hostBlocks = 4)
    {
        string file = Path.Combine(Path.GetTempPath(), $"temper-kvprefetch-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8, MaxRunning = 1, MaxBatchTokens = 4, HostBlocks = hostBlocks, DiskBlocks = 8, DiskFile = file });
        try
        {
            var rng = new Random(seed);
            int[] Other() => Enumerable.Range(0, 17).Select(_ => rng.Next(3, 512)).ToArray();
            var a = Other();
            var cold = await Serve(e, a);
            var keys = e.Cache.PrefixHashes(0, a.AsSpan(0, 16));
            for (int i = 0; i < 8 && !keys.All(e.Tiers!.OnDisk); i++) await Serve(e, Other());
            Assert.True(keys.All(e.Tiers!.OnDisk), $"the prompt's blocks did not all reach the disk tier: {e.Tiers.Disk}");
            return (e, a, cold, keys, Other);
        }
        catch
        {
            e.Dispose();
            throw;
        }
    }

    [Fact]
    public async Task Blocks_on_disk_are_prefetched_while_another_request_runs_survive_eviction_and_give_the_cold_tokens()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        var (e, a, cold, keys, other) = await PromptOnDisk(lm, seed: 9);
        using var owned = e;
        var tiers = e.Tiers!;
        long evictions = tiers.Disk.Evictions, hits = tiers.Disk.Hits, cached = e.Stats.CachedPrefixTokens;

        var first = e.Submit(Request(other()));
        var queued = e.Submit(Request(a));
        Assert.True(e.Step());                                  // the other prompt runs; a waits, its blocks start reading
        Assert.Equal(keys.Length, tiers.Disk.Prefetches);
        await tiers.WhenPrefetched();
        Assert.Equal(hits, tiers.Disk.Hits);                    // read, not yet taken: the disk entries are still there
        Drain(e);
        Assert.Single(await first.CollectAsync(TestContext.Current.CancellationToken));
        var warm = Assert.Single(await queued.CollectAsync(TestContext.Current.CancellationToken));

        TierCounters d = tiers.Disk;
        TestContext.Current.SendDiagnosticMessage($"device: {tiers.Device}\nhost: {tiers.Host}\ndisk: {d}");
        Assert.True(d.Evictions > evictions, $"nothing was evicted from disk while the prefetch held its blocks: {d}");
        Assert.Equal(16, e.Stats.CachedPrefixTokens - cached); // all four full prompt blocks came back
        Assert.Equal(cold.Tokens, warm.Tokens);
        Assert.All(cold.Logprobs.Zip(warm.Logprobs), p => Assert.Equal(p.First, p.Second, 4));
        ServingFixtures.AssertMatchesReference(a, warm, what: "prefetched from disk");
        Assert.Equal((keys.Length, keys.Length, 0L, 0), (d.Prefetches, d.PrefetchHits, d.PrefetchesDropped, d.Prefetching));
        Assert.True(d.Hits - hits >= keys.Length && d.PrefetchSavedMs > 0, $"disk: {d}");
    }

    [Theory]
    [InlineData(2)]     // room for 2 of the 4 wanted blocks, once the host policy's victims are demoted to disk
    [InlineData(0)]     // no host tier: nothing is read ahead
    public async Task Read_ahead_stays_inside_a_small_host_tier_and_gives_the_cold_tokens(int hostBlocks)
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        var (e, a, cold, keys, other) = await PromptOnDisk(lm, seed: 9, hostBlocks);
        using var owned = e;
        var tiers = e.Tiers!;
        TierCounters h = tiers.Host, d = tiers.Disk;
        int HostHeld() => h.Blocks + h.AdapterBlocks + h.SwappedBlocks + d.Prefetching;   // blocks of host memory in use
        long cached = e.Stats.CachedPrefixTokens;

        var first = e.Submit(Request(other()));
        var queued = e.Submit(Request(a));
        int most = HostHeld();
        while (e.Step())                                        // a waits for several steps, wanting its 4 blocks
        {
            most = Math.Max(most, HostHeld());
            await tiers.WhenPrefetched();                       // reads done before the next step, so "ready when needed" does not race the read
        }
        Assert.Single(await first.CollectAsync(TestContext.Current.CancellationToken));
        var warm = Assert.Single(await queued.CollectAsync(TestContext.Current.CancellationToken));

        TestContext.Current.SendDiagnosticMessage($"device: {tiers.Device}\nhost: {h}\ndisk: {d}");
        Assert.True(most <= hostBlocks, $"host entries, swapped blocks and read-ahead held {most} blocks, over the host tier's {hostBlocks}\nhost: {h}\ndisk: {d}");
        Assert.Equal(hostBlocks, d.Prefetches);                 // as many as the host tier has room for, the rest skipped once each
        Assert.Equal((long)keys.Length, d.Prefetches + d.PrefetchesSkipped);
        Assert.Equal((d.Prefetches, 0L, 0), (d.PrefetchHits, d.PrefetchesDropped, d.Prefetching));
        Assert.Equal(16, e.Stats.CachedPrefixTokens - cached); // the wanted blocks were not evicted meanwhile: all four came back
        Assert.Equal(cold.Tokens, warm.Tokens);
        Assert.All(cold.Logprobs.Zip(warm.Logprobs), p => Assert.Equal(p.First, p.Second, 4));
        ServingFixtures.AssertMatchesReference(a, warm, what: $"read ahead into a {hostBlocks}-block host tier");
    }

    [Fact]
    public async Task Read_ahead_does_not_demote_a_wanted_block_to_make_room()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        var (e, a, cold, keys, other) = await PromptOnDisk(lm, seed: 9, hostBlocks: 2);
        using var owned = e;
        var tiers = e.Tiers!;
        // Where the prompt's blocks are: D device, h host, d disk, - nowhere.
        string Where() => string.Concat(keys.Select(k => e.Cache.Pool.Contains(k) ? 'D' : tiers.OnDisk(k) ? 'd' : tiers.Contains(k) ? 'h' : '-'));
        await Serve(e, [.. a.AsSpan(0, 8), .. other().AsSpan(0, 9)]);   // its first two blocks back on the device
        var first = e.Submit(Request(other()));
        for (int i = 0; i < 20 && Where() != "dh--"; i++) e.Step();     // then pushed down: block 0 on disk, block 1 the host's LRU entry
        Assert.Equal("dh--", Where());

        var queued = e.Submit(Request(a));
        Assert.True(e.Step());                                  // a waits, wanting blocks 0 (disk) and 1 (host)
        TierCounters d = tiers.Disk;
        Assert.Equal((0L, 1L), (d.Prefetches, d.PrefetchesSkipped));   // the host's victim would be block 1: block 0 stays on disk
        Assert.Equal("dh--", Where());
        Drain(e);
        Assert.Single(await first.CollectAsync(TestContext.Current.CancellationToken));
        var warm = Assert.Single(await queued.CollectAsync(TestContext.Current.CancellationToken));
        Assert.Equal(cold.Tokens, warm.Tokens);
        Assert.All(cold.Logprobs.Zip(warm.Logprobs), p => Assert.Equal(p.First, p.Second, 4));
    }

    [Fact]
    public async Task Cancelling_a_waiting_request_gives_its_prefetched_blocks_back()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        var (e, a, _, keys, other) = await PromptOnDisk(lm, seed: 9);
        using var owned = e;
        var tiers = e.Tiers!;
        tiers.BeforeBlockRead = () => Thread.Sleep(20);         // the reads are still under way when the request is cancelled
        var first = e.Submit(Request(other()));
        var queued = e.Submit(Request(a));
        Assert.True(e.Step());
        Assert.Equal(keys.Length, tiers.Disk.Prefetching);
        queued.Cancel();
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (tiers.Disk.Prefetching > 0 && DateTime.UtcNow < deadline)   // steps give finished reads back
            if (!e.Step()) Thread.Sleep(5);
        Assert.Equal((0, (long)keys.Length), (tiers.Disk.Prefetching, tiers.Disk.PrefetchesDropped));
        Assert.Single(await first.CollectAsync(TestContext.Current.CancellationToken));
        Assert.Equal(ServingFinish.Cancelled, (await queued.CollectAsync(TestContext.Current.CancellationToken)).Single().Finish);
    }

    [Fact]
    public async Task Disposing_the_engine_waits_for_a_block_read_under_way()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        var (e, a, _, keys, other) = await PromptOnDisk(lm, seed: 9);
        var tiers = e.Tiers!;
        int entered = 0, left = 0;
        using var started = new ManualResetEventSlim();
        tiers.BeforeBlockRead = () =>
        {
            Interlocked.Increment(ref entered);
            started.Set();
            Thread.Sleep(30);
            Interlocked.Increment(ref left);
        };
        e.Submit(Request(other()));
        var queued = e.Submit(Request(a));
        Assert.True(e.Step());
        Assert.True(started.Wait(TimeSpan.FromSeconds(10)));
        e.Dispose();                                            // while the first block's read is under way
        Assert.Equal(Volatile.Read(ref entered), Volatile.Read(ref left));
        Assert.Equal((0, (long)keys.Length), (tiers.Disk.Prefetching, tiers.Disk.PrefetchesDropped));
        Assert.Equal(ServingFinish.Cancelled, (await queued.CollectAsync(TestContext.Current.CancellationToken)).Single().Finish);
    }
}
