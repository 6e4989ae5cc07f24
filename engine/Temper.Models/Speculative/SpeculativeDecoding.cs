// Speculative decoding of one prompt (Generator.Generate with GenerationOptions.Speculative). The target's KV
// cache holds every token but the last one chosen (the "pending" token); a step runs the target once over
// [pending, d1..dk] (the proposer's k guesses) with logits at every position, so row i is the target's
// next-token distribution after d1..di. Greedy: d(i+1) is kept while it is the target's own pick at row i (the
// plain Sampler's pick, penalties included), and the first disagreement (or row k, after all k) supplies the
// target's token: the output is plain greedy decoding's, up to the rounding of a k+1-token forward. Sampling
// with a deterministic proposer (prompt lookup: q one-hot at its guess x) works the same way: row i is drawn by
// the plain Sampler and d(i+1) kept while it equals the draw, which is the speculative sampling rule for a
// one-hot q (x kept with probability p(x), a rejection's token drawn from p without x) using one uniform a
// token, so a seed gives plain sampling's tokens (up to the same rounding). A sampling draft model (q its own
// distribution): SpeculativeSampling's accept/residual rule over p = the Sampler's distribution after every
// filter, so the output is distributed as plain sampling's (not the same draws for a seed). The cache is then truncated to
// drop the rejected tokens' K/V (KvCache.Truncate; a prompt-tuning adapter's virtual tokens before the prompt
// stay); k is cut so a step never runs past MaxNewTokens, so the cache needs no room beyond prompt + new tokens.
using System.Runtime.InteropServices;
using Temper.Core;

namespace Temper.Models.Speculative;

internal static class SpeculativeDecoding
{
    public static GenerationResult Generate(Decoder target, IReadOnlyList<int> prompt, GenerationOptions o, SpeculativeOptions spec,
        Func<IReadOnlyList<int>, string>? decode, Action<int, int>? onToken, CancellationToken cancel)
    {
        var cfg = target.Config;
        int capacity = prompt.Count + o.MaxNewTokens;
        var generated = new List<int>();
        var stats = new SpeculationStats(0, 0, 0, 0);
        if (o.MaxNewTokens == 0) return new GenerationResult(prompt, generated, FinishReason.Length) { Speculation = stats };

        var sampler = new Sampler(o.Sampling);
        bool greedy = o.Sampling.Greedy;
        using ISpeculativeProposer proposer = spec.Draft is Decoder draft
            ? new DraftModelProposer(draft, o.Sampling with { Seed = o.Sampling.Seed ^ 0x5DEECE66DUL }, capacity, spec.NumTokens)
            : new NgramProposer(spec.NgramMin, spec.NgramMax);
        var tokens = new List<int>(prompt); // prompt + generated; the last generated one is the pending token
        FinishReason? finish = null;
        int v = cfg.VocabSize;
        var p = greedy ? [] : new float[v];
        var residual = greedy ? [] : new float[v];

        // Adds one chosen token; false once the generation is over (EOS, a stop string, MaxNewTokens).
        bool Emit(int id)
        {
            tokens.Add(id);
            generated.Add(id);
            onToken?.Invoke(0, id);
            if (!o.IgnoreEos && o.EosIds.Contains(id)) finish = FinishReason.Eos;
            else if (o.StopStrings.Count > 0 && o.StopStrings.Any(decode!(generated).Contains)) finish = FinishReason.StopString;
            return finish == null && generated.Count < o.MaxNewTokens;
        }

        using var cache = new KvCache(cfg, target.Backend, 1, capacity + target.Weights.VirtualTokenCount);
        var positions = Enumerable.Range(0, prompt.Count).ToArray();
        var ones = Enumerable.Repeat(1, Math.Max(prompt.Count, spec.NumTokens + 1)).ToArray();
        int first;
        using (var logits = target.Forward(prompt.ToArray(), positions, ones.AsSpan(0, prompt.Count), 1, cache, allPositions: false))
        using (var host = logits.IsHost ? null : target.Backend.ToHost(logits))
            first = sampler.Next((host ?? logits).Floats[..v], CollectionsMarshal.AsSpan(tokens), prompt.Count);

        var proposal = new int[spec.NumTokens];
        var ids = new int[spec.NumTokens + 1];
        var stepPositions = new int[spec.NumTokens + 1];
        int forwards = 0, verifySteps = 0, proposedTotal = 0, acceptedTotal = 0;
        bool going = Emit(first);
        while (going)
        {
            cancel.ThrowIfCancellationRequested();
            if (cache.Length != cache.VirtualTokens + tokens.Count - 1) // every token but the pending one, after any virtual tokens
                throw new InvalidOperationException($"speculative decoding's KV cache holds {cache.Length} positions for {tokens.Count - 1} tokens and {cache.VirtualTokens} virtual ones");
            // A step adds its accepted proposals and the target's token: at most the room left.
            int k = Math.Min(spec.NumTokens, o.MaxNewTokens - generated.Count - 1);
            int proposed = k > 0 ? proposer.Propose(CollectionsMarshal.AsSpan(tokens), prompt.Count, proposal.AsSpan(0, k)) : 0;
            int start = tokens.Count - 1; // the pending token's position
            ids[0] = tokens[^1];
            proposal.AsSpan(0, proposed).CopyTo(ids.AsSpan(1));
            for (int i = 0; i <= proposed; i++) stepPositions[i] = start + i;
            int accepted = 0, next;
            using (var logits = target.Forward(ids.AsSpan(0, proposed + 1), stepPositions.AsSpan(0, proposed + 1), ones.AsSpan(0, proposed + 1), 1, cache, allPositions: proposed > 0))
            using (var host = logits.IsHost ? null : target.Backend.ToHost(logits))
            {
                var rows = (host ?? logits).Floats;
                // Row i's history is the context then d1..di: appended to tokens while verifying, removed after.
                while (true)
                {
                    var row = rows.Slice(accepted * v, v);
                    var history = CollectionsMarshal.AsSpan(tokens);
                    if (accepted == proposed)
                    {
                        next = sampler.Next(row, history, prompt.Count);
                        break;
                    }
                    int x = proposal[accepted];
                    var q = greedy ? default : proposer.Distribution(accepted);
                    if (q.IsEmpty)
                    {
                        next = sampler.Next(row, history, prompt.Count);
                        if (next != x) break;
                    }
                    else
                    {
                        sampler.Probabilities(row, history, prompt.Count, p);
                        if (!SpeculativeSampling.Accept(p, q, x, sampler.NextUniform()))
                        {
                            SpeculativeSampling.Residual(p, q, residual);
                            next = sampler.Draw(residual);
                            break;
                        }
                    }
                    tokens.Add(x);
                    accepted++;
                }
                tokens.RemoveRange(start + 1, accepted);
            }
            cache.Truncate(cache.VirtualTokens + start + 1 + accepted); // keep a prompt-tuning adapter's virtual tokens, the pending token and the accepted proposals
            forwards++;
            if (proposed > 0) verifySteps++;
            proposedTotal += proposed;
            acceptedTotal += accepted;
            for (int i = 0; i < accepted && going; i++) going = Emit(proposal[i]);
            if (going) going = Emit(next);
        }
        stats = new SpeculationStats(forwards, verifySteps, proposedTotal, acceptedTotal);
        return new GenerationResult(prompt, generated, finish ?? FinishReason.Length) { Speculation = stats };
    }
}
