// The data files of the demo, all drawn from the addition task (train split; the held-out split is only
// ever evaluated):
//   equation.jsonl  {"text": "23+58=81"}                     pretraining text for the base (sums, no Q/A format)
//   sft.jsonl       {"prompt": "What is 23+58?\n", "completion": "Answer: 81"}
//   dpo.jsonl       {"prompt": ..., "chosen": "Answer: 81", "rejected": one of the off-format answers}
//   grpo.jsonl      {"prompt": ..., "answer": 81}          prompts for GRPO's "addition" reward
// Rejected answers cycle through the forms a model half-way between the base and the task gives: the
// base's equation habit ("23+58=81"), a bare number ("81") and a chatty line ("Answer: 81, since 23+58=81").
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

    public static void WriteEquationText(IEnumerable<TaskItem> items, string path) =>
        Write(path, items.Select(i => new JsonObject { ["text"] = Equation(i) }));

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
                _ => $"{i.Completion}, since {Equation(i)}",
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
