// `temper merge --model DIR --adapter DIR [--adapter DIR ...] [--weights W,...] --out DIR`: merges PEFT LoRA
// adapters into the base weights (W += sum_i w_i s_i B_i A_i, each in f32 and stored back in W's dtype; one
// adapter at weight 1 is PEFT's merge_and_unload) and writes a full Hugging Face model folder (config.json,
// model.safetensors, tokenizer files).
// `temper combine --adapter DIR --adapter DIR [...] [--weights W,...] --out DIR`: one PEFT adapter whose delta is
// that same weighted sum, as PEFT's add_weighted_adapter(combination_type="cat") makes it (AdapterCombination).
using System.CommandLine;
using Temper.Core;
using Temper.Models;
using Temper.Training.Lora;
using Temper.Training.Runs;

namespace Temper.Cli.Commands;

internal static class MergeCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapters = new Option<string[]>("--adapter") { Description = "PEFT LoRA adapter folder to merge (repeatable: each added with its weight)", Required = true };
        var weights = new Option<string?>("--weights") { Description = "Comma-separated weight per adapter (default 1 each)" };
        var output = new Option<string>("--out") { Description = "Folder for the merged model", Required = true };
        var threads = CliOptions.Threads();
        var cmd = new Command("merge", "Merge LoRA adapters into the base and export a full model folder") { model, adapters, weights, output, threads };
        cmd.SetGuardedAction(p =>
        {
            var dirs = p.GetValue(adapters)!;
            var w = Weights(p.GetValue(weights), dirs.Length);
            var be = CliOptions.Backend(p, p.GetValue(threads));
            var loaded = dirs.Select(d => LoraAdapter.Load(d, allowDora: true)).ToList();
            try
            {
                using var lm = LanguageModel.Load(p.GetValue(model)!, be, weightDType: CliOptions.WeightDType(p));
                for (int i = 0; i < loaded.Count; i++) loaded[i].Merge(lm.Weights, be, w[i]);
                ModelExport.Save(p.GetValue(output)!, lm, be);
            }
            finally
            {
                foreach (var a in loaded) a.Dispose();
            }
            Console.WriteLine($"merged {string.Join(", ", dirs.Select((d, i) => w[i] == 1 ? d : $"{d} x {w[i]}"))} into {p.GetValue(model)}; wrote {p.GetValue(output)}");
            return 0;
        });
        return cmd;
    }

    public static Command CreateCombine()
    {
        var adapters = new Option<string[]>("--adapter") { Description = "PEFT LoRA adapter folder (repeat: at least two, of one base)", Required = true };
        var weights = new Option<string?>("--weights") { Description = "Comma-separated weight per adapter (default 1 each)" };
        var output = new Option<string>("--out") { Description = "Folder for the combined adapter", Required = true };
        var cmd = new Command("combine", "Combine LoRA adapters into one PEFT adapter (PEFT's add_weighted_adapter, combination_type cat)") { adapters, weights, output };
        cmd.SetGuardedAction(p =>
        {
            var dirs = p.GetValue(adapters)!;
            var w = Weights(p.GetValue(weights), dirs.Length);
            var loaded = dirs.Select(d => LoraAdapter.Load(d)).ToList();
            try
            {
                var cfg = AdapterCombination.Cat([.. loaded.Select((a, i) => (a, w[i]))], p.GetValue(output)!, BaseModel(dirs[0]));
                Console.WriteLine($"combined {string.Join(", ", dirs)} (rank {cfg.Rank}) into {p.GetValue(output)}");
            }
            finally
            {
                foreach (var a in loaded) a.Dispose();
            }
            return 0;
        });
        return cmd;
    }

    private static double[] Weights(string? text, int count)
    {
        if (text == null) return Enumerable.Repeat(1.0, count).ToArray();
        var parts = text.Split(',');
        if (parts.Length != count) throw new TemperException($"--weights has {parts.Length} values for {count} adapters");
        return parts.Select(x => double.TryParse(x, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v) && double.IsFinite(v)
            ? v : throw new TemperException($"--weights: '{x}' is not a number")).ToArray();
    }

    // The first adapter's base_model_name_or_path, which the combination keeps.
    private static string BaseModel(string dir)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")));
        return node?["base_model_name_or_path"]?.GetValue<string>() ?? "";
    }
}
