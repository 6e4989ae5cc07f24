// The sampler against its plain reference (Temper.Models.Reference.SamplerReference): the same token for
// every draw over random logits with ties, -inf entries, a tiny vocabulary and a large one, and every
// option alone and together, and ties at the top-p boundary. The sampler's linear-time top-k, radix-sorted
// top-p and reused buffers must not change a single draw.
using Temper.Models;
using Temper.Models.Reference;

namespace Temper.Tests;

public class SamplerReferenceTests
{
    // Equal probabilities straddling the top-p boundary: in ascending order ties go by id, so of four equal
    // tokens at top-p 0.5 the two lowest ids are dropped (cumulative 0.25, 0.5 <= 0.5) and 2, 3 are drawn.
    [Fact]
    public void Ties_at_the_top_p_boundary_drop_the_lower_ids()
    {
        var o = new SamplingOptions { Greedy = false, TopP = 0.5f, Seed = 3 };
        var fast = new Sampler(o);
        var reference = new SamplerReference(o);
        float[] logits = [1f, 1f, 1f, 1f, float.NegativeInfinity];
        var drawn = Enumerable.Range(0, 40).Select(_ => fast.Next(logits, [], 0)).ToArray();
        Assert.Equal([2, 3], drawn.Distinct().Order());
        Assert.Equal(drawn, Enumerable.Range(0, 40).Select(_ => reference.Next(logits, [], 0)));
    }

    [Theory]
    [InlineData(7)]
    [InlineData(512)]
    [InlineData(50_000)]
    public void Every_draw_matches_the_reference(int vocab)
    {
        var rng = new Random(vocab);
        SamplingOptions Random(int seed) => new()
        {
            Greedy = rng.Next(6) == 0,
            Temperature = rng.Next(2) == 0 ? 1f : 0.3f + (float)rng.NextDouble(),
            TopK = rng.Next(3) == 0 ? rng.Next(1, Math.Min(vocab, 80)) : 0,
            TopP = rng.Next(2) == 0 ? 1f : 0.05f + 0.94f * (float)rng.NextDouble(),
            MinP = rng.Next(3) == 0 ? 0.2f * (float)rng.NextDouble() : 0f,
            RepetitionPenalty = rng.Next(3) == 0 ? 1.3f : 1f,
            FrequencyPenalty = rng.Next(3) == 0 ? 0.5f : 0f,
            PresencePenalty = rng.Next(3) == 0 ? -0.4f : 0f,
            LogitBias = rng.Next(4) == 0 ? new Dictionary<int, float> { [rng.Next(vocab)] = 5f, [rng.Next(vocab)] = -100f } : null,
            Seed = (ulong)seed,
        };
        int cases = vocab > 10_000 ? 12 : 60, sampled = 0;
        for (int c = 0; c < cases; c++)
        {
            var o = Random(c);
            var fast = new Sampler(o);
            var reference = new SamplerReference(o);
            for (int draw = 0; draw < 4; draw++)
            {
                // coarse values give ties; some -inf entries (masked tokens)
                var logits = Enumerable.Range(0, vocab).Select(_ => rng.Next(20) == 0 ? float.NegativeInfinity : MathF.Round((float)(rng.NextDouble() * 12 - 6), rng.Next(2) == 0 ? 1 : 4)).ToArray();
                logits[rng.Next(vocab)] = 3f;
                var history = Enumerable.Range(0, 30).Select(_ => rng.Next(vocab)).ToArray();
                int want = reference.Next(logits, history, 10), got = fast.Next(logits, history, 10);
                Assert.True(want == got, $"case {c} draw {draw} ({o}): sampler {got}, reference {want}");
                if (!o.Greedy) sampled++;
            }
        }
        Assert.True(sampled > cases, "too few sampled (non-greedy) draws");
    }
}
