// Adapters and KV blocks in the same tiers (S-LoRA's unified paging): a resident adapter takes KV
// blocks of the device pool, so the scheduler sees fewer blocks and preempts rather than fails, with
// every request still getting its merged adapter's greedy tokens; an adapter pushed from the device to
// host and on to the memory-mapped disk tier comes back with the tokens of a run where it never left
// the device; the per-tier adapter bytes add up (out of one tier = into the next); an adapter larger
// than a whole tier is refused by name; the pool's one LRU picks the older of a cached block and a
// resident adapter.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class UnifiedTiersTests
{
    private static async Task<ChoiceResult> Serve(ServingEngine e, int[] prompt, string? adapter) =>
        (await e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0, Adapter = adapter })
            .CollectAsync(TestContext.Current.CancellationToken)).Single();

    private static AdapterStack Stack(LanguageModel lm, int adapters)
    {
        var stack = new AdapterStack(lm.Weights, lm.Decoder.Backend);
        for (int i = 0; i < adapters; i++) stack.Add($"a{i}", LoraAdapter.Load(ServingFixtures.Adapter(i)));
        return stack;
    }

    /// <summary>KV blocks of 4 positions one fixture adapter takes on the device (it shrinks what KV can have).</summary>
    private static int AdapterBlocks(LanguageModel lm, AdapterStack stack)
    {
        using var probe = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64 }, stack);
        Assert.Equal(64, probe.Cache.Pool.Available);
        stack.BeginStep();
        Assert.True(stack.TryAcquire(0));
        int k = 64 - probe.Cache.Pool.Available;          // pinned by this step: KV cannot take its blocks
        Assert.Equal(k, stack.Device.AdapterBlocks);
        stack.BeginStep();
        Assert.Equal(64, probe.Cache.Pool.Available);     // unpinned: evictable again, so available to KV
        return k;
    }

    [Fact]
    public async Task Adapters_take_kv_blocks_and_the_scheduler_preempts_rather_than_fails()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        using var stack = Stack(lm, 4);
        int k = AdapterBlocks(lm, stack);
        Assert.True(k >= 1);
        // Two 9-token prompts (3 blocks each) and their adapters fill 2k + 6 blocks; growing to 14 positions
        // (4 blocks each) they need 2k + 8, so one is preempted while the other runs.
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 2 * k + 6, MaxBatchTokens = 32 }, stack);
        using var tiers = new KvTiers(e.Cache, hostBlocks: 64, diskBlocks: 0, null);
        var rng = new Random(11);
        var prompts = Enumerable.Range(0, 4).Select(_ => Enumerable.Range(0, 9).Select(_ => rng.Next(3, 512)).ToArray()).ToArray();
        var handles = prompts.Select((p, i) => e.Submit(new ServingRequest { PromptIds = p, MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0, Adapter = $"a{i}" })).ToArray();
        e.Start();
        for (int i = 0; i < 4; i++)
        {
            var r = Assert.Single(await handles[i].CollectAsync(TestContext.Current.CancellationToken));
            Assert.Equal(ServingFinish.Length, r.Finish);
            ServingFixtures.AssertMatchesReference(prompts[i], r, ServingFixtures.Adapter(i), $"a{i}");
        }
        TestContext.Current.SendDiagnosticMessage($"adapter blocks {k}; {e.Stats}\ndevice: {tiers.Device}\nhost: {tiers.Host}");
        Assert.True(e.Stats.Preemptions > 0, $"{e.Stats}");
        Assert.True(tiers.Device.AdapterEvictions > 0 && tiers.Host.AdapterBytesIn > 0, $"device: {tiers.Device}; host: {tiers.Host}"); // adapters made room for KV
        Assert.True(tiers.Device.AdapterBlocks <= e.Cache.Pool.Count);
    }

    [Fact]
    public async Task An_adapter_pushed_to_disk_and_back_gives_the_tokens_of_one_that_never_left_and_the_bytes_add_up()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        using var stack = Stack(lm, 3);
        int k = AdapterBlocks(lm, stack);
        var rng = new Random(12);
        var prompt = Enumerable.Range(0, 9).Select(_ => rng.Next(3, 512)).ToArray();

        ChoiceResult never;
        using (var stay = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64 }, stack))
        {
            stay.Start();
            never = await Serve(stay, prompt, "a0");                   // a0 loaded once, never leaves the device
            Assert.Equal(0, stack.Device.AdapterEvictions);
        }

        // A pool of 2k - 1 blocks: one device slot (and room for the KV without evicting cached blocks);
        // the host tier holds one adapter (and a block more), the disk tier the rest.
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 2 * k - 1 }, stack);
        Assert.Equal(1, stack.Slots);
        string file = Path.Combine(Path.GetTempPath(), $"temper-tiers-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        using var tiers = new KvTiers(e.Cache, hostBlocks: k + 1, diskBlocks: 4 * k, file);
        long folder0 = stack.FolderBytes, loads0 = stack.FolderLoads;
        e.Start();
        await Serve(e, prompt, "a0");
        await Serve(e, prompt, "a1");                                  // a0: device -> host
        await Serve(e, prompt, "a2");                                  // a1: device -> host, a0: host -> disk
        Assert.Equal(1, tiers.Disk.Adapters);
        var back = await Serve(e, prompt, "a0");                       // a0: disk -> device
        Assert.Equal(never.Tokens, back.Tokens);
        Assert.All(never.Logprobs.Zip(back.Logprobs), p => Assert.Equal(p.First, p.Second, 5));
        ServingFixtures.AssertMatchesReference(prompt, back, ServingFixtures.Adapter(0), "a0 back from disk");

        TierCounters d = tiers.Device, h = tiers.Host, s = tiers.Disk;
        long hostToDevice() => h.AdapterBytesOut - s.AdapterBytesIn;                     // host's bytes went on to disk or to the device
        TestContext.Current.SendDiagnosticMessage($"adapter blocks {k}\ndevice: {d}\nhost: {h}\ndisk: {s}");
        Assert.True(s.AdapterHits == 1 && s.AdapterBytesOut > 0, $"disk: {s}");
        Assert.Equal(d.AdapterBytesOut, h.AdapterBytesIn);                             // every device eviction went to host
        Assert.Equal(3, d.AdapterEvictions);                                           // a0, a1, a2 left the device
        long one = d.AdapterBytesOut / 3;
        Assert.True(h.AdapterEvictions == 2 && h.AdapterBytesOut == 2 * one && s.AdapterBytesIn == 2 * one, $"host: {h}; disk: {s}"); // a0, a1 went host -> disk
        // Into the device = out of host to the device + out of disk + padded from folders; the misses likewise.
        Assert.Equal(d.AdapterBytesIn, hostToDevice() + s.AdapterBytesOut + (stack.FolderBytes - folder0));
        Assert.Equal(d.AdapterMisses, h.AdapterHits + s.AdapterHits + (stack.FolderLoads - loads0));
        Assert.Equal(4, d.AdapterMisses);
        Assert.Equal(d.Adapters * k, d.AdapterBlocks);
    }

    [Fact]
    public void An_adapter_larger_than_a_whole_tier_is_refused_by_name()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        using var stack = Stack(lm, 1);
        int k = AdapterBlocks(lm, stack);
        var device = Assert.Throws<TemperException>(() => new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = k - 1 }, stack));
        Assert.Contains("'a0'", device.Message);
        Assert.Contains("device tier", device.Message);
        using (var small = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = k + 2 }, stack))
        {
            var prompt = Enumerable.Range(3, 6).ToArray();
            var beside = Assert.Throws<TemperException>(() => small.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 3, Adapter = "a0" }));
            Assert.Contains("beside adapter 'a0'", beside.Message);
            small.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 2, Adapter = "a0" });          // 8 positions: 2 blocks fit beside it
        }
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64 }, stack);
        var host = Assert.Throws<TemperException>(() => new KvTiers(e.Cache, hostBlocks: k - 1, diskBlocks: 0, null));
        Assert.Contains("'a0'", host.Message);
        Assert.Contains("host tier", host.Message);
        var disk = Assert.Throws<TemperException>(() => new KvTiers(e.Cache, hostBlocks: k, diskBlocks: k - 1, "unused.bin"));
        Assert.Contains("'a0'", disk.Message);
        Assert.Contains("disk tier", disk.Message);
        Assert.False(File.Exists("unused.bin"));
        Assert.Null(e.Cache.Tiers);
    }

    /// <summary>A stand-in adapter holding pool blocks, last used at Stamp.</summary>
    private sealed class Resident(BlockPool pool) : IPoolResidents
    {
        public List<int> Held { get; } = [];
        public long Stamp { get; set; }
        public int Evicted { get; private set; }
        public long OldestStamp => Held.Count > 0 ? Stamp : long.MaxValue;
        public int EvictableBlocks => Held.Count;
        public void EvictOldest()
        {
            foreach (int b in Held) pool.Release(b);
            Held.Clear();
            Evicted++;
        }
        public void CheckFits(IKvTierStore tiers) { }
    }

    [Fact]
    public void One_lru_runs_over_cached_blocks_and_residents()
    {
        var pool = new BlockPool(4);
        var r = new Resident(pool);
        pool.Residents = r;
        int a = pool.Allocate(), b = pool.Allocate();
        pool.Register(a, 11);
        pool.Register(b, 12);
        pool.Release(a);                                   // cached, freed first
        r.Held.AddRange([pool.Allocate(), pool.Allocate()]);
        r.Stamp = pool.Tick();                             // the resident is used next
        pool.Release(b);                                   // cached, freed last
        Assert.Equal(4, pool.Available);
        Assert.Equal(a, pool.Allocate());                  // a is older than the resident
        Assert.Equal(0, r.Evicted);
        Assert.False(pool.Contains(11));
        pool.Allocate();                                   // the resident is older than b
        Assert.Equal(1, r.Evicted);
        Assert.True(pool.Contains(12));
        Assert.Equal(2, pool.Available);                   // one of the resident's blocks and b
    }
}
