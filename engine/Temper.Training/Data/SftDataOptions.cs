// How SftDataset.Load treats long examples, bad lines and packing, and which tokens it labels.
namespace Temper.Training.Data;

/// <summary>What happens to an example longer than MaxLength.</summary>
public enum Truncation
{
    /// <summary>Keep the first MaxLength tokens.</summary>
    Right,
    /// <summary>Keep the last MaxLength tokens.</summary>
    Left,
    /// <summary>Skip the example (counted in DroppedCount).</summary>
    Drop,
    /// <summary>Throw a TemperException naming file and line.</summary>
    Error,
}

/// <param name="MaxLength">Longest example in tokens; null for no limit.</param>
/// <param name="SkipBadLines">Count and skip malformed lines instead of throwing.</param>
/// <param name="Packing">Concatenate examples into rows of MaxLength (SftPacker); needs MaxLength.</param>
/// <param name="AssistantOnlyLoss">"messages" lines: learn only what the assistant turns add (Temper's default); false:
/// every token, as TRL's default assistant_only_loss=False does.</param>
/// <param name="CompletionOnlyLoss">"prompt"/"completion" lines: learn only the completion (TRL's default completion_only_loss);
/// false: the prompt's tokens too.</param>
public sealed record SftDataOptions(
    int? MaxLength = null,
    Truncation Truncation = Truncation.Right,
    bool SkipBadLines = false,
    bool Packing = false,
    bool AssistantOnlyLoss = true,
    bool CompletionOnlyLoss = true)
{
    public static Truncation ParseTruncation(string name) => name switch
    {
        "right" => Truncation.Right,
        "left" => Truncation.Left,
        "drop" => Truncation.Drop,
        "error" => Truncation.Error,
        _ => throw new Temper.Core.TemperException($"--truncation must be right, left, drop or error, not '{name}'"),
    };
}
