// How the next token is picked, with Hugging Face's semantics and order: OpenAI's logit bias (added to the
// named tokens' logits), repetition penalty (over prompt and
// output tokens), then OpenAI's frequency and presence penalties (over output tokens only, as vLLM applies
// them: logit -= frequency x count + presence x [count > 0]), then temperature, top-k, top-p, min-p, then a
// draw from the softmax (or argmax when greedy; the penalties apply to greedy decoding too). A JSON
// constraint (structured output) first sets the logits of tokens it does not allow to -inf, and so does a
// minimum length (MinTokens) for the end ids until it is reached.
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

    /// <summary>Structured output: only tokens that keep the output valid JSON of this constraint (response_format json_object /
    /// json_schema); each Sampler keeps its own state of it. Null = free text.</summary>
    public Constrained.JsonConstraint? Constraint { get; init; }

    /// <summary>The token that ends a reasoning block (a reasoning model's &lt;/think&gt;): the constraint applies only to
    /// the tokens after it, or from the start when the prompt already holds it (as vLLM structures a reasoning model's
    /// answer, not its thinking). Null: from the start.</summary>
    public int? ConstraintAfter { get; init; }

    /// <summary>transformers' min_new_tokens / vLLM's min_tokens: until this many tokens are generated, the ids of
    /// <see cref="EndIds"/> (EOS and stop ids) cannot be picked. 0 = off.</summary>
    public int MinTokens { get; init; }
    /// <summary>The ids MinTokens holds back (the generation's EOS and stop token ids).</summary>
    public IReadOnlyList<int> EndIds { get; init; } = [];

    /// <summary>Whether anything changes the logits before the pick (bias, penalties, a minimum length or a JSON constraint): greedy decoding then needs the whole row.</summary>
    public bool AdjustsLogits => LogitBias != null || RepetitionPenalty != 1f || FrequencyPenalty != 0f || PresencePenalty != 0f || Constraint != null || MinTokens > 0;

    /// <summary>Checks every field, naming them as the CLI's flags (--top-p).</summary>
    public void Validate() => Validate(field => "--" + field.Replace('_', '-'));

    /// <summary>Checks every field; <paramref name="name"/> turns a field's snake_case name (top_p) into how the
    /// caller's users spell it (a flag, a C struct field, a JSON key), for the one-line error.</summary>
    public void Validate(Func<string, string> name)
    {
        if (!Greedy && !(Temperature > 0)) throw new Core.TemperException($"{name("temperature")} must be > 0 (got {Temperature}); use --greedy for argmax decoding");
        if (TopK < 0) throw new Core.TemperException($"{name("top_k")} must be >= 0 (got {TopK})");
        if (!(TopP > 0 && TopP <= 1)) throw new Core.TemperException($"{name("top_p")} must be in (0, 1] (got {TopP})");
        if (!(MinP >= 0 && MinP <= 1)) throw new Core.TemperException($"{name("min_p")} must be in [0, 1] (got {MinP})");
        if (!(RepetitionPenalty > 0)) throw new Core.TemperException($"{name("repetition_penalty")} must be > 0 (got {RepetitionPenalty})");
        if (!(FrequencyPenalty >= -2 && FrequencyPenalty <= 2)) throw new Core.TemperException($"{name("frequency_penalty")} must be in [-2, 2] (got {FrequencyPenalty})");
        if (!(PresencePenalty >= -2 && PresencePenalty <= 2)) throw new Core.TemperException($"{name("presence_penalty")} must be in [-2, 2] (got {PresencePenalty})");
        if (MinTokens < 0) throw new Core.TemperException($"{name("min_tokens")} must be >= 0 (got {MinTokens})");
    }
}
