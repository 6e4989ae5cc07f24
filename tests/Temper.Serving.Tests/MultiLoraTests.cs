// Multi-LoRA serving: one batch mixing four adapters and the base model gives each request the greedy
// tokens (and log-probs) of serving it alone with its adapter merged into the weights (LoraAdapter
// merge), steps under a 1e-3 top-2 gap excepted; the adapters really differ; and adapters load and
// unload at run time. With a device pool that holds two adapters (the slots follow the pool), a batch over four still gives each request
// its merged tokens: adapters are evicted (LRU) and, with no slower tier configured, padded again from
// their folders when needed, and counted. Adding adapters allocates no device memory: the stacks are
// allocated once, at their first use, and kept when an engine re-attaches the stack with the same shapes
// (building them on every Add made loading L adapters cost 1 + 2 + ... + L stacks).
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class MultiLoraTests
{
    [Fact]
    public async Task A_mixed_adapter_batch_matches_each_adapter_merged_alone()
    {
        var be = new CpuBackend(1);
        using var lm = LanguageModel.Load(ServingFixtures.Model, be);
        using var stack = new AdapterStack(lm.Weights, be);
        for (int i = 0; i < 4; i++) stack.Add($"a{i}", LoraAdapter.Load(ServingFixtures.Adapter(i)));
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = 32 }, stack);
        var rng = new Random(3);
        var prompt = Enumerable.Range(0, 7).Select(_ => rng.Next(3, 512)).ToArray();
        string?[] adapters = ["a0", null, "a1", "a2", "a3", "a1"];
        var handles = adapters.Select(a => e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 8, IgnoreEos = true, TopLogprobs = 0, Adapter = a })).ToArray();
        e.Start();
        var results = new List<ChoiceResult>();
        foreach (var h in handles) results.Add(Assert.Single(await h.CollectAsync(TestContext.Current.CancellationToken)));
        for (int i = 0; i < adapters.Length; i++)
            ServingFixtures.AssertMatchesReference(prompt, results[i], adapters[i] == null ? null : ServingFixtures.Adapter(int.Parse(adapters[i]![1..])), $"adapter {adapters[i] ?? "base"}");
        // The adapters change the model: the first step's log-prob of the base's token differs per adapter (by more than the
        // last bits a row's products may move with the rows batched beside it: a1's second request hit the first's prefix
        // blocks and ran in another step).
        var first = results.Select(r => r.Logprobs[0]).ToArray();
        for (int i = 0; i < first.Length; i++)
            for (int j = i + 1; j < first.Length; j++)
                Assert.True(adapters[i] == adapters[j] ? Math.Abs(first[i] - first[j]) < 1e-5 : Math.Abs(first[i] - first[j]) > 1e-4,
                    $"requests {i} ({adapters[i] ?? "base"}) and {j} ({adapters[j] ?? "base"}): first log-probs {first[i]} and {first[j]}");
        Assert.Equal(results[2].Tokens, results[5].Tokens);
    }

    [Fact]
    public async Task A_batch_over_more_adapters_than_the_device_holds_swaps_them_from_host_and_matches_each_merged()
    {
        var be = new CpuBackend(1);
        using var lm = LanguageModel.Load(ServingFixtures.Model, be);
        using var stack = new AdapterStack(lm.Weights, be);
        for (int i = 0; i < 4; i++) stack.Add($"a{i}", LoraAdapter.Load(ServingFixtures.Adapter(i)));
        int k;
        using (new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64 }, stack)) k = stack.BlocksOf(0);
        // A pool of 2k + 8 blocks holds two adapters beside the KV of two requests, never three adapters.
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 2 * k + 8, MaxBatchTokens = 32 }, stack);
        var q = lm.Weights.Layers[0].Q;
        Assert.True(k > 8, $"an adapter takes {k} blocks");
        Assert.Equal(2, stack.Slots);
        Assert.Equal(2, stack.For(q.Name)!.A.Shape[0]); // two device slots for four adapters
        var rng = new Random(4);
        var prompt = Enumerable.Range(0, 7).Select(_ => rng.Next(3, 512)).ToArray();
        string?[] adapters = ["a0", "a1", null, "a2", "a3", "a0", "a2"];
        var handles = adapters.Select(a => e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 6, IgnoreEos = true, TopLogprobs = 0, Adapter = a })).ToArray();
        e.Start();
        var results = new List<ChoiceResult>();
        foreach (var h in handles) results.Add(Assert.Single(await h.CollectAsync(TestContext.Current.CancellationToken)));
        for (int i = 0; i < adapters.Length; i++)
            ServingFixtures.AssertMatchesReference(prompt, results[i], adapters[i] == null ? null : ServingFixtures.Adapter(int.Parse(adapters[i]![1..])), $"adapter {adapters[i] ?? "base"}");
        TestContext.Current.SendDiagnosticMessage($"adapters: device {stack.Device}; {stack.FolderLoads} loads from folders");
        Assert.True(stack.Device.AdapterEvictions > 0, $"device: {stack.Device}");
        Assert.True(stack.Device.AdapterMisses >= 4 && stack.Device.AdapterBytesIn > 0, $"device: {stack.Device}"); // every adapter was loaded at least once
        Assert.Equal(stack.Device.AdapterBytesIn, stack.FolderBytes);           // no slower tier: every load came from a folder
        Assert.Equal(stack.Device.AdapterMisses, stack.FolderLoads);
        Assert.Equal(0, stack.Device.AdapterBytesOut);                          // and evictions moved nothing
        Assert.True(stack.Device.Adapters is > 0 and <= 2, $"device: {stack.Device}");
    }

    [Fact]
    public void Adapters_load_and_unload_at_run_time()
    {
        var be = new CpuBackend(1);
        using var lm = LanguageModel.Load(ServingFixtures.Model, be);
        using var stack = new AdapterStack(lm.Weights, be);
        stack.Add("x", LoraAdapter.Load(ServingFixtures.Adapter(0)));
        stack.Add("y", LoraAdapter.Load(ServingFixtures.Adapter(1)));
        var q = lm.Weights.Layers[0].Q;
        Assert.Equal([2, 4, q.In], stack.For(q.Name)!.A.Shape.Dims.ToArray());
        Assert.Throws<Core.TemperException>(() => stack.Add("x", LoraAdapter.Load(ServingFixtures.Adapter(2))));
        stack.Remove("x");
        Assert.Equal(["y"], stack.Names);
        Assert.Equal([1, 4, q.In], stack.For(q.Name)!.A.Shape.Dims.ToArray());
        Assert.Throws<Core.TemperException>(() => stack.Remove("x"));
    }

    [Fact]
    public void Adding_adapters_allocates_the_device_stacks_once_at_first_use()
    {
        var be = new CpuBackend(1);
        using var lm = LanguageModel.Load(ServingFixtures.Model, be);
        using var stack = new AdapterStack(lm.Weights, be);
        long before = be.LiveBytes;
        for (int i = 0; i < 4; i++) stack.Add($"a{i}", LoraAdapter.Load(ServingFixtures.Adapter(i)));
        Assert.Equal(before, be.LiveBytes);                       // nothing on the device until it is used
        be.ResetPeak();
        var q = lm.Weights.Layers[0].Q;
        var st = stack.For(q.Name)!;
        Assert.Equal(4, st.A.Shape[0]);
        long stacks = be.LiveBytes - before;
        Assert.True(stacks > 0);
        Assert.Equal(be.PeakBytes, be.LiveBytes);                  // allocated once, nothing transient
        using (var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 128 }, stack))
        {
            Assert.Equal(4, stack.Slots);                                          // the pool holds all four
            Assert.Equal(before + stacks + 128 * e.Cache.BlockBytes, be.LiveBytes);  // only the KV pool is new
            Assert.Same(st, stack.For(q.Name));                    // same shapes: the stacks are kept
        }
    }
}
