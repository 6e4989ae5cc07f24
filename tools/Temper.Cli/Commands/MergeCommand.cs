// `temper merge --model DIR --adapter DIR --out DIR`: merges a PEFT LoRA adapter into the base weights
// and writes a full Hugging Face model folder (config.json, model.safetensors, tokenizer files).
using System.CommandLine;
using Temper.Models;
using Temper.Training.Runs;

namespace Temper.Cli.Commands;

internal static class MergeCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = new Option<string>("--adapter") { Description = "PEFT LoRA adapter folder to merge", Required = true };
        var output = new Option<string>("--out") { Description = "Folder for the merged model", Required = true };
        var threads = CliOptions.Threads();
        var cmd = new Command("merge", "Merge a LoRA adapter into the base and export a full model folder") { model, adapter, output, threads };
        cmd.SetGuardedAction(p =>
        {
            var be = CliOptions.Backend(p, p.GetValue(threads));
            using var lm = LanguageModel.Load(p.GetValue(model)!, be, p.GetValue(adapter), mergeAdapter: true, weightDType: CliOptions.WeightDType(p));
            ModelExport.Save(p.GetValue(output)!, lm, be);
            Console.WriteLine($"merged {p.GetValue(adapter)} into {p.GetValue(model)}; wrote {p.GetValue(output)}");
            return 0;
        });
        return cmd;
    }
}
