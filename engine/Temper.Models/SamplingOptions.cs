// How the next token is picked, with Hugging Face's semantics and order: repetition penalty, then
// temperature, top-k, top-p, min-p, then a draw from the softmax (or argmax when greedy).
namespace Temper.Models;

public sealed record SamplingOptions
{
    public bool Greedy { get; init; } = true;
    public float Temperature { get; init; } = 1f;
    public int TopK { get; init; }                 // 0 = off
    public float TopP { get; init; } = 1f;         // 1 = off
    public float MinP { get; init; }               // 0 = off
    public float RepetitionPenalty { get; init; } = 1f;
    public ulong Seed { get; init; }

    public void Validate()
    {
        if (!Greedy && !(Temperature > 0)) throw new Core.TemperException($"--temperature must be > 0 (got {Temperature}); use --greedy for argmax decoding");
        if (TopK < 0) throw new Core.TemperException($"--top-k must be >= 0 (got {TopK})");
        if (!(TopP > 0 && TopP <= 1)) throw new Core.TemperException($"--top-p must be in (0, 1] (got {TopP})");
        if (!(MinP >= 0 && MinP <= 1)) throw new Core.TemperException($"--min-p must be in [0, 1] (got {MinP})");
        if (!(RepetitionPenalty > 0)) throw new Core.TemperException($"--repetition-penalty must be > 0 (got {RepetitionPenalty})");
    }
}
