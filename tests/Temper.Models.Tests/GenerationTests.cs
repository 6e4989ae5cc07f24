// Generation: a left-padded batch gives each row what it gives alone; sampling is seeded and its
// filters behave as transformers' processors do; stop conditions end rows independently.
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class GenerationTests
{
    private static readonly Lazy<LanguageModel> Model = new(() => LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), new CpuBackend()));

    private static IReadOnlyList<int> Gen(IReadOnlyList<int> prompt, GenerationOptions o) => new Generator(Model.Value.Decoder).Generate([prompt], o)[0].GeneratedIds;

    [Fact]
    public void Left_padded_batch_matches_each_prompt_alone()
    {
        int[] a = [5, 17, 99, 260, 31, 7], b = [300, 12];
        var o = new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true };
        var batch = new Generator(Model.Value.Decoder).Generate([a, b], o);
        Assert.Equal(Gen(a, o), batch[0].GeneratedIds);
        Assert.Equal(Gen(b, o), batch[1].GeneratedIds);
    }

    // transformers' min_new_tokens: an EOS id cannot be picked, and a stop string does not stop, before that many tokens.
    [Fact]
    public void Min_new_tokens_holds_back_eos_and_stop_strings()
    {
        int[] p = [5, 17, 99];
        var plain = Gen(p, new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true });
        int end = plain[1];
        Assert.Equal(plain.Take(2), Gen(p, new GenerationOptions { MaxNewTokens = 8, EosIds = [end] }));
        var held = Gen(p, new GenerationOptions { MaxNewTokens = 8, EosIds = [end], MinNewTokens = 4 });
        Assert.Equal(plain[0], held[0]);
        Assert.DoesNotContain(end, held.Take(4));
        Assert.True(held.Count >= 4, $"{held.Count} tokens");
        Assert.NotEqual(plain.Take(4), held.Take(4));
        var tok = Model.Value.RequireTokenizer();
        var gen = new Generator(Model.Value.Decoder, ids => tok.Decode(ids.ToArray()));
        var stopText = tok.Decode([plain[0]]);
        var early = gen.Generate([p], new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true, StopStrings = [stopText] })[0];
        var late = gen.Generate([p], new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true, StopStrings = [stopText], MinNewTokens = 3 })[0];
        Assert.Equal((1, FinishReason.StopString), (early.GeneratedIds.Count, early.Finish));
        Assert.True(late.GeneratedIds.Count >= 3);
        Assert.Equal(plain.Take(late.GeneratedIds.Count), late.GeneratedIds);
    }

    [Fact]
    public void Sampling_is_seeded_and_top_k_1_is_greedy()
    {
        int[] p = [5, 17, 99];
        var greedy = Gen(p, new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true });
        var s = new SamplingOptions { Greedy = false, Temperature = 1.5f, Seed = 11 };
        var x1 = Gen(p, new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true, Sampling = s });
        var x2 = Gen(p, new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true, Sampling = s });
        var x3 = Gen(p, new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true, Sampling = s with { Seed = 12 } });
        Assert.Equal(x1, x2);
        Assert.NotEqual(x1, x3);
        Assert.Equal(greedy, Gen(p, new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true, Sampling = s with { TopK = 1 } }));
        Assert.Equal(greedy, Gen(p, new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true, Sampling = s with { TopP = 1e-6f } }));
        Assert.Equal(greedy, Gen(p, new GenerationOptions { MaxNewTokens = 10, IgnoreEos = true, Sampling = s with { MinP = 1f } }));
    }

    // A large batch draws its rows in parallel: each row's token must be what its own sampler draws from its
    // row of logits and its own history (repetition penalty on, so histories are read; finished rows skipped).
    [Fact]
    public void A_batch_draws_each_row_as_its_own_sampler_would()
    {
        const int rows = 64, vocab = 700;
        var rng = new Random(3);
        var values = new float[rows * vocab];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 6 - 3);
        using var logits = Temper.Core.Tensor.FromFloats(new Temper.Core.Shape(rows, vocab), values);
        var o = new SamplingOptions { Greedy = false, Temperature = 0.8f, RepetitionPenalty = 1.3f, FrequencyPenalty = 0.5f, PresencePenalty = 0.7f, TopP = 0.9f, Seed = 40 };
        var history = Enumerable.Range(0, rows).Select(b => Enumerable.Range(0, 50).Select(_ => rng.Next(vocab)).ToList()).ToArray();
        var prompts = history.Select(h => (IReadOnlyList<int>)h.Take(30).ToArray()).ToArray(); // the last 20 of each history were "generated"
        var finish = Enumerable.Range(0, rows).Select(b => b % 7 == 3 ? FinishReason.Eos : (FinishReason?)null).ToArray();
        var ids = Enumerable.Repeat(-1, rows).ToArray();
        for (int step = 0; step < 3; step++)
        {
            var seeds = Enumerable.Range(0, rows).Select(b => new Sampler(o with { Seed = o.Seed + (ulong)(b + 100 * step) })).ToArray();
            Generator.Draw(logits, seeds, history, prompts, finish, ids, vocab);
            for (int b = 0; b < rows; b++)
            {
                if (finish[b] != null) { Assert.Equal(-1, ids[b]); continue; }
                var alone = new Sampler(o with { Seed = o.Seed + (ulong)(b + 100 * step) });
                Assert.Equal(alone.Next(values.AsSpan(b * vocab, vocab), history[b].ToArray(), 30), ids[b]);
            }
        }
        Assert.True(ids.Where((id, b) => finish[b] == null).Distinct().Count() > 10, "rows drew too few distinct tokens to tell them apart");
    }

    // Frequency and presence penalties as OpenAI and vLLM define them: logit -= frequency x count + presence
    // x [count > 0], counted over the generated tokens only, before temperature; negative values encourage.
    [Fact]
    public void Frequency_and_presence_penalties_count_generated_tokens_only()
    {
        static int Greedy(float[] logits, int[] history, int generatedFrom, float frequency = 0, float presence = 0) =>
            new Sampler(new SamplingOptions { FrequencyPenalty = frequency, PresencePenalty = presence }).Next(logits, history, generatedFrom);
        Assert.Equal(0, Greedy([3f, 2.9f, 0f], [0, 0], generatedFrom: 2, frequency: 2)); // token 0 only in the prompt
        Assert.Equal(1, Greedy([3f, 2.9f, 0f], [0, 0], generatedFrom: 1, frequency: 0.2f)); // generated once: 2.8 < 2.9
        Assert.Equal(0, Greedy([3f, 2.5f], [0, 0], 0, frequency: 0.2f)); // twice: 3 - 0.4 = 2.6
        Assert.Equal(1, Greedy([3f, 2.5f], [0, 0], 0, frequency: 0.3f)); // twice: 3 - 0.6 = 2.4
        Assert.Equal(0, Greedy([3f, 2.5f], [0, 0], 0, presence: 0.3f)); // presence does not scale with the count: 2.7
        Assert.Equal(0, Greedy([2f, 3f], [0], 0, presence: -1.5f)); // negative: 3.5 > 3

        // Before temperature: logits [0, 0], token 0 generated once, presence ln 3, temperature 0.5 ->
        // p(0) = 1 / (1 + 3^2) = 0.1 (after temperature it would be 1 / (1 + 3) = 0.25).
        var o = new SamplingOptions { Greedy = false, Temperature = 0.5f, PresencePenalty = MathF.Log(3), Seed = 9 };
        var sampler = new Sampler(o);
        int zeros = Enumerable.Range(0, 8000).Count(_ => sampler.Next([0f, 0f], [0], 0) == 0);
        Assert.InRange(zeros / 8000.0, 0.085, 0.115);
        Assert.Throws<Temper.Core.TemperException>(() => (o with { FrequencyPenalty = 2.5f }).Validate());
        Assert.Throws<Temper.Core.TemperException>(() => (o with { PresencePenalty = -2.01f }).Validate());
    }

    [Fact]
    public void Sampler_filters_follow_transformers()
    {
        float[] logits = [2f, 1f, 0.5f, -1f, 3f];
        // top-k 2 keeps ids 4 and 0 only.
        var k2 = new Sampler(new SamplingOptions { Greedy = false, TopK = 2, Seed = 1 });
        var seen = Enumerable.Range(0, 400).Select(_ => k2.Next(logits, [])).ToHashSet();
        Assert.True(seen.SetEquals([0, 4]));
        // Repetition penalty divides positive logits and multiplies negative ones of seen ids.
        var rp = new Sampler(new SamplingOptions { RepetitionPenalty = 10f });
        Assert.Equal(0, rp.Next(logits, [4]));
        Assert.Equal(4, rp.Next(logits, [3]));
    }

    [Fact]
    public void Consecutive_seeds_draw_independently()
    {
        // The generator seeds row b with seed + b (a GRPO group is G rows of one prompt), so neighbouring
        // seeds must not give related draws: over uniform logits the difference of two neighbours' first
        // tokens should itself be about uniform, not stuck on a few values.
        var logits = new float[16];
        var counts = new int[16];
        for (ulong s = 0; s < 1600; s++)
        {
            int a = new Sampler(new SamplingOptions { Greedy = false, Seed = 1000 * s }).Next(logits, []);
            int b = new Sampler(new SamplingOptions { Greedy = false, Seed = 1000 * s + 1 }).Next(logits, []);
            counts[(b - a + 16) % 16]++;
        }
        Assert.True(counts.Max() < 160, $"neighbouring seeds' first-token differences: {string.Join(",", counts)}");
    }

    [Fact]
    public void Eos_and_stop_strings_end_rows()
    {
        int[] p = [5, 17, 99];
        var free = Gen(p, new GenerationOptions { MaxNewTokens = 6, IgnoreEos = true });
        int eos = free[2];
        var r = new Generator(Model.Value.Decoder).Generate([p], new GenerationOptions { MaxNewTokens = 6, EosIds = [eos] })[0];
        Assert.Equal(FinishReason.Eos, r.Finish);
        Assert.Equal(free.Take(free.ToList().IndexOf(eos) + 1), r.GeneratedIds);
        var tok = Model.Value.RequireTokenizer();
        string stop = tok.Decode(free.Take(2));
        var g = new Generator(Model.Value.Decoder, ids => tok.Decode(ids));
        var s = g.Generate([p], new GenerationOptions { MaxNewTokens = 6, IgnoreEos = true, StopStrings = [stop] })[0];
        Assert.Equal(FinishReason.StopString, s.Finish);
        Assert.True(s.GeneratedIds.Count <= 2);
    }
}
