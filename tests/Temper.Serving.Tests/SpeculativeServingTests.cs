// N-gram (prompt lookup) speculative decoding in the serving engine. One batch of greedy and sampled requests
// (a looping prompt whose proposals get accepted, a misleading one whose proposals get rejected, adapters, stop
// strings and token limits that may land inside an accepted run, greedy with a repetition penalty, sampled ones
// with penalties, top-k/top-p/min-p, a logit bias and n = 2) gives exactly the tokens, log-probs and finish
// reasons of the same batch without speculation (a greedy step whose top-2 log-prob gap is under 1e-3 may
// differ, as chunk sums may reorder; the request is compared up to there): a sampled request's seed draws the
// same tokens with and without speculation, again in a second run, and again run alone in another batch;
// proposals were accepted; and the KV pool's free (or evictable) block count is back at its start once the
// requests end. Over a model of 8 tokens, the joint distribution of 4 sampled tokens from 6000 seeds (with
// penalties that count the accepted proposals) fits the exact one computed from the model's probabilities,
// with the acceptance counters counting those sampled requests.
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Speculative;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;
using Temper.Tests;

namespace Temper.Serving.Tests;

public sealed class SpeculativeServingTests
{
    [Fact]
    public async Task A_speculative_batch_gives_exactly_the_tokens_of_plain_decoding()
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
        SamplingOptions Sampled(float temperature, ulong seed) => new() { Greedy = false, Temperature = temperature, Seed = seed };
        var requests = new List<ServingRequest>
        {
            Greedy(looping, 40), Greedy(looping, 13), Greedy(looping, 22, "a0"), Greedy(plain, 30), Greedy(plain, 17, "a1"), Greedy(looping, 31, "a1"),
            Greedy(looping, 40) with { Sampling = Sampled(0.8f, 3) },
            Greedy(looping, 36) with { Sampling = new SamplingOptions { RepetitionPenalty = 1.3f } },
            Greedy(looping, 33, "a0") with { Sampling = Sampled(0.4f, 11) with { TopK = 20, TopP = 0.9f, MinP = 0.05f, FrequencyPenalty = 0.3f, PresencePenalty = 0.2f, LogitBias = new Dictionary<int, float> { [loop[2]] = 1.5f } } },
            Greedy(looping, 27) with { Sampling = Sampled(0.3f, 21) with { RepetitionPenalty = 1.1f }, N = 2 },
        };
        ServingOptions Options(SpeculativeOptions? spec) => new() { BlockSize = 4, Blocks = 160, MaxBatchTokens = 64, Speculative = spec };

        // Each choice's result, with the index of its request.
        async Task<(List<(int Request, ChoiceResult Result)> Results, ServingStats Stats)> Run(SpeculativeOptions? spec, IReadOnlyList<ServingRequest> batch)
        {
            using var e = new ServingEngine(lm.Decoder, Options(spec), stack, ids => tokenizer.Decode(ids));
            int free = e.Cache.Pool.Available;
            var handles = batch.Select(e.Submit).ToArray();
            e.Start();
            var results = new List<(int, ChoiceResult)>();
            for (int i = 0; i < handles.Length; i++)
            {
                var choices = await handles[i].CollectAsync(TestContext.Current.CancellationToken);
                Assert.Equal(batch[i].N, choices.Count);
                results.AddRange(choices.Select(c => (i, c)));
            }
            var stats = e.Stats;
            Assert.Equal(free, stats.FreeBlocks);   // rejected proposals' blocks came back too (resident adapters count as evictable)
            return (results, stats);
        }

        // Stop strings taken from the plain run's looping output, so they stop it somewhere inside its loop.
        var (first, _) = await Run(null, requests);
        string Text(IReadOnlyList<int> ids) => tokenizer.Decode([.. ids]);
        requests.Add(Greedy(looping, 40, stops: [Text(first[0].Result.Tokens.Skip(9).Take(2).ToArray())]));
        requests.Add(Greedy(looping, 40, "a0", [Text(first[2].Result.Tokens.Skip(14).Take(1).ToArray())]));
        requests.Add(Greedy(looping, 40, "a1", [Text(first[5].Result.Tokens.Skip(11).Take(2).ToArray())]) with { Sampling = Sampled(0.3f, 8) });
        // The looping prompt's first answer token put before it, followed by random ones: that occurrence is found and what
        // followed it proposed, wrongly (rejections, blocks given back).
        int[] misleading = [first[0].Result.Tokens[0], first[0].Result.Tokens[0], .. Random(4), .. looping];
        requests.Add(Greedy(misleading, 24));
        requests.Add(Greedy(misleading, 19, "a1"));
        var ngram = new SpeculativeOptions { NumTokens = 4, NgramMax = 3, NgramMin = 1 };
        var (baseline, plainStats) = await Run(null, requests);
        var (speculative, specStats) = await Run(ngram, requests);
        TestContext.Current.SendDiagnosticMessage($"speculation: {specStats.SpecAcceptedTokens} of {specStats.SpecDraftTokens} proposed tokens accepted; " +
            $"{specStats.Steps} steps against {plainStats.Steps} without");
        Assert.Equal(0, plainStats.SpecDraftTokens);
        Assert.Equal(plainStats.RequestsFinished, specStats.RequestsFinished);   // none finished twice (a stop inside an accepted run ends it there)
        Assert.True(specStats.SpecAcceptedTokens > 0, $"nothing accepted of {specStats.SpecDraftTokens} proposed");
        Assert.True(specStats.SpecAcceptedTokens < specStats.SpecDraftTokens, "every proposal was accepted: rejection went untested");
        Assert.Equal(baseline.Count, speculative.Count);
        for (int i = 0; i < baseline.Count; i++)
        {
            var (want, got) = (baseline[i].Result, speculative[i].Result);
            var request = requests[baseline[i].Request];
            int t = 0;
            while (t < Math.Min(want.Tokens.Count, got.Tokens.Count) && want.Tokens[t] == got.Tokens[t]) t++;
            if (t == want.Tokens.Count && t == got.Tokens.Count)
            {
                Assert.Equal(want.Finish, got.Finish);
                for (int j = 0; j < t; j++) Assert.True(Math.Abs(want.Logprobs[j] - got.Logprobs[j]) < 1e-4, $"choice {i} step {j}: log-prob {got.Logprobs[j]}, plain {want.Logprobs[j]}");
                continue;
            }
            Assert.True(request.Sampling.Greedy && !request.Sampling.AdjustsLogits, $"choice {i} (sampled or penalised) differs at step {t}");
            Assert.True(t < want.Tokens.Count && t < got.Tokens.Count, $"choice {i}: {got.Tokens.Count} tokens ({got.Finish}), plain {want.Tokens.Count} ({want.Finish})");
            var row = ServingFixtures.ReferenceLogprobs([.. request.PromptIds, .. want.Tokens.Take(t + 1)], request.Adapter == null ? null : ServingFixtures.Adapter(int.Parse(request.Adapter![1..])))[^2];
            var top = row.OrderDescending().Take(2).ToArray();
            Assert.True(top[0] - top[1] < 1e-3, $"choice {i} differs at step {t} (gap {top[0] - top[1]})");
        }
        Assert.Contains(speculative, r => r.Result.Finish == ServingFinish.Stop);

        // The sampled requests draw the same tokens in a second speculative run, and alone in a batch of their own (other
        // steps, other proposal lengths); their proposals are counted.
        var (again, _) = await Run(ngram, requests);
        var sampled = requests.Where(r => !r.Sampling.Greedy).ToList();
        var (alone, aloneStats) = await Run(ngram, sampled);
        var inBatch = speculative.Where(r => !requests[r.Request].Sampling.Greedy).ToList();
        Assert.Equal(inBatch.Count, alone.Count);
        for (int i = 0; i < inBatch.Count; i++)
        {
            Assert.Equal(inBatch[i].Result.Tokens, again.Single(r => r.Request == inBatch[i].Request && r.Result.Choice == inBatch[i].Result.Choice).Result.Tokens);
            Assert.Equal(inBatch[i].Result.Tokens, alone[i].Result.Tokens);
        }
        Assert.True(aloneStats.SpecDraftTokens > 0 && aloneStats.SpecAcceptedTokens > 0, $"sampled requests: {aloneStats.SpecAcceptedTokens} of {aloneStats.SpecDraftTokens} proposed tokens accepted");
    }

    // JSON-constrained requests speculate too (the constraint's state moves with each draw, and the draws are the tokens
    // appended): greedy and sampled json_object answers over a prompt of JSON text equal the plain run's, parse, and
    // proposals were made and accepted for them.
    [Fact]
    public async Task Json_constrained_requests_speculate_to_the_plain_runs_tokens()
    {
        var be = new CpuBackend(1);
        using var lm = LanguageModel.Load(ServingFixtures.Model, be);
        var tokenizer = lm.RequireTokenizer();
        // A schema that leaves the model little but the repeated "1, " the prompt shows (and whitespace).
        var json = SpeculationFixtures.NineOnes(tokenizer, lm.EosIds());
        var prompt = tokenizer.Encode("{\"a\": [1, 1, 1, 1], \"b\": {\"a\": [1, 1, 1]}, \"c\": [1, 1, 1, 1, 1]}\n{\"a\": [1, 1").ToArray();
        // The random model favours whitespace, which the constraint allows between JSON tokens: biased away.
        var noSpace = SpeculationFixtures.NoWhitespace(tokenizer, lm.Config.VocabSize);
        ServingRequest Request(SamplingOptions sampling) =>
            new() { PromptIds = prompt, MaxNewTokens = 64, EosIds = lm.EosIds(), Sampling = sampling with { Constraint = json, LogitBias = noSpace } };
        ServingRequest[] requests = [Request(new SamplingOptions()), Request(new SamplingOptions { Greedy = false, Temperature = 0.7f, Seed = 4 }), Request(new SamplingOptions { Greedy = false, Temperature = 1f, Seed = 9 })];
        async Task<(List<ChoiceResult> Results, ServingStats Stats)> Run(SpeculativeOptions? spec)
        {
            using var e = new ServingEngine(lm.Decoder, new ServingOptions { BlockSize = 4, Blocks = 96, MaxBatchTokens = 64, Speculative = spec }, null, ids => tokenizer.Decode(ids));
            var handles = requests.Select(e.Submit).ToArray();
            e.Start();
            var results = new List<ChoiceResult>();
            foreach (var h in handles) results.Add((await h.CollectAsync(TestContext.Current.CancellationToken)).Single());
            return (results, e.Stats);
        }
        var (plain, _) = await Run(null);
        var (fast, stats) = await Run(new SpeculativeOptions { NumTokens = 4, NgramMax = 3, NgramMin = 1 });
        Assert.True(stats.SpecDraftTokens > 0 && stats.SpecAcceptedTokens > 0, $"{stats.SpecAcceptedTokens} of {stats.SpecDraftTokens} proposed tokens accepted");
        TestContext.Current.SendDiagnosticMessage($"json: {stats.SpecAcceptedTokens} of {stats.SpecDraftTokens} accepted; " + string.Join(" | ", plain.Select(r => $"{r.Finish}: {tokenizer.Decode([.. r.Tokens])}")));
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.Equal(plain[i].Tokens, fast[i].Tokens);
            Assert.Equal(plain[i].Finish, fast[i].Finish);
            if (fast[i].Finish == ServingFinish.Eos)
                System.Text.Json.JsonDocument.Parse(tokenizer.Decode(fast[i].Tokens.Where(t => !lm.EosIds().Contains(t)).ToArray())).Dispose();
        }
    }

    // The joint distribution of 4 sampled tokens (the first from the prefill, then verify steps of K = 2 with their
    // bonus token, or rejections and more steps) over 6000 seeds, against the exact one: the product of the filtered
    // next-token distributions along each sequence (Sampler.Probabilities over the contiguous decoder's logits, the
    // penalties counting every earlier token). Frequencies.AssertFit's bounds fail a correct sampler with
    // probability under 1e-4. Each seed also draws the tokens it draws without speculation.
    [Fact]
    public async Task Sampled_speculation_keeps_the_samplers_distribution()
    {
        var target = SpeculationFixtures.TinyVocab(1);
        int[] prompt = [1, 2, 3, 1, 2, 3, 1, 2];
        const int tokens = 4, runs = 6000;
        var sampling = new SamplingOptions
        {
            Greedy = false, Temperature = 0.9f, TopK = 3, RepetitionPenalty = 1.2f, FrequencyPenalty = 0.4f, LogitBias = new Dictionary<int, float> { [5] = 0.5f },
        };
        var exact = SpeculationFixtures.ExactDistribution(target, prompt, tokens, sampling);

        async Task<(string[] Draws, ServingStats Stats)> Run(SpeculativeOptions? spec)
        {
            using var e = new ServingEngine(target, new ServingOptions { BlockSize = 4, Blocks = 512, MaxBatchTokens = 256, Speculative = spec });
            var handles = Enumerable.Range(0, runs).Select(s => e.Submit(new ServingRequest { PromptIds = prompt, MaxNewTokens = tokens, IgnoreEos = true, Sampling = sampling with { Seed = (ulong)s } })).ToArray();
            e.Start();
            var draws = new string[runs];
            for (int s = 0; s < runs; s++) draws[s] = string.Join(",", Assert.Single(await handles[s].CollectAsync(TestContext.Current.CancellationToken)).Tokens);
            return (draws, e.Stats);
        }
        var (drawn, stats) = await Run(new SpeculativeOptions { NumTokens = 2, NgramMin = 1, NgramMax = 2 });
        var counts = exact.Keys.ToDictionary(k => k, _ => 0);
        foreach (string key in drawn)
        {
            Assert.True(counts.ContainsKey(key), $"drew {key}, which the filters give probability 0");
            counts[key]++;
        }
        TestContext.Current.SendDiagnosticMessage($"sampled speculation: {stats.SpecAcceptedTokens} of {stats.SpecDraftTokens} proposed tokens accepted over {runs} requests, {exact.Count} outcomes");
        Assert.True(stats.SpecDraftTokens > runs / 2 && stats.SpecAcceptedTokens > runs / 10 && stats.SpecAcceptedTokens < stats.SpecDraftTokens,
            $"{stats.SpecAcceptedTokens}/{stats.SpecDraftTokens} accepted: the rule was hardly exercised");
        var keys = exact.Keys.ToArray();
        Frequencies.AssertFit(keys.Select(k => exact[k]).ToArray(), keys.Select(k => counts[k]).ToArray(), runs, "ngram");

        // Speculation changes which tokens are computed together, not the draws: a draw within rounding of a boundary of the
        // cumulative distribution could move, so a few seeds in a hundred may differ, no more.
        var (plainDrawn, plainStats) = await Run(null);
        Assert.Equal(0, plainStats.SpecDraftTokens);
        int same = drawn.Zip(plainDrawn).Count(d => d.First == d.Second);
        Assert.True(same >= runs - runs / 100, $"{runs - same} of {runs} seeds drew other tokens than without speculation");
    }
}
