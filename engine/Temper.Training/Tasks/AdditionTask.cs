// A synthetic task with verifiable answers: small additions, to check that SFT, GRPO and pretraining
// runs learn something measurable.
//   prompt:      "What is 23+58?"
//   completion:  exactly one line "Answer: 81" (the sum in decimal, no leading zeros or other text).
// Scoring trims trailing whitespace and end-of-sequence text (<|...|>, </s>, <eos>) and leading
// whitespace, then the rest must match ^Answer: (-?\d+)$ (FormatOk) with the number equal to the sum
// (Correct). Reward: 1 correct, 0.1 right format but wrong number, 0 otherwise.
// Train and held-out sets never share an (a, b) pair: a pair is held out when a fixed hash of it falls
// under HeldOutFraction, whatever the seed; operands are drawn uniformly from [Min, Max] by SplitMix64.
// Text forms: SFT prompt/completion is {"prompt": "Q\n", "completion": "Answer: N"}, the messages form a
// user and an assistant turn, and pretraining text "Q\nAnswer: N".
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Temper.Core;
using Temper.Training.Data;

namespace Temper.Training.Tasks;

public sealed partial class AdditionTask
{
    private const ulong SplitSalt = 0x5EEDADD17105A17UL;
    private static readonly JsonSerializerOptions JsonLine = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public AdditionTask(int min = 0, int max = 99, double heldOutFraction = 0.1)
    {
        if (min > max || (long)max - min >= int.MaxValue) throw new TemperException($"addition task: bad operand range {min}..{max}");
        if (heldOutFraction is <= 0 or >= 1) throw new TemperException($"addition task: held-out fraction must be in (0, 1), not {heldOutFraction}");
        Min = min;
        Max = max;
        HeldOutFraction = heldOutFraction;
    }

    public int Min { get; }
    public int Max { get; }
    public double HeldOutFraction { get; }

    public bool IsHeldOut(int a, int b) =>
        (SplitMix64.Mix(((ulong)(uint)a << 32 | (uint)b) ^ SplitSalt) >> 11) * (1.0 / (1UL << 53)) < HeldOutFraction;

    public IReadOnlyList<TaskItem> Train(int count, ulong seed) => Generate(count, seed, heldOut: false);
    public IReadOnlyList<TaskItem> HeldOut(int count, ulong seed) => Generate(count, seed, heldOut: true);

    public static TaskItem Item(int a, int b) => new($"What is {a}+{b}?", $"Answer: {(long)a + b}", (long)a + b);

    // Pairs drawn with replacement, kept when they fall in the wanted split.
    private List<TaskItem> Generate(int count, ulong seed, bool heldOut)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var rng = new SplitMix64(seed);
        var items = new List<TaskItem>(count);
        int span = Max - Min + 1;
        for (long tries = 0; items.Count < count; tries++)
        {
            if (tries > 1000L * (count + 1))
                throw new TemperException($"addition task: operands {Min}..{Max} give (almost) no {(heldOut ? "held-out" : "training")} pairs");
            int a = Min + rng.NextInt(span), b = Min + rng.NextInt(span);
            if (IsHeldOut(a, b) == heldOut) items.Add(Item(a, b));
        }
        return items;
    }

    [GeneratedRegex(@"(?:\s|<\|[^|>]*\|>|</s>|<eos>)+$")]
    private static partial Regex TrailingEnd();

    [GeneratedRegex(@"^Answer: (-?[0-9]+)$")]
    private static partial Regex AnswerLine();

    public static TaskScore Score(string completion, TaskItem item)
    {
        var m = AnswerLine().Match(TrailingEnd().Replace(completion, "").TrimStart());
        bool correct = m.Success && m.Groups[1].Value == item.Answer.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return new TaskScore(correct, m.Success, correct ? 1 : m.Success ? 0.1 : 0, completion.Length);
    }

    public static TaskEvaluation Evaluate(IEnumerable<(TaskItem Item, string Completion)> results)
    {
        var scores = results.Select(r => Score(r.Completion, r.Item)).ToList();
        if (scores.Count == 0) return new TaskEvaluation(0, 0, 0, 0, 0);
        return new TaskEvaluation(scores.Count, scores.Average(s => s.Correct ? 1.0 : 0), scores.Average(s => s.FormatOk ? 1.0 : 0),
            scores.Average(s => s.Reward), scores.Average(s => (double)s.Length));
    }

    /// <summary>TRL SFT data: {"messages": [user, assistant]} or {"prompt", "completion"} per line.</summary>
    public static void ToSftJsonl(IEnumerable<TaskItem> items, string path, bool conversational) =>
        WriteLines(path, items.Select(i => conversational
            ? new JsonObject
            {
                ["messages"] = new JsonArray(
                    new JsonObject { ["role"] = "user", ["content"] = i.Prompt },
                    new JsonObject { ["role"] = "assistant", ["content"] = i.Completion }),
            }
            : new JsonObject { ["prompt"] = i.Prompt + "\n", ["completion"] = i.Completion }));

    /// <summary>{"text": "Q\nAnswer: N"} per line, for continued pretraining on the task family.</summary>
    public static void ToPretrainText(IEnumerable<TaskItem> items, string path) =>
        WriteLines(path, items.Select(i => new JsonObject { ["text"] = i.Prompt + "\n" + i.Completion }));

    private static void WriteLines(string path, IEnumerable<JsonObject> lines) => AtomicFile.Write(path, s =>
    {
        using var w = new StreamWriter(s, new System.Text.UTF8Encoding(false), leaveOpen: true);
        foreach (var line in lines) w.Write(line.ToJsonString(JsonLine) + "\n");
    });
}
