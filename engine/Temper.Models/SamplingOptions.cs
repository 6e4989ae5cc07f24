// How the next token is picked, with Hugging Face's semantics and order: OpenAI's logit bias (added to the
// named tokens' logits), repetition penalty (over prompt and
// output tokens), then OpenAI's frequency and presence penalties (over output tokens only, as vLLM applies
// them: logit -= frequency x count + presence x [count > 0]), then temperature, top-k, top-p, min-p, then a
// draw from the softmax (or argmax when greedy; the penalties apply to greedy decoding too).
namespace Temper.Models;

public sealed record SamplingOptions
{
    public bool Greedy { get; init; } = true;
    public float Temperature { get; init; } = 1f;
    public int TopK { get; init; }                 // 0 = off
    public float TopP { get; init; } = 1f;         // 1 = off
    public float MinP { get; init; }               // 0 = off
    public float RepetitionPenalty { get; init; } = 1f;
    public float FrequencyPenalty { get; init; }   // 0 = off; OpenAI's range [-2, 2]
    public float PresencePenalty { get; init; }    // 0 = off; OpenAI's range [-2, 2]
    public ulong Seed { get; init; }
    /// <summary>OpenAI's logit_bias: added to the named token ids' logits first (-100 bans, 100 forces); null = none.</summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    public void Validate()
    {
        if (!Greedy && !(Temperature > 0)) throw new Core.TemperException($"--temperature must be > 0 (got {Temperature}); use --greedy for argmax decoding");
        if (TopK < 0) throw new Core.TemperException($"--top-k must be >= 0 (got {TopK})");
        if (!(TopP > 0 && TopP <= 1)) throw new Core.TemperException($"--top-p must be in (0, 1] (got {TopP})");
        if (!(MinP >= 0 && MinP <= 1)) throw new Core.TemperException($"--min-p must be in [0, 1] (got {MinP})");
        if (!(RepetitionPenalty > 0)) throw new Core.TemperException($"--repetition-penalty must be > 0 (got {RepetitionPenalty})");
        if (!(FrequencyPenalty >= -2 && FrequencyPenalty <= 2)) throw new Core.TemperException($"--frequency-penalty must be in [-2, 2] (got {FrequencyPenalty})");
        if (!(PresencePenalty >= -2 && PresencePenalty <= 2)) throw new Core.TemperException($"--presence-penalty must be in [-2, 2] (got {PresencePenalty})");
    }
}
