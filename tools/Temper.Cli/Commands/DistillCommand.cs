// `temper distill --teacher DIR --model STUDENT --data FILE.jsonl --out DIR [--mode sequence|logits]
//  [--kl forward|reverse] [--temperature T] [--sample-temperature S] [sft flags]`:
// sequence mode: the teacher answers the prompts, the student is SFT-ed on the answers; logits mode: the
// student matches the teacher's token distributions (forward or reverse KL at temperature T, times T^2)
// on the completion tokens of SFT-form data, or of the teacher's answers when the file holds prompts only.
using System.CommandLine;
using Temper.Core;
using Temper.Models;
using Temper.Training.Distill;

namespace Temper.Cli.Commands;

internal static class DistillCommand
{
    public static Command Create()
    {
        var flags = new TrainingFlags(2e-4f);
        var teacher = new Option<string>("--teacher") { Description = "Teacher model folder (same tokenizer as the student)", Required = true };
        var mode = new Option<string>("--mode") { Description = "sequence (SFT on the teacher's answers) or logits (match its token distributions)", DefaultValueFactory = _ => "sequence" };
        var kl = new Option<string>("--kl") { Description = "logits mode: forward KL(teacher||student) or reverse KL(student||teacher)", DefaultValueFactory = _ => "forward" };
        var temperature = new Option<float>("--temperature") { Description = "logits mode: softmax temperature of both models (the loss is scaled by T^2)", DefaultValueFactory = _ => 1f };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest teacher answer", DefaultValueFactory = _ => 64 };
        var sampleTemperature = new Option<float?>("--sample-temperature") { Description = "Sample the teacher's answers at this temperature (default greedy)" };
        var cmd = new Command("distill", "Distillation: SFT on the teacher's answers (sequence) or match its token distributions (logits)") { teacher, mode, kl, temperature, maxNew, sampleTemperature };
        flags.AddTo(cmd);
        cmd.SetGuardedAction(p =>
        {
            var o = flags.Read(p);
            var sampling = p.GetValue(sampleTemperature) is float t ? new SamplingOptions { Greedy = false, Temperature = t, Seed = (ulong)o.Seed } : new SamplingOptions();
            var d = new DistillOptions(p.GetValue(teacher)!, o.DataPath, p.GetValue(maxNew), sampling);
            var be = CliOptions.Backend(p, o.Threads);
            switch (p.GetValue(mode))
            {
                case "sequence":
                    var seq = new SequenceDistiller(o, d, be);
                    return TrainingFlags.RunWithProgress("distill", o.OutDir, (s, w) => { seq.OnStep = s; seq.OnWarning = w; }, seq.Run);
                case "logits":
                    var logits = new LogitDistiller(o, d, new LogitDistillOptions(LogitDistillOptions.ParseKl(p.GetValue(kl)!), p.GetValue(temperature)), be);
                    return TrainingFlags.RunWithProgress("distill", o.OutDir, (s, w) => { logits.OnStep = s; logits.OnWarning = w; }, logits.Run);
                default:
                    throw new TemperException($"--mode must be sequence or logits, not '{p.GetValue(mode)}'");
            }
        });
        return cmd;
    }
}
