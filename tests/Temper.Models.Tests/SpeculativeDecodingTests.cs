// Speculative decoding: prompt lookup proposes what followed the latest earlier occurrence of the context's
// suffix; KvCache.Truncate leaves a cache equal to one that never saw the rejected tokens; greedy speculation
// gives plain greedy decoding's tokens with either proposer (a draft that is the target accepts everything, a
// different draft still changes nothing), near-ties (top-2 gap < 1e-3) excepted as in the serving tests; sampled
// speculation keeps the sampler's distribution (the accept/residual rule alone, and end to end over a tiny
// vocabulary, with a tolerance of 5 standard errors of each frequency); what cannot be done exactly is refused.
using System.Runtime.InteropServices;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Constrained;
using Temper.Models.Speculative;

namespace Temper.Tests;

public class SpeculativeDecodingTests
{
    private static readonly Lazy<LanguageModel> Llama = new(() => LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(1)));
    private static readonly Lazy<LanguageModel> Qwen = new(() => LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), new CpuBackend(1)));

    private static int[] Propose(ISpeculativeProposer p, int[] context, int k)
    {
        var proposal = new int[k];
        int n = p.Propose(context, context.Length, proposal);
        return proposal[..n];
    }

    [Fact]
    public void Ngram_lookup_proposes_what_followed_the_latest_earlier_match()
    {
        using var p = new NgramProposer(1, 3);
        // Suffix [7, 8] occurs at 0 (followed by 1 2 3 4) and at 5 (followed by 9 5): the latest wins.
        Assert.Equal([9, 5, 6], Propose(p, [7, 8, 1, 2, 3, 7, 8, 9, 5, 6, 7, 8], 3));
        // No earlier occurrence of any suffix of length 1..3: nothing.
        Assert.Empty(Propose(p, [1, 2, 3, 4, 5], 4));
        // K is cut where the context ends: [1, 2] at 0 is followed by 3 tokens, not 4; the latest [4] by one.
        Assert.Equal([3, 1, 2], Propose(p, [1, 2, 3, 1, 2], 4));
        Assert.Equal([4], Propose(new NgramProposer(1, 1), [1, 2, 3, 4, 4, 4], 4));
        Assert.Empty(Propose(p, [5, 6, 5, 6], 0));
    }

    [Fact]
    public void Ngram_lookup_tries_the_longest_n_first_and_stops_at_the_shortest()
    {
        // Suffix [1, 2, 3]: as a 3-gram it occurs at 0 (then 10); as a 1-gram [3] it occurs more recently at 6 (then 20).
        int[] context = [1, 2, 3, 10, 0, 0, 3, 20, 0, 1, 2, 3];
        Assert.Equal([10, 0], Propose(new NgramProposer(1, 3), context, 2));
        Assert.Equal([20, 0], Propose(new NgramProposer(1, 1), context, 2));
        // A 2-gram [2, 3] occurs only at 1: with n in 2..2 that is the match.
        Assert.Equal([10, 0], Propose(new NgramProposer(2, 2), context, 2));
        // Only [3] recurs after [5, 3]: a minimum of 2 proposes nothing.
        Assert.Empty(Propose(new NgramProposer(2, 4), [3, 9, 9, 5, 3], 2));
        Assert.Equal([9, 9], Propose(new NgramProposer(1, 4), [3, 9, 9, 5, 3], 2));
    }

    [Fact]
    public void Truncated_cache_equals_a_cache_that_never_saw_the_rejected_tokens()
    {
        var d = Llama.Value.Decoder;
        int[] prompt = [5, 17, 99, 260, 31], kept = [7, 8], rejected = [300, 301];
        float[] Next(KvCache cache)
        {
            using var logits = d.Forward([42], [cache.Length], [1], 1, cache, allPositions: false);
            return logits.Floats.ToArray();
        }
        using var a = new KvCache(d.Config, d.Backend, 1, 16);
        d.Forward(prompt, [0, 1, 2, 3, 4], [], 1, a, allPositions: false).Dispose();
        d.Forward([.. kept, .. rejected], [5, 6, 7, 8], [], 1, a, allPositions: true).Dispose();
        a.Truncate(prompt.Length + kept.Length);
        Assert.Equal(7, a.Length);
        using var b = new KvCache(d.Config, d.Backend, 1, 16);
        d.Forward(prompt, [0, 1, 2, 3, 4], [], 1, b, allPositions: false).Dispose();
        d.Forward(kept, [5, 6], [], 1, b, allPositions: true).Dispose();
        var (la, lb) = (Next(a), Next(b));
        Assert.Equal(b.KeyMask(b.Length), a.KeyMask(a.Length));
        for (int i = 0; i < la.Length; i++) Assert.True(Math.Abs(la[i] - lb[i]) < 1e-4, $"logit {i}: {la[i]} after rollback, {lb[i]} without the rejected tokens");
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Truncate(a.Length + 1));
    }

    // Speculative greedy output must be plain greedy output; where they part, the reference's top-2 gap at that step
    // must be under 1e-3 (a k+1-token forward may round differently), and nothing after it is compared.
    private static SpeculationStats AssertGreedyIdentity(Decoder target, int[] prompt, GenerationOptions o, SpeculativeOptions spec)
    {
        var plain = new Generator(target).Generate([prompt], o)[0];
        var fast = new Generator(target).Generate([prompt], o with { Speculative = spec })[0];
        Assert.Null(plain.Speculation);
        int n = Math.Min(plain.GeneratedIds.Count, fast.GeneratedIds.Count), at = 0;
        while (at < n && plain.GeneratedIds[at] == fast.GeneratedIds[at]) at++;
        if (at < plain.GeneratedIds.Count || at < fast.GeneratedIds.Count)
        {
            Assert.True(at < n, $"same tokens but lengths {plain.GeneratedIds.Count} and {fast.GeneratedIds.Count}");
            var ids = prompt.Concat(plain.GeneratedIds.Take(at)).ToArray();
            using var cache = new KvCache(target.Config, target.Backend, 1, ids.Length);
            using var logits = target.Forward(ids, Enumerable.Range(0, ids.Length).ToArray(), [], 1, cache, allPositions: false);
            var top = logits.Floats.ToArray().OrderDescending().Take(2).ToArray();
            Assert.True(top[0] - top[1] < 1e-3f, $"step {at}: speculative {fast.GeneratedIds[at]}, plain {plain.GeneratedIds[at]}, top-2 gap {top[0] - top[1]}");
        }
        else Assert.Equal(plain.Finish, fast.Finish);
        return fast.Speculation!;
    }

    private static readonly int[] Repetitive = [5, 17, 99, 260, 31, 7, 5, 17, 99, 260, 31, 7, 5, 17, 99];

    [Fact]
    public void Greedy_prompt_lookup_gives_plain_greedy_tokens()
    {
        var o = new GenerationOptions { MaxNewTokens = 40, IgnoreEos = true };
        var stats = AssertGreedyIdentity(Llama.Value.Decoder, Repetitive, o, new SpeculativeOptions { NumTokens = 4, NgramMin = 1, NgramMax = 3 });
        Assert.True(stats.Proposed > 0 && stats.Accepted > 0, $"prompt lookup never proposed or never hit: {stats}");
        Assert.True(stats.TargetForwards < 39, $"speculation saved no target forwards: {stats}");
        // With the penalties (greedy over adjusted logits, each row's history holding the proposals before it) and an EOS.
        var penalised = o with { Sampling = new SamplingOptions { RepetitionPenalty = 1.3f, FrequencyPenalty = 0.2f } };
        AssertGreedyIdentity(Llama.Value.Decoder, Repetitive, penalised, new SpeculativeOptions { NumTokens = 3, NgramMin = 1 });
        var free = new Generator(Llama.Value.Decoder).Generate([Repetitive], o)[0].GeneratedIds;
        AssertGreedyIdentity(Llama.Value.Decoder, Repetitive, o with { IgnoreEos = false, EosIds = [free[9]] }, new SpeculativeOptions { NgramMin = 1 });
        // A stop string ends the output at the same token (checked after each accepted token, as plain decoding does).
        var tok = Llama.Value.RequireTokenizer();
        string stop = tok.Decode(free.Skip(12).Take(2));
        var g = new Generator(Llama.Value.Decoder, ids => tok.Decode(ids));
        var stopAt = o with { StopStrings = [stop] };
        var plain = g.Generate([Repetitive], stopAt)[0];
        var fast = g.Generate([Repetitive], stopAt with { Speculative = new SpeculativeOptions { NgramMin = 1 } })[0];
        Assert.Equal(FinishReason.StopString, plain.Finish);
        Assert.Equal(plain.GeneratedIds, fast.GeneratedIds);
        Assert.Equal(plain.Finish, fast.Finish);
    }

    [Fact]
    public void Greedy_with_the_target_as_its_own_draft_accepts_every_proposal()
    {
        var o = new GenerationOptions { MaxNewTokens = 24, IgnoreEos = true };
        var stats = AssertGreedyIdentity(Llama.Value.Decoder, [5, 17, 99, 260], o, new SpeculativeOptions { NumTokens = 5, Draft = Llama.Value.Decoder });
        Assert.True(stats.Proposed > 0);
        Assert.Equal(stats.Proposed, stats.Accepted);
        Assert.Equal(1.0, stats.AcceptanceRate);
    }

    [Fact]
    public void Greedy_with_a_different_draft_model_gives_plain_greedy_tokens()
    {
        // qwen2-tiny shares llama-tiny's tokenizer but not its weights: few of its guesses hold, the output must not change.
        var o = new GenerationOptions { MaxNewTokens = 24, IgnoreEos = true };
        foreach (int k in new[] { 1, 4, 16 })
        {
            var stats = AssertGreedyIdentity(Llama.Value.Decoder, [5, 17, 99, 260], o, new SpeculativeOptions { NumTokens = k, Draft = Qwen.Value.Decoder });
            Assert.True(stats.Proposed > 0 && stats.Accepted < stats.Proposed, $"K {k}: {stats}");
        }
        var stop = o with { MaxNewTokens = 7 };
        AssertGreedyIdentity(Llama.Value.Decoder, [5, 17, 99, 260], stop, new SpeculativeOptions { NumTokens = 3, Draft = Qwen.Value.Decoder });
    }

    [Fact]
    public void Greedy_speculation_keeps_a_prompt_tuning_adapters_virtual_tokens()
    {
        // The virtual tokens sit in the cache before the prompt: a rollback must keep them (a target or a draft with them).
        var c = Llama.Value.Config.HiddenSize;
        var rng = new Random(5);
        var values = Enumerable.Range(0, 4 * c).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        using var prompted = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(1), PromptTuningTests.WriteAdapter(Tensor.FromFloats(new Shape(4, c), values)));
        Assert.Equal(4, prompted.Weights.VirtualTokenCount);
        var o = new GenerationOptions { MaxNewTokens = 24, IgnoreEos = true };
        var ngram = AssertGreedyIdentity(prompted.Decoder, Repetitive, o, new SpeculativeOptions { NgramMin = 1 });
        Assert.True(ngram.Accepted > 0, $"prompt lookup never hit: {ngram}");
        var self = AssertGreedyIdentity(prompted.Decoder, [5, 17, 99, 260], o, new SpeculativeOptions { Draft = prompted.Decoder });
        Assert.Equal(self.Proposed, self.Accepted);
        AssertGreedyIdentity(prompted.Decoder, [5, 17, 99, 260], o, new SpeculativeOptions { Draft = Llama.Value.Decoder });
        AssertGreedyIdentity(Llama.Value.Decoder, [5, 17, 99, 260], o, new SpeculativeOptions { Draft = prompted.Decoder });
    }

    [Fact]
    public void Sampling_without_a_proposal_draws_as_plain_sampling()
    {
        // No 16-gram recurs in a short run: every step decodes one token with the sampler's own stream.
        var o = new GenerationOptions { MaxNewTokens = 12, IgnoreEos = true, Sampling = new SamplingOptions { Greedy = false, Temperature = 0.9f, TopP = 0.9f, Seed = 5 } };
        var plain = new Generator(Llama.Value.Decoder).Generate([[5, 17, 99]], o)[0];
        var fast = new Generator(Llama.Value.Decoder).Generate([[5, 17, 99]], o with { Speculative = new SpeculativeOptions { NgramMin = 16, NgramMax = 16 } })[0];
        Assert.Equal(plain.GeneratedIds, fast.GeneratedIds);
        Assert.Equal(0, fast.Speculation!.Proposed);
    }

    // The rule alone: x ~ q, kept with probability min(1, p/q), else a draw from the residual; the kept-or-drawn
    // token must follow p. Each frequency within 5 standard errors (sqrt(p(1-p)/N)) of p, plus 1/N.
    [Fact]
    public void The_accept_residual_rule_draws_from_the_target_distribution()
    {
        float[] p = [0.45f, 0.2f, 0.2f, 0.15f, 0f, 0f], q = [0.1f, 0.1f, 0.3f, 0.3f, 0.2f, 0f];
        const int n = 200_000;
        var rng = new Random(17);
        var sampler = new Sampler(new SamplingOptions { Greedy = false, Seed = 3 });
        var residual = new float[p.Length];
        var counts = new int[p.Length];
        for (int i = 0; i < n; i++)
        {
            int x = Draw(q, rng.NextDouble());
            if (SpeculativeSampling.Accept(p, q, x, sampler.NextUniform())) counts[x]++;
            else
            {
                SpeculativeSampling.Residual(p, q, residual);
                counts[sampler.Draw(residual)]++;
            }
        }
        Frequencies.AssertFit(p.Select(x => (double)x).ToArray(), counts, n, "draft q");
    }

    // Prompt lookup under sampling is verified by the sampler's own draws (one uniform a token), so a seed gives
    // plain sampling's tokens; only a draw landing within the rounding of the multi-token forward may differ.
    [Fact]
    public void Sampled_prompt_lookup_draws_plain_samplings_tokens_for_a_seed()
    {
        var target = Target8.Value;
        int[] prompt = [1, 2, 3, 1, 2, 3, 1, 2];
        var sampling = new SamplingOptions { Greedy = false, Temperature = 0.9f, TopK = 3, RepetitionPenalty = 1.2f };
        var spec = new SpeculativeOptions { NumTokens = 3, NgramMin = 1, NgramMax = 2 };
        var gen = new Generator(target);
        int same = 0, accepted = 0;
        const int runs = 200;
        for (int s = 0; s < runs; s++)
        {
            var o = new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true, Sampling = sampling with { Seed = (ulong)s } };
            var plain = gen.Generate([prompt], o)[0];
            var fast = gen.Generate([prompt], o with { Speculative = spec })[0];
            if (plain.GeneratedIds.SequenceEqual(fast.GeneratedIds)) same++;
            accepted += fast.Speculation!.Accepted;
        }
        Assert.True(accepted > runs, $"only {accepted} proposals accepted over {runs} runs: the verify path was hardly exercised");
        Assert.True(same >= runs * 99 / 100, $"{same} of {runs} seeds drew plain sampling's tokens");
    }

    private static int Draw(float[] probs, double u)
    {
        double acc = 0;
        for (int i = 0; i < probs.Length; i++) if (u < (acc += probs[i])) return i;
        return probs.Length - 1;
    }

    // SpeculationFixtures.TinyVocab: target and draft differ by seed.
    private static readonly Lazy<Decoder> Target8 = new(() => SpeculationFixtures.TinyVocab(1)), Draft8 = new(() => SpeculationFixtures.TinyVocab(2));

    // End to end: the joint distribution of 4 sampled tokens (first from the prefill, then one verify step of K = 2
    // with its bonus token, or a rejection and more steps) against the exact one, the product of the target's
    // filtered next-token distributions along each sequence (Sampler.Probabilities, as plain sampling draws).
    [Theory]
    [InlineData("ngram")]
    [InlineData("draft")]
    public void Sampled_speculation_keeps_the_samplers_distribution(string method)
    {
        var target = Target8.Value;
        int[] prompt = [1, 2, 3, 1, 2, 3, 1, 2];
        const int tokens = 4, runs = 6000;
        var sampling = new SamplingOptions { Greedy = false, Temperature = 0.9f, TopK = 3, RepetitionPenalty = 1.2f };
        var spec = new SpeculativeOptions { NumTokens = 2, NgramMin = 1, NgramMax = 2, Draft = method == "draft" ? Draft8.Value : null };
        var exact = SpeculationFixtures.ExactDistribution(target, prompt, tokens, sampling);

        var counts = exact.Keys.ToDictionary(k => k, _ => 0);
        int proposed = 0, accepted = 0;
        var gen = new Generator(target);
        for (int s = 0; s < runs; s++)
        {
            var r = gen.Generate([prompt], new GenerationOptions { MaxNewTokens = tokens, IgnoreEos = true, Sampling = sampling with { Seed = (ulong)s }, Speculative = spec })[0];
            string key = string.Join(",", r.GeneratedIds);
            Assert.True(counts.ContainsKey(key), $"{method}: drew {key}, which the target's filters give probability 0");
            counts[key]++;
            proposed += r.Speculation!.Proposed;
            accepted += r.Speculation.Accepted;
        }
        Assert.True(proposed > runs / 2 && accepted > runs / 10 && accepted < proposed, $"{method}: {accepted}/{proposed} accepted: the rule was hardly exercised");
        var keys = exact.Keys.ToArray();
        Frequencies.AssertFit(keys.Select(k => exact[k]).ToArray(), keys.Select(k => counts[k]).ToArray(), runs, method);
    }

    // Prompt lookup under a JSON constraint: the constraint's state moves with each draw, and the draws are the tokens
    // emitted, so greedy and seeded sampled answers are plain decoding's (a schema that leaves little but the repeated
    // "1," the prompt shows, whitespace biased away: proposals get accepted).
    [Fact]
    public void Prompt_lookup_under_a_json_schema_gives_plain_decodings_tokens()
    {
        var lm = Llama.Value;
        var tok = lm.RequireTokenizer();
        var json = SpeculationFixtures.NineOnes(tok, lm.EosIds());
        var noSpace = SpeculationFixtures.NoWhitespace(tok, lm.Config.VocabSize);
        var prompt = tok.Encode("{\"a\":[1,1,1,1],\"b\":[1,1,1]}\n{\"a\":[1,1").ToArray();
        var gen = new Generator(lm.Decoder);
        int accepted = 0;
        foreach (var sampling in new[] { new SamplingOptions(), new SamplingOptions { Greedy = false, Temperature = 0.8f, Seed = 6 } })
        {
            var o = new GenerationOptions { MaxNewTokens = 40, EosIds = lm.EosIds(), Sampling = sampling with { Constraint = json, LogitBias = noSpace } };
            var plain = gen.Generate([prompt], o)[0];
            var fast = gen.Generate([prompt], o with { Speculative = new SpeculativeOptions { NgramMin = 1, NgramMax = 3 } })[0];
            Assert.Equal(plain.GeneratedIds, fast.GeneratedIds);
            Assert.Equal(FinishReason.Eos, fast.Finish);
            Assert.Equal("{\"a\":[1,1,1,1,1,1,1,1,1]}", tok.Decode(fast.GeneratedIds.Where(t => !lm.EosIds().Contains(t)).ToArray()).Replace(" ", ""));
            accepted += fast.Speculation!.Accepted;
        }
        Assert.True(accepted > 4, $"{accepted} proposals accepted: the constrained verify path was hardly exercised");
    }

    [Fact]
    public void What_cannot_be_done_exactly_is_refused_in_one_line()
    {
        var gen = new Generator(Llama.Value.Decoder);
        var o = new GenerationOptions { MaxNewTokens = 4, Speculative = new SpeculativeOptions() };
        string Refusal(GenerationOptions opts, int prompts = 1) =>
            Assert.Throws<TemperException>(() => gen.Generate(Enumerable.Repeat<IReadOnlyList<int>>([5, 17], prompts).ToArray(), opts)).Message;
        Assert.Contains("one prompt at a time (got 2)", Refusal(o, prompts: 2));
        var tok = Llama.Value.RequireTokenizer();
        var json = JsonConstraint.ForObject(TokenVocabulary.From(tok, Llama.Value.EosIds()));
        Assert.Contains("a draft model cannot propose under a JSON constraint", Refusal(o with { Sampling = new SamplingOptions { Constraint = json }, Speculative = new SpeculativeOptions { Draft = Draft8.Value } }));
        Assert.Equal("--num-speculative-tokens must be in 1..16 (got 0)", Refusal(o with { Speculative = new SpeculativeOptions { NumTokens = 0 } }));
        Assert.Equal("--num-speculative-tokens must be in 1..16 (got 17)", Refusal(o with { Speculative = new SpeculativeOptions { NumTokens = 17 } }));
        Assert.Equal("--ngram-min must be in 1..16 (got 0)", Refusal(o with { Speculative = new SpeculativeOptions { NgramMin = 0 } }));
        Assert.Equal("--ngram-max must be in --ngram-min (3)..16 (got 2)", Refusal(o with { Speculative = new SpeculativeOptions { NgramMin = 3, NgramMax = 2 } }));
        Assert.Equal("the draft model's vocabulary (8 tokens) differs from the target model's (512)", Refusal(o with { Speculative = new SpeculativeOptions { Draft = Draft8.Value } }));
    }
}
