// `temper distill --teacher DIR --model STUDENT --data PROMPTS.jsonl --out DIR [sft flags]`:
// sequence-level distillation: the teacher answers the prompts, the student is SFT-ed on the answers.
using System.CommandLine;
using Temper.Models;
using Temper.Training.Distill;

namespace Temper.Cli.Commands;

internal static class DistillCommand
{
    public static Command Create()
    {
        var flags = new TrainingFlags(2e-4f);
        var teacher = new Option<string>("--teacher") { Description = "Teacher model folder (same tokenizer as the student)", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest teacher answer", DefaultValueFactory = _ => 64 };
        var temperature = new Option<float?>("--temperature") { Description = "Sample the teacher at this temperature (default greedy)" };
        var cmd = new Command("distill", "Sequence-level distillation: SFT the student on the teacher's answers") { teacher, maxNew, temperature };
        flags.AddTo(cmd);
        cmd.SetGuardedAction(p =>
        {
            var o = flags.Read(p);
            var sampling = p.GetValue(temperature) is float t ? new SamplingOptions { Greedy = false, Temperature = t, Seed = (ulong)o.Seed } : new SamplingOptions();
            var d = new SequenceDistiller(o, new DistillOptions(p.GetValue(teacher)!, o.DataPath, p.GetValue(maxNew), sampling), CliOptions.Backend(p, o.Threads));
            return TrainingFlags.RunWithProgress("distill", o.OutDir, (s, w) => { d.OnStep = s; d.OnWarning = w; }, d.Run);
        });
        return cmd;
    }
}
