// The sampling fields of one request as its client gave them (null: left out), and the one place the HTTP
// server (OpenAiRequest) and the IChatClient (TemperChatClient) turn them into the engine's SamplingOptions
// and token limit: a field left out takes the model's generation_config.json value (ServedModel.GenerationDefaults,
// vLLM's --generation-config auto), else the caller's own default (the server's OpenAI defaults: temperature 1,
// 16 or 256 tokens; the IChatClient's greedy); a seed left out takes the server's default seed (ServedModel.DefaultSeed,
// vLLM's --seed), else a random one. Ranges are checked as OpenAI and vLLM check them; a value out of range is a
// TemperException naming the field (HTTP 400).
using Temper.Core;
using Temper.Models;

namespace Temper.Serving.Http;

public sealed record RequestSampling
{
    public int? MaxTokens { get; init; }
    /// <summary>0: greedy.</summary>
    public float? Temperature { get; init; }
    public float? TopP { get; init; }
    /// <summary>0 or -1: off (vLLM's top_k).</summary>
    public int? TopK { get; init; }
    public float? MinP { get; init; }
    public float? RepetitionPenalty { get; init; }
    public float? FrequencyPenalty { get; init; }
    public float? PresencePenalty { get; init; }
    public long? Seed { get; init; }
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    /// <summary>
    /// The engine's sampling options and token limit for these fields on model <paramref name="m"/>: each field left out
    /// takes the model's generation_config.json value, else <paramref name="unsetTemperature"/> / <paramref name="unsetMaxTokens"/>
    /// (the others: off); the seed, m.DefaultSeed, else a random one.
    /// </summary>
    public (SamplingOptions Sampling, int MaxTokens) Resolve(ServedModel m, float unsetTemperature, int unsetMaxTokens)
    {
        var g = m.GenerationDefaults;
        int maxTokens = MaxTokens ?? g?.MaxNewTokens ?? unsetMaxTokens;
        float temperature = Temperature ?? g?.Temperature ?? unsetTemperature;
        if (!(temperature >= 0 && temperature <= 2)) throw new TemperException($"'temperature' must be in [0, 2] (got {temperature})");
        float topP = TopP ?? g?.TopP ?? 1f;
        float frequency = FrequencyPenalty ?? 0f, presence = PresencePenalty ?? 0f;
        if (!(frequency >= -2 && frequency <= 2)) throw new TemperException($"'frequency_penalty' must be in [-2, 2] (got {frequency})");
        if (!(presence >= -2 && presence <= 2)) throw new TemperException($"'presence_penalty' must be in [-2, 2] (got {presence})");
        int topK = TopK ?? g?.TopK ?? 0;
        if (topK < -1) throw new TemperException($"'top_k' must be >= 1, or 0 or -1 for off (got {topK})");
        float minP = MinP ?? g?.MinP ?? 0f;
        if (!(minP >= 0 && minP <= 1)) throw new TemperException($"'min_p' must be in [0, 1] (got {minP})");
        float repetition = RepetitionPenalty ?? g?.RepetitionPenalty ?? 1f;
        if (!(repetition > 0)) throw new TemperException($"'repetition_penalty' must be > 0 (got {repetition})");
        var penalties = new SamplingOptions { FrequencyPenalty = frequency, PresencePenalty = presence, RepetitionPenalty = repetition, LogitBias = LogitBias };
        var sampling = temperature == 0
            ? penalties with { Greedy = true }
            : penalties with
            {
                Greedy = false, Temperature = temperature, TopP = topP, TopK = Math.Max(0, topK), MinP = minP,
                Seed = (ulong)(Seed ?? m.DefaultSeed ?? Random.Shared.NextInt64()),
            };
        return (sampling, maxTokens);
    }
}
