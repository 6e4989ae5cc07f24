// KV tiering: a device pool too small to keep a prompt's blocks pushes them to host memory and on to
// the memory-mapped disk file; serving the prompt again brings them back through every tier and gives
// the cold run's greedy tokens (and the reference's); the counters show each move. A block computed
// again while a tier still holds its contents is not stored down twice (its slots would leak). The LRU
// policy evicts the least recently touched key. Tiers asked for in ServingOptions are made and owned by
// the engine (its disk file exists while it runs and is gone after); a disk tier without a file is
// refused.
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class KvTieringTests
{
    private static async Task<ChoiceResult> Serve(ServingEngine e, int[] prompt) =>
        (await e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0 }).CollectAsync(TestContext.Current.CancellationToken)).Single();

    [Fact]
    public async Task Evicted_prefix_blocks_come_back_from_host_and_disk_with_the_same_tokens()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        // 8 blocks of 4: one 17-token request (4 full prompt blocks + 1) plus its 6 new tokens needs 6.
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8, MaxRunning = 1 });
        string file = Path.Combine(Path.GetTempPath(), $"temper-kv-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        using var tiers = new KvTiers(e.Cache, hostBlocks: 2, diskBlocks: 32, file);
        e.Start();
        var rng = new Random(9);
        int[] Prompt() => Enumerable.Range(0, 17).Select(_ => rng.Next(3, 512)).ToArray();
        var a = Prompt();
        var cold = await Serve(e, a);
        foreach (var other in new[] { Prompt(), Prompt(), Prompt() }) await Serve(e, other); // push a's blocks down the tiers
        Assert.True(File.Exists(file));
        Assert.True(tiers.Host.BytesIn > 0 && tiers.Host.Evictions > 0, $"host: {tiers.Host}");
        Assert.True(tiers.Disk.BytesIn > 0, $"disk: {tiers.Disk}");
        long cachedBefore = e.Stats.CachedPrefixTokens;

        var warm = await Serve(e, a);
        Assert.Equal(16, e.Stats.CachedPrefixTokens - cachedBefore); // all four full prompt blocks came back
        Assert.Equal(cold.Tokens, warm.Tokens);
        Assert.All(cold.Logprobs.Zip(warm.Logprobs), p => Assert.Equal(p.First, p.Second, 4)); // one row computed instead of 17: another summation order
        ServingFixtures.AssertMatchesReference(a, warm, what: "restored from tiers");
        Assert.True(tiers.Disk.Hits > 0 && tiers.Disk.BytesOut > 0, $"disk: {tiers.Disk}");
        Assert.True(tiers.Device.BytesIn >= 4 * e.Cache.BlockBytes && tiers.Device.Misses >= 4, $"device: {tiers.Device}");
        TestContext.Current.SendDiagnosticMessage($"device: {tiers.Device}\nhost: {tiers.Host}\ndisk: {tiers.Disk}");
    }

    [Fact]
    public async Task Prefix_hits_in_the_device_tier_are_counted()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 32 });
        using var tiers = new KvTiers(e.Cache, hostBlocks: 4, diskBlocks: 0, null);
        e.Start();
        var prompt = Enumerable.Range(3, 13).ToArray();
        var cold = await Serve(e, prompt);
        var warm = await Serve(e, prompt);
        Assert.Equal(cold.Tokens, warm.Tokens);
        Assert.Equal(3, tiers.Device.Hits);
        Assert.Equal(0, tiers.Host.BytesIn); // nothing had to leave the device
    }

    [Fact]
    public void A_block_computed_again_beside_its_tier_copy_is_not_stored_twice()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        using var cache = new PagedKvCache(lm.Config, lm.Decoder.Backend, blocks: 1, blockSize: 4);
        using var tiers = new KvTiers(cache, hostBlocks: 2, diskBlocks: 0, null);
        const ulong hash = 42;
        for (int round = 0; round < 2; round++)            // the same contents computed, cached and evicted twice
        {
            int b = cache.Pool.Allocate();
            cache.Pool.Register(b, hash);
            cache.Pool.Release(b);
            cache.Pool.Release(cache.Pool.Allocate());      // the pool reuses the block: its contents go to the host tier
        }
        Assert.True(tiers.Contains(hash));
        Assert.Equal((1, cache.BlockBytes), (tiers.Host.Blocks, tiers.Host.BytesIn));
    }

    [Fact]
    public void Lru_evicts_the_least_recently_touched_key()
    {
        var lru = new LruPolicy();
        lru.Touch(1);
        lru.Touch(2);
        lru.Touch(3);
        lru.Touch(1);
        Assert.Equal(2UL, lru.Victim());
        lru.Remove(2);
        Assert.Equal(3UL, lru.Victim());
    }

    [Fact]
    public void Tiers_in_the_options_are_made_and_owned_by_the_engine()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        string file = Path.Combine(Path.GetTempPath(), $"temper-kv-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        using (var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8, HostBlocks = 2, DiskBlocks = 16, DiskFile = file }))
        {
            Assert.NotNull(e.Tiers);
            Assert.Same(e.Tiers, e.Cache.Tiers);
            Assert.Equal((2, 16), (e.Tiers.HostBlocks, e.Tiers.DiskBlocks));
            Assert.True(File.Exists(file));
        }
        Assert.False(File.Exists(file));
        var missing = Assert.Throws<Core.TemperException>(() => new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8, DiskBlocks = 16 }));
        Assert.Contains("DiskFile", missing.Message);
        using var none = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8 });
        Assert.Null(none.Tiers);
    }
}
