// `temper task-data --form statements|base-text|sft|messages|dpo|grpo [--split train|held-out|all]
//  [--min A --max B] --count N --seed S --out FILE`: writes the addition task's data in the form a verb
// reads (the demo's files, and the statements its base model was pretrained on). Operands default to the
// demo's range.
using System.CommandLine;
using Temper.Core;
using Temper.Training.Demo;
using Temper.Training.Tasks;

namespace Temper.Cli.Commands;

internal static class TaskDataCommand
{
    public static Command Create()
    {
        var form = new Option<string>("--form") { Description = "statements ({\"text\": \"23+58=81\"} in six surface forms, taken in turn), base-text (demo/base's pretraining text: the statements and two forms with the task's words), sft, messages, dpo or grpo", Required = true };
        var split = new Option<string>("--split") { Description = "train, held-out or all (both, in proportion)", DefaultValueFactory = _ => "train" };
        var count = new Option<int>("--count") { Description = "Items to draw (with replacement)", DefaultValueFactory = _ => 1000 };
        var seed = new Option<int>("--seed") { Description = "Seed of the draw", DefaultValueFactory = _ => 1 };
        var min = new Option<int>("--min") { Description = "Smallest operand", DefaultValueFactory = _ => DemoSettings.OperandMin };
        var max = new Option<int>("--max") { Description = "Largest operand", DefaultValueFactory = _ => DemoSettings.OperandMax };
        var output = new Option<string>("--out") { Description = "JSONL file to write", Required = true };
        var cmd = new Command("task-data", "Write the synthetic addition task's data as JSONL") { form, split, min, max, count, seed, output };
        cmd.SetGuardedAction(p =>
        {
            var task = new AdditionTask(p.GetValue(min), p.GetValue(max));
            IReadOnlyList<TaskItem> items = p.GetValue(split) switch
            {
                "train" => task.Train(p.GetValue(count), (ulong)p.GetValue(seed)),
                "held-out" => task.HeldOut(p.GetValue(count), (ulong)p.GetValue(seed)),
                // both splits in proportion (held-out last; trainers shuffle): pretraining text for the base
                "all" => [.. task.Train(p.GetValue(count) - (int)(p.GetValue(count) * task.HeldOutFraction), (ulong)p.GetValue(seed)),
                          .. task.HeldOut((int)(p.GetValue(count) * task.HeldOutFraction), (ulong)p.GetValue(seed) + 1)],
                var s => throw new TemperException($"--split must be train, held-out or all, not '{s}'"),
            };
            string path = p.GetValue(output)!;
            switch (p.GetValue(form))
            {
                case "statements": AdditionTask.ToPretrainText(items, path); break;
                case "base-text": DemoData.WriteBaseText(items, path); break;
                case "sft": DemoData.WriteSft(items, path); break;
                case "messages": AdditionTask.ToSftJsonl(items, path, conversational: true); break;
                case "dpo": DemoData.WriteDpo(items, path); break;
                case "grpo": DemoData.WriteGrpo(items, path); break;
                case var f: throw new TemperException($"--form must be statements, base-text, sft, messages, dpo or grpo, not '{f}'");
            }
            Console.WriteLine($"wrote {items.Count} {p.GetValue(form)} lines to {path}");
            return 0;
        });
        return cmd;
    }
}
