// Prompt lookup (vLLM's "ngram" speculative method, llama.cpp's lookup decoding): the last n tokens of the
// context (n from NgramMax down to NgramMin) are searched for in the earlier context, most recent occurrence
// first, and the up-to-K tokens that followed that occurrence are proposed (fewer where the context ends
// first). It pays where the output copies its input: code edits, quoting, summaries, a model that loops.
// Deterministic, so q is one-hot. O(context x n) a step, small beside a forward.
namespace Temper.Models.Speculative;

public sealed class NgramProposer : ISpeculativeProposer
{
    private readonly int _min, _max;

    public NgramProposer(int ngramMin, int ngramMax)
    {
        if (ngramMin < 1 || ngramMax < ngramMin) throw new ArgumentOutOfRangeException(nameof(ngramMin), $"n-gram range {ngramMin}..{ngramMax} is empty or starts below 1");
        _min = ngramMin;
        _max = ngramMax;
    }

    public int Propose(ReadOnlySpan<int> context, int promptLength, Span<int> proposal)
    {
        int len = context.Length;
        if (proposal.IsEmpty) return 0;
        for (int n = Math.Min(_max, len - 1); n >= _min; n--)
        {
            var suffix = context[(len - n)..];
            // An earlier occurrence starts at most at len - n - 1, so at least one token follows it.
            for (int start = len - n - 1; start >= 0; start--)
            {
                if (!context.Slice(start, n).SequenceEqual(suffix)) continue;
                int from = start + n, count = Math.Min(proposal.Length, len - from);
                context.Slice(from, count).CopyTo(proposal);
                return count;
            }
        }
        return 0;
    }

    public ReadOnlySpan<float> Distribution(int i) => default;

    public void Dispose() { }
}
