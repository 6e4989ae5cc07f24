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
// user and an assistant turn. Pretraining text states the sum in other surface forms, taken in turn:
// "23+58=81", "23+58 = 81", "23 + 58 = 81", "23+58 is 81", "23+58 makes 81", "23+58 equals 81". A model
// pretrained on them knows sums but not the question/answer format, which a later SFT (e.g. LoRA) must
// teach it. Several layouts, with the answer at different distances from the operands, make the tiny
// models of the learning tests learn sums in a way that the question/answer form can reuse; from the
// single form "23+58=81" a LoRA often had to learn the ones digit afresh.
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

    [GeneratedRegex(@"^What is (-?[0-9]+)\+(-?[0-9]+)\?$")]
    private static partial Regex Question();

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

    private static readonly string[] StatementForms =
        ["{0}+{1}={2}", "{0}+{1} = {2}", "{0} + {1} = {2}", "{0}+{1} is {2}", "{0}+{1} makes {2}", "{0}+{1} equals {2}"];

    /// <summary>How many surface forms <see cref="Statement"/> has.</summary>
    public static int StatementFormCount => StatementForms.Length;

    /// <summary>{"text": statement} per line, item i in form i mod <see cref="StatementFormCount"/>, for pretraining on the task family.</summary>
    public static void ToPretrainText(IEnumerable<TaskItem> items, string path) =>
        WriteLines(path, items.Select((item, i) => new JsonObject { ["text"] = Statement(item, i % StatementForms.Length) }));

    /// <summary>The item stated in surface form <paramref name="form"/>: 0 "23+58=81", 1 "23+58 = 81",
    /// 2 "23 + 58 = 81", 3 "23+58 is 81", 4 "23+58 makes 81", 5 "23+58 equals 81".</summary>
    public static string Statement(TaskItem item, int form = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(form);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(form, StatementForms.Length);
        var m = Question().Match(item.Prompt);
        if (!m.Success) throw new TemperException($"addition task: '{item.Prompt}' is not an addition question");
        return string.Format(System.Globalization.CultureInfo.InvariantCulture, StatementForms[form], m.Groups[1].Value, m.Groups[2].Value, item.Answer);
    }

    private static void WriteLines(string path, IEnumerable<JsonObject> lines) => AtomicFile.Write(path, s =>
    {
        using var w = new StreamWriter(s, new System.Text.UTF8Encoding(false), leaveOpen: true);
        foreach (var line in lines) w.Write(line.ToJsonString(JsonLine) + "\n");
    });
}
