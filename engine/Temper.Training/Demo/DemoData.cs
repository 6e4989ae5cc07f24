// The data files of the demo, all drawn from the addition task (train split; the held-out split is only
// ever evaluated):
//   base text       {"text": ...}                            pretraining text for demo/base (sums, no Q/A format)
//   sft.jsonl       {"prompt": "What is 23+58?\n", "completion": "Answer: 81"}
//   dpo.jsonl       {"prompt": ..., "chosen": "Answer: 81", "rejected": an off-format or a wrong answer}
//   grpo.jsonl      {"prompt": ..., "answer": 81}          prompts for GRPO's "addition" reward
// The base text states each sum in one of eight forms, taken in turn: the six statements of
// AdditionTask.Statement ("23+58=81", ...) and two that use the words of the task, "What is 23+58?\nIt is
// 81. Answer: 81" and "Answer: 81 = 23+58", so that every token of the format (the newline included) is
// one the base has seen, and predicted with confidence: pretraining with weight decay leaves the LM-head
// row of a token no larger than its most confident prediction needed, and a LoRA (which leaves the LM
// head alone) cannot make the token likelier than that row allows.
// Rejected answers cycle through what a model half-way between the base and the task gives: the base's
// equation habit ("23+58=81"), a bare number ("81") and a near miss in the right format ("Answer: 80" or
// "Answer: 91": the ones or the tens digit off by one).
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Training.Tasks;

namespace Temper.Training.Demo;

public static class DemoData
{
    private static readonly JsonSerializerOptions JsonLine = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string Equation(TaskItem i) => Operands(i) + "=" + i.Answer;

    /// <summary>Base pretraining text: item n in form n mod 8 (see the header).</summary>
    public static void WriteBaseText(IEnumerable<TaskItem> items, string path) =>
        Write(path, items.Select((i, n) => new JsonObject
        {
            ["text"] = (n % 8) switch
            {
                6 => $"{i.Prompt}\nIt is {i.Answer}. {i.Completion}",
                7 => $"{i.Completion} = {Operands(i)}",
                var f => AdditionTask.Statement(i, f),
            },
        }));

    public static void WriteSft(IEnumerable<TaskItem> items, string path) => AdditionTask.ToSftJsonl(items, path, conversational: false);

    public static void WriteDpo(IEnumerable<TaskItem> items, string path) =>
        Write(path, items.Select((i, n) => new JsonObject
        {
            ["prompt"] = i.Prompt + "\n",
            ["chosen"] = i.Completion,
            ["rejected"] = (n % 3) switch
            {
                0 => Equation(i),
                1 => i.Answer.ToString(System.Globalization.CultureInfo.InvariantCulture),
                _ => $"Answer: {i.Answer + (n % 2 == 0 ? 10 : -1)}",
            },
        }));

    public static void WriteGrpo(IEnumerable<TaskItem> items, string path) =>
        Write(path, items.Select(i => new JsonObject { ["prompt"] = i.Prompt + "\n", ["answer"] = i.Answer }));

    // "What is 23+58?" -> "23+58"
    private static string Operands(TaskItem i) => i.Prompt["What is ".Length..^1];

    private static void Write(string path, IEnumerable<JsonObject> lines)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        AtomicFile.Write(path, s =>
        {
            using var w = new StreamWriter(s, new System.Text.UTF8Encoding(false), leaveOpen: true);
            foreach (var line in lines) w.Write(line.ToJsonString(JsonLine) + "\n");
        });
    }
}
