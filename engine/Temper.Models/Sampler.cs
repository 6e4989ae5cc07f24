// Picks the next token from one row of logits [V]. Scalar and readable: it runs once per generated
// token per row, far off the hot path of the forward pass. The draws come from SplitMix64 over the
// hashed seed, so nearby seeds (the generator gives row b seed + b) give independent streams;
// System.Random's seeded generator gives near-lattice first draws for consecutive seeds, which made
// a GRPO group's completions correlated.
namespace Temper.Models;

public sealed class Sampler(SamplingOptions options)
{
    private ulong _state = Mix(options.Seed ^ 0x243F6A8885A308D3UL);

    public SamplingOptions Options { get; } = options;

    /// <summary>
    /// The next token id given logits [V] and the ids so far of that row: history = prompt + generated, the
    /// generated ones from index <paramref name="generatedFrom"/> (what the frequency and presence penalties count).
    /// </summary>
    public int Next(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int generatedFrom = 0)
    {
        var o = Options;
        var s = logits.ToArray();
        if (o.LogitBias != null)
            foreach (var (id, bias) in o.LogitBias)
                if ((uint)id < (uint)s.Length) s[id] += bias;
        if (o.RepetitionPenalty != 1f)
            foreach (int id in history.ToArray().Distinct())
                if ((uint)id < (uint)s.Length) s[id] = s[id] < 0 ? s[id] * o.RepetitionPenalty : s[id] / o.RepetitionPenalty;
        if (o.FrequencyPenalty != 0f || o.PresencePenalty != 0f)
            foreach (var (id, count) in history[Math.Clamp(generatedFrom, 0, history.Length)..].ToArray().CountBy(id => id))
                if ((uint)id < (uint)s.Length) s[id] -= o.FrequencyPenalty * count + o.PresencePenalty;
        if (o.Greedy) return ArgMax(s);

        for (int i = 0; i < s.Length; i++) s[i] /= o.Temperature;
        if (o.TopK > 0 && o.TopK < s.Length)
        {
            float kth = s.OrderByDescending(x => x).ElementAt(o.TopK - 1);
            for (int i = 0; i < s.Length; i++) if (s[i] < kth) s[i] = float.NegativeInfinity;
        }
        if (o.TopP < 1f) ApplyTopP(s, o.TopP);
        if (o.MinP > 0f)
        {
            var p = Softmax(s);
            float threshold = o.MinP * p.Max();
            for (int i = 0; i < s.Length; i++) if (p[i] < threshold) s[i] = float.NegativeInfinity;
        }
        var probs = Softmax(s);
        double u = NextDouble(), acc = 0;
        for (int i = 0; i < probs.Length; i++)
        {
            acc += probs[i];
            if (u < acc) return i;
        }
        return ArgMax(s);
    }

    /// <summary>HF's top-p: drop the lowest-probability tokens whose cumulative mass is at most 1 - p, keeping at least one.</summary>
    private static void ApplyTopP(float[] s, float topP)
    {
        var p = Softmax(s);
        var order = Enumerable.Range(0, s.Length).OrderBy(i => p[i]).ToArray();
        double cum = 0;
        for (int j = 0; j < order.Length - 1; j++)
        {
            cum += p[order[j]];
            if (cum <= 1 - topP) s[order[j]] = float.NegativeInfinity;
            else break;
        }
    }

    private double NextDouble()
    {
        _state += 0x9E3779B97F4A7C15UL;
        return (Mix(_state) >> 11) * (1.0 / (1UL << 53));
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public static int ArgMax(ReadOnlySpan<float> s)
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
}
