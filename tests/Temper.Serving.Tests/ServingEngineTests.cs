// The continuous-batching engine against the contiguous decoder: requests of different lengths joining
// a running batch, prefills chunked to a small token budget, a pool so small that sequences are
// preempted and recomputed (or swapped to the host tier and back, the same tokens as an unconstrained
// run either way), prefix-cache hits, parallel sampling sharing prompt blocks copy-on-write,
// stop conditions, cancellation and streaming. Every served greedy completion is checked step by step
// against the teacher-forced reference (tokens, and log-probs within 1e-4).
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Serving.Kv;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class ServingEngineTests : IDisposable
{
    private readonly LanguageModel _lm = LanguageModel.Load(ServingFixtures.Model, new CpuBackend(1));

    public void Dispose() => _lm.Dispose();

    private ServingEngine Engine(ServingOptions o) => new(_lm.Decoder, o, decode: ids => _lm.RequireTokenizer().Decode(ids));

    private static int[] Prompt(int length, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => rng.Next(3, 512)).ToArray();
    }

    private static ServingRequest Greedy(int[] prompt, int tokens) => new() { PromptIds = prompt, MaxNewTokens = tokens, IgnoreEos = true, TopLogprobs = 0 };

    [Fact]
    public void Requests_joining_a_running_batch_with_chunked_prefill_match_the_contiguous_decoder()
    {
        using var e = Engine(new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = 7 });
        var prompts = new[] { Prompt(5, 1), Prompt(13, 2), Prompt(2, 3), Prompt(9, 4) };
        var handles = new List<RequestHandle> { e.Submit(Greedy(prompts[0], 12)), e.Submit(Greedy(prompts[1], 9)) };
        e.Step();
        e.Step();
        handles.Add(e.Submit(Greedy(prompts[2], 10))); // joins while the others decode
        e.Step();
        handles.Add(e.Submit(Greedy(prompts[3], 6)));
        var results = ServingFixtures.RunAll(e, handles);
        for (int i = 0; i < prompts.Length; i++)
        {
            var c = Assert.Single(results[i]);
            Assert.Equal(handles[i].Request.MaxNewTokens, c.Tokens.Count);
            Assert.Equal(ServingFinish.Length, c.Finish);
            ServingFixtures.AssertMatchesReference(prompts[i], c, what: $"request {i}");
        }
        var st = e.Stats;
        Assert.Equal(prompts.Sum(p => p.Length), st.PrefillTokens);
        Assert.Equal(64, st.FreeBlocks); // everything returned (cached blocks stay evictable)
    }

    [Fact]
    public void A_short_pool_preempts_and_recomputes_without_changing_the_tokens()
    {
        // 10 blocks of 4 = 40 positions for four sequences that want 20 each: someone must yield.
        using var e = Engine(new ServingOptions { BlockSize = 4, Blocks = 10, MaxBatchTokens = 64, PrefixCaching = false });
        var prompts = Enumerable.Range(0, 4).Select(i => Prompt(6, 10 + i)).ToArray();
        var handles = prompts.Select(p => e.Submit(Greedy(p, 14))).ToList();
        var results = ServingFixtures.RunAll(e, handles);
        Assert.True(e.Stats.Preemptions > 0, "the pool was never short");
        for (int i = 0; i < prompts.Length; i++) ServingFixtures.AssertMatchesReference(prompts[i], Assert.Single(results[i]), what: $"request {i}");
    }

    [Theory]
    [InlineData(PreemptionMode.Swap)]
    [InlineData(PreemptionMode.Recompute)]
    public void A_short_pool_preempts_by_swap_or_recompute_and_gives_the_unconstrained_tokens(PreemptionMode mode)
    {
        var prompts = Enumerable.Range(0, 4).Select(i => Prompt(6, 20 + i)).ToArray();
        List<IReadOnlyList<ChoiceResult>> Serve(ServingOptions o, out ServingStats stats, out string tiersSeen)
        {
            using var e = Engine(o);
            using var tiers = new KvTiers(e.Cache, hostBlocks: 32, diskBlocks: 0, null);
            var results = ServingFixtures.RunAll(e, prompts.Select(p => e.Submit(Greedy(p, 14))).ToList());
            stats = e.Stats;
            tiersSeen = $"device {tiers.Device}; host {tiers.Host}";
            Assert.Equal(0, tiers.Host.SwappedBlocks); // every swapped sequence came back
            return results;
        }
        var free = Serve(new ServingOptions { BlockSize = 4, Blocks = 64, PrefixCaching = false }, out var freeStats, out _);
        Assert.Equal(0, freeStats.Preemptions);
        // 10 blocks of 4 = 40 positions for four sequences that want 20 each: someone must yield.
        var shortPool = Serve(new ServingOptions { BlockSize = 4, Blocks = 10, PrefixCaching = false, Preemption = mode }, out var st, out string seen);
        TestContext.Current.SendDiagnosticMessage($"{mode}: {st}\n{seen}");
        Assert.True(st.Preemptions > 0, "the pool was never short");
        Assert.Equal(st.Preemptions, st.Swaps + st.Recomputations);
        if (mode == PreemptionMode.Swap)
        {
            Assert.True(st.Swaps > 0 && st.Recomputations == 0, $"swaps {st.Swaps}, recomputations {st.Recomputations}");
            Assert.Contains($"swaps out {st.Swaps} / in {st.Swaps}", seen);
            Assert.Equal(prompts.Sum(p => p.Length), st.PrefillTokens); // nothing computed twice
        }
        else
        {
            Assert.True(st.Recomputations > 0 && st.Swaps == 0, $"swaps {st.Swaps}, recomputations {st.Recomputations}");
            Assert.True(st.PrefillTokens > prompts.Sum(p => p.Length), "recomputation computed nothing again");
        }
        for (int i = 0; i < prompts.Length; i++)
        {
            var got = Assert.Single(shortPool[i]);
            var want = Assert.Single(free[i]);
            int t = got.Tokens.Zip(want.Tokens).TakeWhile(p => p.First == p.Second).Count();
            if (t < want.Tokens.Count)
            {
                // The runs agree up to step t; they may part there only on a near-tie of the reference.
                var row = ServingFixtures.ReferenceLogprobs([.. prompts[i], .. want.Tokens.Take(t)])[^1];
                var top2 = row.OrderDescending().Take(2).ToArray();
                Assert.True(top2[0] - top2[1] < 1e-3f, $"request {i} step {t}: {got.Tokens[t]} under preemption, {want.Tokens[t]} unconstrained");
            }
            ServingFixtures.AssertMatchesReference(prompts[i], got, what: $"{mode} request {i}");
        }
    }

    [Fact]
    public void A_repeated_prompt_hits_the_prefix_cache_and_gives_the_same_tokens()
    {
        using var e = Engine(new ServingOptions { BlockSize = 4, Blocks = 32 });
        var prompt = Prompt(11, 5);
        var cold = ServingFixtures.RunAll(e, [e.Submit(Greedy(prompt, 8))])[0][0];
        Assert.Equal(0, e.Stats.CachedPrefixTokens);
        var warm = ServingFixtures.RunAll(e, [e.Submit(Greedy(prompt, 8))])[0][0];
        Assert.Equal(8, e.Stats.CachedPrefixTokens); // two full blocks of the 11-token prompt
        Assert.Equal(cold.Tokens, warm.Tokens);
        ServingFixtures.AssertMatchesReference(prompt, warm, what: "warm");
    }

    // Prompt scoring (echo with logprobs): every prompt token's log-probability given those before it equals
    // the contiguous decoder's, through chunked prefill (7-token budget), beside a request being decoded, a
    // second time with the prompt's blocks in the prefix cache (a scored prompt is computed whole), with
    // top alternatives sorted, and with 0 new tokens (a finish and no token) or some.
    [Fact]
    public void Scored_prompts_give_each_token_the_contiguous_decoders_log_probability()
    {
        using var e = Engine(new ServingOptions { BlockSize = 4, Blocks = 64, MaxBatchTokens = 7 });
        var prompt = Prompt(23, 8);
        var reference = ServingFixtures.ReferenceLogprobs(prompt);
        var other = e.Submit(Greedy(Prompt(6, 9), 10));
        e.Step();
        var scored = e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 0, PromptLogprobs = 3 });
        var again = e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 4, IgnoreEos = true, PromptLogprobs = 0, TopLogprobs = 0 });
        var results = ServingFixtures.RunAll(e, [other, scored, again]);
        Assert.Empty(results[1][0].Tokens);
        Assert.Equal(ServingFinish.Length, results[1][0].Finish);
        ServingFixtures.AssertMatchesReference(prompt, results[2][0], what: "scored then generated");
        foreach (var h in new[] { scored, again })
        {
            var scores = h.PromptLogprobs!;
            Assert.Equal(prompt.Length, scores.Count);
            Assert.Null(scores[0]);
            for (int i = 1; i < prompt.Length; i++)
            {
                var row = reference[i - 1];
                Assert.True(Math.Abs(row[prompt[i]] - scores[i]!.Logprob) < 1e-4, $"prompt token {i}: {scores[i]!.Logprob} vs {row[prompt[i]]}");
                Assert.Equal(h == scored ? 3 : 0, scores[i]!.Top.Count);
                if (h == scored) Assert.Equal(row.Select((x, t) => (x, t)).OrderByDescending(p => p.x).Take(3).Select(p => p.t), scores[i]!.Top.Select(t => t.Token));
            }
        }
        Assert.Throws<Temper.Core.TemperException>(() => e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 0 }));
        Assert.Throws<Temper.Core.TemperException>(() => e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = 0, PromptLogprobs = 0, N = 2 }));
    }

    [Fact]
    public void Parallel_samples_share_the_prompt_copy_on_write()
    {
        using var e = Engine(new ServingOptions { BlockSize = 4, Blocks = 32 });
        var prompt = Prompt(6, 6);
        var sampled = new ServingRequest { PromptIds = prompt, MaxNewTokens = 10, IgnoreEos = true, N = 3, TopLogprobs = 0, Sampling = new SamplingOptions { Greedy = false, Temperature = 1.5f, Seed = 3 } };
        var greedy = Greedy(prompt, 10) with { N = 2 };
        var results = ServingFixtures.RunAll(e, [e.Submit(sampled), e.Submit(greedy)]);
        Assert.Equal([0, 1, 2], results[0].Select(c => c.Choice));
        Assert.True(results[0].Select(c => string.Join(',', c.Tokens)).Distinct().Count() > 1, "three samples at temperature 1.5 were identical");
        Assert.Equal(results[1][0].Tokens, results[1][1].Tokens);
        ServingFixtures.AssertMatchesReference(prompt, results[1][1], what: "greedy fork");
        Assert.True(e.Stats.CopiedOnWrite >= 2, $"copy-on-write copies: {e.Stats.CopiedOnWrite}");
        // Each sampled choice's log-probs are those of the contiguous model on its own tokens.
        foreach (var c in results[0])
        {
            var reference = ServingFixtures.ReferenceLogprobs(prompt.Concat(c.Tokens).ToArray());
            for (int t = 0; t < c.Tokens.Count; t++) Assert.True(Math.Abs(reference[prompt.Length - 1 + t][c.Tokens[t]] - c.Logprobs[t]) < 1e-4);
        }
    }

    [Fact]
    public void Eos_stop_strings_cancellation_and_bad_requests()
    {
        using var e = Engine(new ServingOptions { BlockSize = 4, Blocks = 32, MaxSequenceLength = 40 });
        var prompt = Prompt(4, 7);
        var free = ServingFixtures.RunAll(e, [e.Submit(Greedy(prompt, 8))])[0][0];
        int eos = free.Tokens[2];
        int firstEos = free.Tokens.ToList().IndexOf(eos);
        var stopped = ServingFixtures.RunAll(e, [e.Submit(Greedy(prompt, 8) with { IgnoreEos = false, EosIds = [eos] })])[0][0];
        Assert.Equal(ServingFinish.Eos, stopped.Finish);
        Assert.Equal(free.Tokens.Take(firstEos + 1), stopped.Tokens);

        string text = _lm.RequireTokenizer().Decode(free.Tokens.Take(3).ToArray());
        var byString = ServingFixtures.RunAll(e, [e.Submit(Greedy(prompt, 8) with { StopStrings = [text] })])[0][0];
        Assert.Equal(ServingFinish.Stop, byString.Finish);
        Assert.True(byString.Tokens.Count <= 3);

        var h = e.Submit(Greedy(prompt, 30));
        e.Step();
        h.Cancel();
        var cancelled = ServingFixtures.RunAll(e, [h])[0][0];
        Assert.Equal(ServingFinish.Cancelled, cancelled.Finish);
        Assert.True(cancelled.Tokens.Count < 30);

        Assert.Contains("'max_tokens' or 'max_completion_tokens' is too large: 20. This model's maximum context length is 40 tokens and your request has 30 input tokens (20 > 40 - 30).", Assert.Throws<Core.TemperException>(() => e.Submit(Greedy(Prompt(30, 1), 20))).Message);
        Assert.Contains("unknown adapter", Assert.Throws<Core.TemperException>(() => e.Submit(Greedy(prompt, 2) with { Adapter = "nope" })).Message);
        Assert.Contains("empty", Assert.Throws<Core.TemperException>(() => e.Submit(Greedy([], 2))).Message);
        Assert.Contains("vocabulary", Assert.Throws<Core.TemperException>(() => e.Submit(Greedy([1, 9999], 2))).Message);
    }

    [Fact]
    public async Task The_background_loop_streams_tokens_as_they_are_made()
    {
        using var e = Engine(new ServingOptions { BlockSize = 4, Blocks = 32 });
        e.Start();
        var h = e.Submit(Greedy(Prompt(5, 8), 6) with { TopLogprobs = 3 });
        var events = new List<StreamEvent>();
        await foreach (var ev in h.Events.ReadAllAsync(TestContext.Current.CancellationToken)) events.Add(ev);
        Assert.Equal(6, events.Count);
        Assert.All(events, ev => Assert.Equal(3, ev.Top!.Count));
        Assert.All(events, ev => Assert.Equal(ev.Top![0].Logprob, ev.Logprob, 5)); // greedy picks the top token
        Assert.Equal(ServingFinish.Length, events[^1].Finish);
        Assert.All(events.SkipLast(1), ev => Assert.Null(ev.Finish));
    }
}
