// Adapter prefetch: a request whose adapter waits on disk, queued behind a request on another adapter
// (one device slot), has its adapter read off disk on a background task while the other request
// decodes; when its turn comes the step only copies it in. It is served with the greedy tokens of a
// run where the adapter never left the device, and the counters show the prefetch (started from disk,
// ready when needed) and the disk hit it became.
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class AdapterPrefetchTests
{
    private static ServingRequest Request(int[] prompt, string adapter) =>
        new() { PromptIds = prompt, MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0, Adapter = adapter };

    /// <summary>Steps the engine on this thread until it has nothing left to do.</summary>
    private static void Drain(ServingEngine e)
    {
        while (e.Step()) { }
    }

    [Fact]
    public async Task An_adapter_waiting_on_disk_is_prefetched_while_another_decodes_and_gives_the_same_tokens()
    {
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));
        using var stack = new AdapterStack(lm.Weights, lm.Decoder.Backend);
        for (int i = 0; i < 3; i++) stack.Add($"a{i}", LoraAdapter.Load(ServingFixtures.Adapter(i)));
        var rng = new Random(13);
        var prompt = Enumerable.Range(0, 9).Select(_ => rng.Next(3, 512)).ToArray();
        var cancel = TestContext.Current.CancellationToken;

        ChoiceResult never;
        int k;
        using (var stay = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64 }, stack))
        {
            k = stack.BlocksOf(0);
            var h = stay.Submit(Request(prompt, "a0"));
            Drain(stay);
            never = Assert.Single(await h.CollectAsync(cancel));
        }

        // One device slot (a pool of 2k - 1 blocks), a host tier for one adapter, a disk tier for the rest.
        string file = Path.Combine(Path.GetTempPath(), $"temper-prefetch-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 2 * k - 1, HostBlocks = k + 1, DiskBlocks = 4 * k, DiskFile = file }, stack);
        var tiers = e.Tiers!;
        Assert.Equal(1, stack.Slots);
        foreach (string a in new[] { "a0", "a1", "a2" })                    // a0 ends on disk, a1 on the host, a2 on the device
        {
            var h = e.Submit(Request(prompt, a));
            Drain(e);
            await h.CollectAsync(cancel);
        }
        Assert.Equal(1, tiers.Disk.Adapters);
        Assert.Equal(0, tiers.Disk.AdapterPrefetches);

        var first = e.Submit(Request(prompt, "a2"));
        var queued = e.Submit(Request(prompt, "a0"));
        Assert.True(e.Step());                                              // a2 runs; a0 waits for the slot, its read starts
        Assert.Equal(1, tiers.Disk.AdapterPrefetches);
        await stack.WhenPrefetched();
        Assert.Equal(0, tiers.Disk.AdapterHits);                            // read, not yet taken: the disk entry is still there
        Drain(e);
        Assert.Single(await first.CollectAsync(cancel));
        var back = Assert.Single(await queued.CollectAsync(cancel));

        Assert.Equal(never.Tokens, back.Tokens);
        Assert.All(never.Logprobs.Zip(back.Logprobs), p => Assert.Equal(p.First, p.Second, 5));
        TierCounters d = tiers.Device, s = tiers.Disk;
        TestContext.Current.SendDiagnosticMessage($"device: {d}\ndisk: {s}");
        Assert.True(d.AdapterPrefetches >= 1 && d.AdapterPrefetchHits >= 1, $"device: {d}");
        Assert.Equal(1, s.AdapterHits);                                     // the prefetch became the disk hit
        Assert.True(d.AdapterStallMs > 0, $"device: {d}");
    }
}
