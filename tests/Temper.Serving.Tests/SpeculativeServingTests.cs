// N-gram (prompt lookup) speculative decoding in the serving engine: one batch of greedy requests (a
// looping prompt whose proposals get accepted, a misleading one whose proposals get rejected, adapters, stop strings and token limits that may land
// inside an accepted run, a sampled request that decodes normally) gives exactly the tokens, log-probs
// and finish reasons of the same batch without speculation (a step whose top-2 log-prob gap is under
// 1e-3 may differ, as chunk sums may reorder; the request is compared up to there); proposals were
// accepted; and the KV pool's free (or evictable) block count is back at its start once the requests end.
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Speculative;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Tests;

public sealed class SpeculativeServingTests
{
    [Fact]
    public async Task A_speculative_batch_gives_exactly_the_tokens_of_plain_greedy_decoding()
    {
        var be = new CpuBackend(1);
        using var lm = LanguageModel.Load(ServingFixtures.Model, be);
        var tokenizer = lm.RequireTokenizer();
        using var stack = new AdapterStack(lm.Weights, be);
        stack.Add("a0", LoraAdapter.Load(ServingFixtures.Adapter(0)));
        stack.Add("a1", LoraAdapter.Load(ServingFixtures.Adapter(1)));
        var rng = new Random(5);
        int[] Random(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(3, 512)).ToArray();
        var loop = Random(6);
        int[] looping = [.. loop, .. loop, .. loop, .. loop];
        var plain = Random(9);
        ServingRequest Greedy(int[] prompt, int tokens, string? adapter = null, IReadOnlyList<string>? stops = null) =>
            new() { PromptIds = prompt, MaxNewTokens = tokens, IgnoreEos = true, TopLogprobs = 2, Adapter = adapter, StopStrings = stops ?? [] };
        var requests = new List<ServingRequest>
        {
            Greedy(looping, 40), Greedy(looping, 13), Greedy(looping, 22, "a0"), Greedy(plain, 30), Greedy(plain, 17, "a1"), Greedy(looping, 31, "a1"),
            Greedy(looping, 40) with { Sampling = new SamplingOptions { Greedy = false, Temperature = 0.8f, Seed = 3 } },
        };
        ServingOptions Options(SpeculativeOptions? spec) => new() { BlockSize = 4, Blocks = 160, MaxBatchTokens = 64, Speculative = spec };

        async Task<(List<ChoiceResult> Results, ServingStats Stats)> Run(SpeculativeOptions? spec)
        {
            using var e = new ServingEngine(lm.Decoder, Options(spec), stack, ids => tokenizer.Decode(ids));
            int free = e.Cache.Pool.Available;
            var handles = requests.Select(e.Submit).ToArray();
            e.Start();
            var results = new List<ChoiceResult>();
            foreach (var h in handles) results.Add(Assert.Single(await h.CollectAsync(TestContext.Current.CancellationToken)));
            var stats = e.Stats;
            Assert.Equal(free, stats.FreeBlocks);   // rejected proposals' blocks came back too (resident adapters count as evictable)
            return (results, stats);
        }

        // Stop strings taken from the plain run's looping output, so they stop it somewhere inside its loop.
        var (first, _) = await Run(null);
        string Text(IReadOnlyList<int> ids) => tokenizer.Decode([.. ids]);
        requests.Add(Greedy(looping, 40, stops: [Text(first[0].Tokens.Skip(9).Take(2).ToArray())]));
        requests.Add(Greedy(looping, 40, "a0", [Text(first[2].Tokens.Skip(14).Take(1).ToArray())]));
        // The looping prompt's first answer token put before it, followed by random ones: that occurrence is found and what
        // followed it proposed, wrongly (rejections, blocks given back).
        int[] misleading = [first[0].Tokens[0], first[0].Tokens[0], .. Random(4), .. looping];
        requests.Add(Greedy(misleading, 24));
        requests.Add(Greedy(misleading, 19, "a1"));
        var (baseline, plainStats) = await Run(null);
        var (speculative, specStats) = await Run(new SpeculativeOptions { NumTokens = 4, NgramMax = 3, NgramMin = 1 });
        TestContext.Current.SendDiagnosticMessage($"speculation: {specStats.SpecAcceptedTokens} of {specStats.SpecDraftTokens} proposed tokens accepted; " +
            $"{specStats.Steps} steps against {plainStats.Steps} without");
        Assert.Equal(0, plainStats.SpecDraftTokens);
        Assert.Equal(plainStats.RequestsFinished, specStats.RequestsFinished);   // none finished twice (a stop inside an accepted run ends it there)
        Assert.True(specStats.SpecAcceptedTokens > 0, $"nothing accepted of {specStats.SpecDraftTokens} proposed");
        Assert.True(specStats.SpecAcceptedTokens < specStats.SpecDraftTokens, "every proposal was accepted: rejection went untested");
        for (int i = 0; i < requests.Count; i++)
        {
            var (want, got) = (baseline[i], speculative[i]);
            int t = 0;
            while (t < Math.Min(want.Tokens.Count, got.Tokens.Count) && want.Tokens[t] == got.Tokens[t]) t++;
            if (t == want.Tokens.Count && t == got.Tokens.Count)
            {
                Assert.Equal(want.Finish, got.Finish);
                for (int j = 0; j < t; j++) Assert.True(Math.Abs(want.Logprobs[j] - got.Logprobs[j]) < 1e-4, $"request {i} step {j}: log-prob {got.Logprobs[j]}, plain {want.Logprobs[j]}");
                continue;
            }
            Assert.True(requests[i].Sampling.Greedy, $"request {i} (sampled) differs at step {t}");
            Assert.True(t < want.Tokens.Count && t < got.Tokens.Count, $"request {i}: {got.Tokens.Count} tokens ({got.Finish}), plain {want.Tokens.Count} ({want.Finish})");
            var row = ServingFixtures.ReferenceLogprobs([.. requests[i].PromptIds, .. want.Tokens.Take(t + 1)], requests[i].Adapter == null ? null : ServingFixtures.Adapter(int.Parse(requests[i].Adapter![1..])))[^2];
            var top = row.OrderDescending().Take(2).ToArray();
            Assert.True(top[0] - top[1] < 1e-3, $"request {i} differs at step {t} (gap {top[0] - top[1]})");
        }
        Assert.Contains(speculative, r => r.Finish == ServingFinish.Stop);
    }
}
