// The records a synthetic task with verifiable answers deals in: an item to solve, the score of one
// completion, and the figures over many.
namespace Temper.Training.Tasks;

/// <param name="Prompt">The question, e.g. "What is 23+58?".</param>
/// <param name="Completion">The reference completion in the required format, e.g. "Answer: 81".</param>
/// <param name="Answer">The number the completion must give.</param>
public sealed record TaskItem(string Prompt, string Completion, long Answer);

/// <param name="Correct">The format holds and gives the right number.</param>
/// <param name="FormatOk">The completion is the required format line.</param>
/// <param name="Reward">1 correct, 0.1 format only, 0 otherwise.</param>
/// <param name="Length">The completion's length in chars, as generated (nothing trimmed).</param>
public sealed record TaskScore(bool Correct, bool FormatOk, double Reward, int Length);

public sealed record TaskEvaluation(int Count, double Accuracy, double FormatRate, double MeanReward, double MeanLength);
