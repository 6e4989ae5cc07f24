// Picks the next token from one row of logits [V]. Scalar, but linear in V where it can be: it runs once
// per generated token per row on the serving engine's thread, and with a 128K vocabulary a full sort per
// token (top-p, top-k) cost ~18 ms. Top-k takes the k-th largest value from a k-long sorted buffer; top-p
// radix-sorts only the tokens of non-zero probability (after top-k: k of them), stably, so they come in
// the order a stable sort by probability gives and its cumulative sums are those of sorting everything. The
// draws come from SplitMix64 over the hashed seed, so nearby seeds (the generator gives row b seed + b)
// give independent streams; System.Random's seeded generator gives near-lattice first draws for
// consecutive seeds, which made a GRPO group's completions correlated. With a JSON constraint in the options
// each sampler keeps the constraint's state: the mask first, then the pick, then the state moves past it; with
// ConstraintAfter (a reasoning model's </think>) the constraint waits until that token has been generated, unless
// the prompt already holds it.
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
        bool constrained = Constrained(history, generatedFrom);
        int id = Pick(logits, history, generatedFrom, constrained);
        if (constrained) Constraint!.Advance(id);
        else if (Constraint != null && id == Options.ConstraintAfter) _constraintOn = true;
        return id;
    }

    private bool? _constraintOn;

    // Whether the constraint masks this pick: always without ConstraintAfter; with it, once that token is in the prompt
    // (checked at the first pick) or has been generated.
    private bool Constrained(ReadOnlySpan<int> history, int generatedFrom)
    {
        if (Constraint == null) return false;
        if (Options.ConstraintAfter is not int end) return true;
        return _constraintOn ??= history[..Math.Clamp(generatedFrom, 0, history.Length)].Contains(end);
    }

    /// <summary>This sampler's place in its JSON constraint (null without one): what it allows next, advanced on each pick.</summary>
    public Constrained.JsonConstraintState? Constraint { get; } = options.Constraint?.Start();

    private int Pick(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int generatedFrom, bool constrained)
    {
        var o = Options;
        if (o.Greedy && !o.AdjustsLogits) return ArgMax(logits);
        var s = AdjustedScores(logits, history, generatedFrom, constrained);
        if (o.Greedy) return AllowedArgMax(s, constrained);
        var probs = Filtered(s);
        int id = DrawIndex(probs);
        return id >= 0 ? id : AllowedArgMax(s, constrained);
    }

    /// <summary>
    /// The distribution [V] that <see cref="Next"/> draws from for these logits and history, after the bias, the
    /// penalties, temperature, top-k, top-p and min-p (speculative sampling's target p). Sampling only, without a
    /// JSON constraint (whose state moves with each pick); the sampler's state is not touched.
    /// </summary>
    public void Probabilities(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int generatedFrom, Span<float> probs)
    {
        if (Options.Greedy || Constraint != null) throw new InvalidOperationException("Probabilities is for sampling without a JSON constraint");
        if (probs.Length != logits.Length) throw new ArgumentException($"probs ({probs.Length}) and logits ({logits.Length}) differ in length");
        Filtered(AdjustedScores(logits, history, generatedFrom, constrained: false)).CopyTo(probs);
    }

    /// <summary>A token drawn from probs [V] with this sampler's stream (the argmax where rounding leaves the sum short of the draw).</summary>
    public int Draw(ReadOnlySpan<float> probs)
    {
        int id = DrawIndex(probs);
        return id >= 0 ? id : ArgMax(probs);
    }

    /// <summary>The next uniform draw in [0, 1) of this sampler's stream (speculative sampling's accept test).</summary>
    public double NextUniform() => NextDouble();

    // The logits after the constraint mask, bias and penalties, in the thread's scratch row.
    private float[] AdjustedScores(ReadOnlySpan<float> logits, ReadOnlySpan<int> history, int generatedFrom, bool constrained)
    {
        var o = Options;
        var s = Scratch(ref t_scores, logits.Length);
        logits.CopyTo(s);
        if (constrained) Constraint!.ApplyMask(s);
        if (o.MinTokens > 0 && history.Length - Math.Clamp(generatedFrom, 0, history.Length) < o.MinTokens)
            foreach (int id in o.EndIds)
                if ((uint)id < (uint)s.Length) s[id] = float.NegativeInfinity;
        if (o.LogitBias != null)
            foreach (var (id, bias) in o.LogitBias)
                if ((uint)id < (uint)s.Length) s[id] += bias;
        if (o.RepetitionPenalty != 1f)
            foreach (int id in history.ToArray().Distinct())
                if ((uint)id < (uint)s.Length) s[id] = s[id] < 0 ? s[id] * o.RepetitionPenalty : s[id] / o.RepetitionPenalty;
        if (o.FrequencyPenalty != 0f || o.PresencePenalty != 0f)
            foreach (var (id, count) in history[Math.Clamp(generatedFrom, 0, history.Length)..].ToArray().CountBy(id => id))
                if ((uint)id < (uint)s.Length) s[id] -= o.FrequencyPenalty * count + o.PresencePenalty;
        return s;
    }

    // Temperature, top-k, top-p and min-p over the adjusted scores s (changed in place), then the softmax: the
    // thread's scratch probability row.
    private float[] Filtered(float[] s)
    {
        var o = Options;
        var p = Scratch(ref t_probs, s.Length);
        for (int i = 0; i < s.Length; i++) s[i] /= o.Temperature;
        if (o.TopK > 0 && o.TopK < s.Length)
        {
            float kth = s[LargestIds(s, o.TopK)[^1]];
            for (int i = 0; i < s.Length; i++) if (s[i] < kth) s[i] = float.NegativeInfinity;
        }
        if (o.TopP < 1f) ApplyTopP(s, o.TopP, p);
        if (o.MinP > 0f)
        {
            Softmax(s, p);
            float threshold = o.MinP * p.Max();
            for (int i = 0; i < s.Length; i++) if (p[i] < threshold) s[i] = float.NegativeInfinity;
        }
        return Softmax(s, p);
    }

    // The first id whose cumulative probability exceeds one uniform draw; -1 where rounding leaves the sum short.
    private int DrawIndex(ReadOnlySpan<float> probs)
    {
        double u = NextDouble(), acc = 0;
        for (int i = 0; i < probs.Length; i++)
        {
            acc += probs[i];
            if (u < acc) return i;
        }
        return -1;
    }

    // The argmax of the adjusted scores; with a constraint, an allowed token even where every allowed score is -inf.
    private int AllowedArgMax(float[] s, bool constrained)
    {
        int best = ArgMax(s);
        if (!constrained || !float.IsNegativeInfinity(s[best])) return best;
        var allowed = Constraint!.Allowed();
        for (int i = 0; i < Math.Min(s.Length, allowed.Length * 64); i++) if ((allowed[i >> 6] & (1UL << i)) != 0) return i;
        return best;
    }

    /// <summary>
    /// HF's top-p: drop the lowest-probability tokens whose cumulative mass is at most 1 - p, keeping at least
    /// one. In ascending order of probability (ties by id) the zero-probability tokens come first and add
    /// nothing, so they are dropped (short of the last token) without sorting them; the rest are sorted.
    /// </summary>
    private static void ApplyTopP(float[] s, float topP, float[] p)
    {
        Softmax(s, p);
        int zeros = 0;
        foreach (float x in p) if (x == 0) zeros++;
        int dropZeros = Math.Min(zeros, s.Length - 1);
        for (int i = 0, dropped = 0; i < s.Length && dropped < dropZeros; i++)
            if (p[i] == 0)
            {
                s[i] = float.NegativeInfinity;
                dropped++;
            }
        var order = AscendingNonZero(p, s.Length - zeros);
        double cum = 0;
        for (int j = 0; zeros + j < s.Length - 1; j++)
        {
            int id = order[j];
            cum += p[id];
            if (cum <= 1 - topP) s[id] = float.NegativeInfinity;
            else break;
        }
    }

    /// <summary>
    /// The ids of the `count` non-zero probabilities in ascending order, ties by id: a stable radix sort (four
    /// byte passes) of the probabilities' bits, which order as the values do since they are positive.
    /// </summary>
    private static Span<int> AscendingNonZero(float[] p, int count)
    {
        Span<int> ids = Scratch(ref t_ids, p.Length).AsSpan(0, count), ids2 = Scratch(ref t_ids2, p.Length).AsSpan(0, count);
        Span<uint> keys = Scratch(ref t_keys, p.Length).AsSpan(0, count), keys2 = Scratch(ref t_keys2, p.Length).AsSpan(0, count);
        for (int i = 0, n = 0; i < p.Length; i++)
            if (p[i] != 0)
            {
                ids[n] = i;
                keys[n++] = (uint)BitConverter.SingleToInt32Bits(p[i]);
            }
        Span<int> counts = stackalloc int[257];
        for (int shift = 0; shift < 32; shift += 8)
        {
            counts.Clear();
            foreach (uint k in keys) counts[(int)((k >> shift) & 0xFF) + 1]++;
            for (int b = 0; b < 256; b++) counts[b + 1] += counts[b];
            for (int n = 0; n < count; n++)
            {
                int at = counts[(int)((keys[n] >> shift) & 0xFF)]++;
                ids2[at] = ids[n];
                keys2[at] = keys[n];
            }
            var swapIds = ids;
            ids = ids2;
            ids2 = swapIds;
            var swapKeys = keys;
            keys = keys2;
            keys2 = swapKeys;
        }
        return ids;
    }

    /// <summary>
    /// The ids of the k largest values, largest first, ties by the smaller id: one pass with a k-long buffer
    /// kept sorted (fewer ids when there are fewer values).
    /// </summary>
    public static int[] LargestIds(ReadOnlySpan<float> values, int k)
    {
        k = Math.Clamp(k, 0, values.Length);
        var ids = new int[k];
        int n = 0;
        for (int i = 0; k > 0 && i < values.Length; i++)
        {
            float x = values[i];
            if (n == k && !(x > values[ids[k - 1]])) continue;
            int j = n < k ? n++ : k - 1;
            for (; j > 0 && x > values[ids[j - 1]]; j--) ids[j] = ids[j - 1];
            ids[j] = i;
        }
        return ids;
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

    // A thread's scratch row of n floats (the scores and probabilities of one call): allocating two [V] arrays a
    // call put 0.5 MB a piece on the large-object heap at a 128K vocabulary, ~1.3 ms a token in collections.
    [ThreadStatic] private static float[]? t_scores, t_probs;
    [ThreadStatic] private static int[]? t_ids, t_ids2;
    [ThreadStatic] private static uint[]? t_keys, t_keys2;

    private static T[] Scratch<T>(ref T[]? buffer, int n) => buffer?.Length == n ? buffer : buffer = new T[n];

    private static float[] Softmax(float[] s, float[] p)
    {
        float max = s.Max();
        double sum = 0;
        for (int i = 0; i < s.Length; i++) { p[i] = float.IsNegativeInfinity(s[i]) ? 0 : MathF.Exp(s[i] - max); sum += p[i]; }
        for (int i = 0; i < s.Length; i++) p[i] = (float)(p[i] / sum);
        return p;
    }
}
