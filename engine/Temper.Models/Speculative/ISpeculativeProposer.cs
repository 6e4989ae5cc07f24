// A proposer of speculative tokens for one sequence: given the context (prompt, then the tokens generated so
// far, the last of which the target has not run yet), up to K tokens it guesses come next. The verifier
// (SpeculativeDecoding) needs, for each proposed token, the distribution q it was drawn from; a proposer that
// picks deterministically (prompt lookup, a greedy draft) reports none, which means q is one-hot at the token.
namespace Temper.Models.Speculative;

public interface ISpeculativeProposer : IDisposable
{
    /// <summary>Writes up to proposal.Length tokens to follow <paramref name="context"/> and returns how many (0: no
    /// guess; the step decodes one token). Tokens from <paramref name="promptLength"/> on were generated.</summary>
    int Propose(ReadOnlySpan<int> context, int promptLength, Span<int> proposal);

    /// <summary>The distribution [V] the last Propose drew proposal i from; empty where it picked deterministically.</summary>
    ReadOnlySpan<float> Distribution(int i);
}
