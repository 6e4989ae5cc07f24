// A draft model as proposer: a smaller decoder of the same vocabulary (SmolLM-135M for SmolLM-1.7B, say) with
// its own KV cache, run autoregressively for K tokens a step. Greedy decoding proposes the draft's picks (with
// the same penalties); sampling draws each proposal from the draft's distribution q after the same
// temperature/top-k/top-p/min-p/penalties, with its own seeded stream, and keeps q for the verifier.
// Rollback: the proposer remembers which tokens its cache holds; each Propose keeps the longest prefix they
// share with the new context (KvCache.Truncate drops the rest) and feeds the remainder in one forward:
// typically the target's own token after a rejection, or the last proposal and that token after a full accept.
using System.Runtime.InteropServices;
using Temper.Core;

namespace Temper.Models.Speculative;

public sealed class DraftModelProposer : ISpeculativeProposer
{
    private readonly Decoder _draft;
    private readonly KvCache _cache;
    private readonly List<int> _fed = []; // the tokens whose K/V the cache holds, in order
    private readonly List<int> _history = [];
    private readonly Sampler _sampler;
    private readonly float[][] _q;

    /// <summary>A draft of <paramref name="capacity"/> positions (prompt + new tokens) proposing at most <paramref name="maxTokens"/> a step.</summary>
    public DraftModelProposer(Decoder draft, SamplingOptions sampling, int capacity, int maxTokens)
    {
        _draft = draft;
        _sampler = new Sampler(sampling);
        _q = sampling.Greedy ? [] : Enumerable.Range(0, maxTokens).Select(_ => new float[draft.Config.VocabSize]).ToArray();
        _cache = new KvCache(draft.Config, draft.Backend, 1, capacity + draft.Weights.VirtualTokenCount);
    }

    /// <summary>Draft forwards run so far (a catch-up forward and one a proposed token after the first).</summary>
    public int Forwards { get; private set; }

    public int Propose(ReadOnlySpan<int> context, int promptLength, Span<int> proposal)
    {
        if (proposal.IsEmpty || context.IsEmpty) return 0;
        // Keep what the cache shares with the context, but feed at least the last token: its logits give proposal 0.
        int keep = 0, limit = Math.Min(_fed.Count, context.Length - 1);
        while (keep < limit && _fed[keep] == context[keep]) keep++;
        _cache.Truncate(_cache.Length == 0 ? 0 : _cache.VirtualTokens + keep); // positions past a prompt-tuning adapter's virtual tokens
        _fed.RemoveRange(keep, _fed.Count - keep);
        _history.Clear();
        _history.AddRange(context);

        var feed = context[keep..];
        var positions = new int[feed.Length];
        for (int i = 0; i < positions.Length; i++) positions[i] = keep + i;
        var logits = Forward(feed, positions);
        _fed.AddRange(feed);
        if (_cache.Length != _cache.VirtualTokens + _fed.Count)
            throw new InvalidOperationException($"the draft's KV cache holds {_cache.Length} positions for {_fed.Count} tokens and {_cache.VirtualTokens} virtual ones");
        for (int i = 0; i < proposal.Length; i++)
        {
            using (logits)
            {
                using var host = logits.IsHost ? null : _draft.Backend.ToHost(logits);
                var row = (host ?? logits).Floats[.._draft.Config.VocabSize];
                var history = CollectionsMarshal.AsSpan(_history);
                if (_q.Length == 0) proposal[i] = _sampler.Next(row, history, promptLength);
                else
                {
                    _sampler.Probabilities(row, history, promptLength, _q[i]);
                    proposal[i] = _sampler.Draw(_q[i]);
                }
            }
            _history.Add(proposal[i]);
            if (i == proposal.Length - 1) break;
            logits = Forward([proposal[i]], [_fed.Count]);
            _fed.Add(proposal[i]);
        }
        return proposal.Length;
    }

    public ReadOnlySpan<float> Distribution(int i) => _q.Length == 0 ? default : _q[i];

    private Tensor Forward(ReadOnlySpan<int> ids, ReadOnlySpan<int> positions)
    {
        Forwards++;
        return _draft.Forward(ids, positions, default, 1, _cache, allPositions: false);
    }

    public void Dispose() => _cache.Dispose();
}
