// The bf16 KV cache (ServingOptions.KvCacheDType, `--kv-cache-dtype bfloat16`; auto for a bf16 model, as vLLM's default):
// its pools hold bf16, so a block takes half the bytes; a mixed batch with chunked prefill serves the contiguous f32
// decoder's greedy tokens (teacher-forced) except where rounding K and V to bf16 may flip a near tie, with log-probs within
// what that rounding moves them, and not the f32 cache's log-probs (the rounding happened); sequences swapped to the host
// tier and prefix blocks evicted through host and disk come back as the same bf16 bits (the unconstrained / cold run's
// tokens); the ILGPU backend (CPU accelerator), swapping through its staging tensor, serves the CPU backend's tokens; auto follows
// the weights' dtype on a device backend and keeps f32 on the CPU backend.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class Bf16KvCacheTests : IDisposable
{
    // Rounding K and V to bf16 (relative error <= 2^-9) moved the tiny llama's log-probs by at most 3.8e-4 from the f32 cache's on
    // these prompts (2026-11-25); a cache written wrong (a wrong row, k for v) moves them by far more.
    private const float Bf16Logprob = 2e-3f, Bf16Gap = 5e-3f;

    private readonly LanguageModel _lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));

    public void Dispose() => _lm.Dispose();

    private static int[] Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(3, 512)).ToArray();
    }

    private static ServingRequest Greedy(int[] prompt, int tokens) => new() { PromptIds = prompt, MaxNewTokens = tokens, IgnoreEos = true, TopLogprobs = 0 };

    private static List<ChoiceResult> Serve(ServingEngine e, IEnumerable<int[]> prompts, int tokens) =>
        [.. ServingFixtures.RunAll(e, [.. prompts.Select(p => e.Submit(Greedy(p, tokens)))]).Select(r => Assert.Single(r))];

    private static readonly int[][] Prompts = [Prompt(5, 1), Prompt(13, 2), Prompt(2, 3), Prompt(9, 4)];

    [Fact]
    public void A_bf16_cache_takes_half_the_bytes_and_serves_the_reference_tokens_within_its_rounding()
    {
        using var bf16 = new ServingEngine(_lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = 7, KvCacheDType = DType.BF16 });
        using var f32 = new ServingEngine(_lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = 7 });
        Assert.Equal(DType.F32, f32.Cache.DType); // auto on f32 weights
        Assert.Equal(DType.BF16, bf16.Cache.K(0).DType);
        Assert.Equal(f32.Cache.BlockBytes / 2, bf16.Cache.BlockBytes);

        var served = Serve(bf16, Prompts, 10);
        var plain = Serve(f32, Prompts, 10);
        double moved = 0;
        for (int i = 0; i < Prompts.Length; i++)
        {
            ServingFixtures.AssertMatchesReference(Prompts[i], served[i], what: $"bf16 cache, request {i}", gap: Bf16Gap, logprobTolerance: Bf16Logprob);
            int same = served[i].Tokens.Zip(plain[i].Tokens).TakeWhile(p => p.First == p.Second).Count();
            for (int t = 0; t < same; t++) moved = Math.Max(moved, Math.Abs(served[i].Logprobs[t] - plain[i].Logprobs[t]));
        }
        TestContext.Current.SendDiagnosticMessage($"largest log-prob change from the f32 cache: {moved:E2}");
        Assert.True(moved > 1e-6, "the bf16 cache served the f32 cache's log-probs: K and V were not rounded");
        Assert.Equal(64, bf16.Stats.FreeBlocks);
    }

    [Fact]
    public void Swapped_sequences_come_back_as_the_same_bf16_blocks()
    {
        var prompts = Enumerable.Range(0, 4).Select(i => Prompt(6, 20 + i)).ToArray();
        List<ChoiceResult> Run(ServingOptions o, out ServingStats stats)
        {
            using var e = new ServingEngine(_lm.Decoder, o with { KvCacheDType = DType.BF16, PrefixCaching = false });
            using var tiers = new KvTiers(e.Cache, hostBlocks: 32, diskBlocks: 0, null);
            var results = Serve(e, prompts, 14);
            stats = e.Stats;
            Assert.Equal(0, tiers.Host.SwappedBlocks);
            return results;
        }
        var free = Run(new ServingOptions { BlockSize = 4, Blocks = 64 }, out var freeStats);
        Assert.Equal(0, freeStats.Preemptions);
        var swapped = Run(new ServingOptions { BlockSize = 4, Blocks = 10, Preemption = PreemptionMode.Swap }, out var st);
        Assert.True(st.Swaps > 0 && st.Recomputations == 0, $"swaps {st.Swaps}, recomputations {st.Recomputations}");
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(free[i].Tokens, swapped[i].Tokens);
            Assert.All(free[i].Logprobs.Zip(swapped[i].Logprobs), p => Assert.Equal(p.First, p.Second, 4));
        }
    }

    [Fact]
    public async Task Evicted_bf16_prefix_blocks_come_back_from_host_and_disk_with_the_cold_tokens()
    {
        using var e = new ServingEngine(_lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8, MaxRunning = 1, KvCacheDType = DType.BF16 });
        string file = Path.Combine(Path.GetTempPath(), $"temper-kv-{Environment.ProcessId}-{Guid.NewGuid():N}.bin");
        using var tiers = new KvTiers(e.Cache, hostBlocks: 2, diskBlocks: 32, file);
        e.Start();
        async Task<ChoiceResult> One(int[] prompt) =>
            (await e.Submit(Greedy(prompt, 6)).CollectAsync(TestContext.Current.CancellationToken)).Single();
        var a = Prompt(17, 9);
        var cold = await One(a);
        for (int i = 0; i < 3; i++) await One(Prompt(17, 30 + i)); // push a's blocks down the tiers
        Assert.True(tiers.Disk.BytesIn > 0, $"disk: {tiers.Disk}");
        Assert.Equal(0, tiers.Disk.BytesIn % e.Cache.BlockBytes);
        long cachedBefore = e.Stats.CachedPrefixTokens;
        var warm = await One(a);
        Assert.Equal(16, e.Stats.CachedPrefixTokens - cachedBefore);
        Assert.True(tiers.Disk.Hits > 0, $"disk: {tiers.Disk}");
        Assert.Equal(cold.Tokens, warm.Tokens);
        Assert.All(cold.Logprobs.Zip(warm.Logprobs), p => Assert.Equal(p.First, p.Second, 4));
    }

    [Fact]
    public void Ilgpu_swaps_bf16_blocks_through_its_staging_tensor_and_serves_the_cpu_backends_tokens()
    {
        var prompts = Enumerable.Range(0, 4).Select(i => Prompt(6, 20 + i)).ToArray();
        List<ChoiceResult> Run(LanguageModel lm)
        {
            using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 10, PrefixCaching = false, Preemption = PreemptionMode.Swap, KvCacheDType = DType.BF16 });
            using var tiers = new KvTiers(e.Cache, hostBlocks: 32, diskBlocks: 0, null);
            var results = Serve(e, prompts, 14);
            Assert.True(e.Stats.Swaps > 0, $"no swap on {lm.Decoder.Backend.Name}: {e.Stats}");
            return results;
        }
        using var ilgpu = IlgpuBackend.Create("ilgpu-cpu");
        using var onDevice = LanguageModel.Load(ServingFixtures.Model, ilgpu);
        var device = Run(onDevice);
        var cpu = Run(_lm);
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(cpu[i].Tokens, device[i].Tokens);
            Assert.All(cpu[i].Logprobs.Zip(device[i].Logprobs), p => Assert.Equal(p.First, p.Second, 3));
        }
    }

    [Fact]
    public void Auto_keeps_a_bf16_models_kv_in_bf16_on_a_device_and_f32_on_the_cpu_and_an_explicit_dtype_wins()
    {
        using var ilgpu = IlgpuBackend.Create("ilgpu-cpu");
        using (var onDevice = LanguageModel.Load(ServingFixtures.Model, ilgpu, weightDType: DType.BF16))
        using (var auto = new ServingEngine(onDevice.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8 }))
            Assert.Equal(DType.BF16, auto.Cache.DType);
        using var lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1), weightDType: DType.BF16);
        using (var auto = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8 }))
            Assert.Equal(DType.F32, auto.Cache.DType);
        using (var bf16 = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8, KvCacheDType = DType.BF16 }))
            Assert.Equal(DType.BF16, bf16.Cache.DType);
        using var f32Weights = LanguageModel.Load(ServingFixtures.Model, ilgpu);
        using (var auto = new ServingEngine(f32Weights.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8 }))
            Assert.Equal(DType.F32, auto.Cache.DType);
        var bad = Assert.Throws<TemperException>(() => new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 8, KvCacheDType = DType.NF4 }));
        Assert.Equal("serving: the KV cache holds f32 or bf16, not NF4", bad.Message);
    }
}
