// The serving engine on the ILGPU backend (ILGPU's CPU accelerator in CI): paged KV pools and adapter
// stacks in device memory, the paged attention and gathered LoRA kernels, copy-on-write block copies
// a tier round trip through the staging tensor, and preemption by swapping to the host tier and back,
// giving the CPU backend's tokens.
using Temper.Kernels.Cpu;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class IlgpuServingTests
{
    private static async Task<IReadOnlyList<ChoiceResult>> Serve(Func<Core.IBackend> make)
    {
        using var be = make();
        using var lm = LanguageModel.Load(ServingFixtures.Model, be);
        using var stack = new AdapterStack(lm.Weights, be);
        stack.Add("a2", LoraAdapter.Load(ServingFixtures.Adapter(2)));
        // The adapter takes 18 blocks of the pool while resident (it shares the KV budget): 5 are left for KV.
        using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 5 + 18, MaxBatchTokens = 16 }, stack);
        using var tiers = new KvTiers(e.Cache, hostBlocks: 24, diskBlocks: 0, null);
        e.Start();
        var prompt = Enumerable.Range(40, 9).ToArray();
        var results = new List<ChoiceResult>();
        foreach (var adapter in new string?[] { null, "a2" })
        {
            var h = e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 3, IgnoreEos = true, TopLogprobs = 0, Adapter = adapter, N = 2 });
            results.AddRange(await h.CollectAsync(TestContext.Current.CancellationToken));
        }
        // The base prompt's blocks were evicted to the host tier by now; serve it again from there.
        results.AddRange(await e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 3, IgnoreEos = true, TopLogprobs = 0 }).CollectAsync(TestContext.Current.CancellationToken));
        Assert.True(tiers.Host.Hits > 0, $"host: {tiers.Host}");
        // Three sequences (one request, n = 3, admitted together: no race with the engine's thread) that
        // grow to 9 blocks each in a pool of 23 (the idle adapter is evicted for them): the scheduler
        // swaps sequences out and back.
        var many = e.Submit(new ServingRequest { PromptIds = Enumerable.Range(60, 6).ToArray(), MaxNewTokens = 28, IgnoreEos = true, TopLogprobs = 0, N = 3 });
        results.AddRange(await many.CollectAsync(TestContext.Current.CancellationToken));
        Assert.True(e.Stats.Swaps > 0, $"no swap: {e.Stats}");
        Assert.Equal(0, tiers.Host.SwappedBlocks);
        return results;
    }

    [Fact]
    public async Task The_ilgpu_backend_serves_the_cpu_backends_tokens()
    {
        var cpu = await Serve(() => new CpuBackend(1));
        var ilgpu = await Serve(() => IlgpuBackend.Create("ilgpu-cpu"));
        Assert.Equal(cpu.Count, ilgpu.Count);
        for (int i = 0; i < cpu.Count; i++)
        {
            Assert.Equal(cpu[i].Tokens, ilgpu[i].Tokens);
            Assert.All(cpu[i].Logprobs.Zip(ilgpu[i].Logprobs), p => Assert.Equal(p.First, p.Second, 3));
        }
    }
}
