// The sampler, the oracle: Sampler.Next's definition written plainly (HF's processor order; full LINQ
// sorts, fresh arrays, the same SplitMix64 draws): logit bias, repetition penalty, frequency and presence
// penalties over the generated tokens, temperature, top-k (the k-th largest value), top-p (ascending
// probability, ties by id, cumulative sums in double), min-p, then the draw. Tests and the bench hold the
// fast sampler against it.
namespace Temper.Models.Reference;

public sealed class SamplerReference(SamplingOptions o)
{
    private ulong _state = Mix(o.Seed ^ 0x243F6A8885A308D3UL);

    /// <summary>The next token id, as Sampler.Next defines it.</summary>
    public int Next(float[] logits, int[] history, int generatedFrom)
    {
        var s = (float[])logits.Clone();
        if (o.LogitBias != null) foreach (var (id, b) in o.LogitBias) s[id] += b;
        if (o.RepetitionPenalty != 1f)
            foreach (int id in history.Distinct()) s[id] = s[id] < 0 ? s[id] * o.RepetitionPenalty : s[id] / o.RepetitionPenalty;
        foreach (var g in history.Skip(generatedFrom).GroupBy(x => x)) s[g.Key] -= o.FrequencyPenalty * g.Count() + o.PresencePenalty;
        if (o.Greedy) return ArgMax(s);
        for (int i = 0; i < s.Length; i++) s[i] /= o.Temperature;
        if (o.TopK > 0 && o.TopK < s.Length)
        {
            float kth = s.OrderByDescending(x => x).ElementAt(o.TopK - 1);
            for (int i = 0; i < s.Length; i++) if (s[i] < kth) s[i] = float.NegativeInfinity;
        }
        if (o.TopP < 1f)
        {
            var p = Softmax(s);
            var order = Enumerable.Range(0, s.Length).OrderBy(i => p[i]).ToArray();
            double cum = 0;
            for (int j = 0; j < order.Length - 1; j++)
            {
                cum += p[order[j]];
                if (cum <= 1 - o.TopP) s[order[j]] = float.NegativeInfinity;
                else break;
            }
        }
        if (o.MinP > 0f)
        {
            var p = Softmax(s);
            float threshold = o.MinP * p.Max();
            for (int i = 0; i < s.Length; i++) if (p[i] < threshold) s[i] = float.NegativeInfinity;
        }
        var probs = Softmax(s);
        _state += 0x9E3779B97F4A7C15UL;
        double u = (Mix(_state) >> 11) * (1.0 / (1UL << 53)), acc = 0;
        for (int i = 0; i < probs.Length; i++)
        {
            acc += probs[i];
            if (u < acc) return i;
        }
        return ArgMax(s);
    }

    private static int ArgMax(float[] s)
    {
        int best = 0;
        for (int i = 1; i < s.Length; i++) if (s[i] > s[best]) best = i;
        return best;
    }

    private static float[] Softmax(float[] s)
    {
        float max = s.Max();
        var p = new float[s.Length];
        double sum = 0;
        for (int i = 0; i < s.Length; i++) { p[i] = float.IsNegativeInfinity(s[i]) ? 0 : MathF.Exp(s[i] - max); sum += p[i]; }
        for (int i = 0; i < s.Length; i++) p[i] = (float)(p[i] / sum);
        return p;
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
