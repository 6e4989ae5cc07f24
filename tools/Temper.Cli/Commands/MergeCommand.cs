// `temper merge --model DIR --adapter DIR [--adapter DIR ...] [--weights W,...] --out DIR`: merges PEFT LoRA
// adapters into the base weights (W += sum_i w_i s_i B_i A_i, each in f32 and stored back in W's dtype; one
// adapter at weight 1 is PEFT's merge_and_unload) and writes a full Hugging Face model folder (config.json,
// model.safetensors, tokenizer files); with no --adapter it only dequantises a bitsandbytes 4-bit model. A bitsandbytes 4-bit base is dequantised first (its exact values, held in
// its compute dtype) and the merged model written dense, as unsloth's merged_16bit save does.
// `temper combine --adapter DIR --adapter DIR [...] [--weights W,...] [--combination-type T] [--density D]
// [--majority-sign-method total|frequency] [--svd-rank R] [--svd-clamp Q] [--seed S] --out DIR`: one PEFT adapter
// combined as PEFT's add_weighted_adapter(combination_type=T) combines them (AdapterCombination, whose header
// says what each type does and where PEFT surprises); the default, cat, has exactly that weighted sum as delta.
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
        var adapters = new Option<string[]>("--adapter") { Description = "PEFT LoRA or IA3 adapter folder to merge (repeatable: each added with its weight); none: a bitsandbytes 4-bit model is written dequantised" };
        var weights = new Option<string?>("--weights") { Description = "Comma-separated weight per adapter (default 1 each)" };
        var output = new Option<string>("--out") { Description = "Folder for the merged model", Required = true };
        var threads = CliOptions.Threads();
        var cmd = new Command("merge", "Merge LoRA adapters into the base and export a full model folder") { model, adapters, weights, output, threads };
        cmd.SetGuardedAction(p =>
        {
            var dirs = p.GetValue(adapters) ?? [];
            if (dirs.Length == 0 && ModelConfig.Load(p.GetValue(model)!).Bnb4Bit == null)
                throw new TemperException("--adapter is required (without one, merge only dequantises a bitsandbytes 4-bit model)");
            var w = Weights(p.GetValue(weights), dirs.Length);
            LoadMerged(p, p.GetValue(model)!, dirs, w, p.GetValue(threads), (lm, be) => ModelExport.Save(p.GetValue(output)!, lm, be));
            Console.WriteLine(dirs.Length == 0 ? $"dequantised {p.GetValue(model)}; wrote {p.GetValue(output)}"
                : $"merged {string.Join(", ", dirs.Select((d, i) => w[i] == 1 ? d : $"{d} x {w[i]}"))} into {p.GetValue(model)}; wrote {p.GetValue(output)}");
            return 0;
        });
        return cmd;
    }

    /// <summary>Loads the model dequantised with the adapters merged in (each at its weight) and hands it to use.</summary>
    internal static void LoadMerged(ParseResult p, string modelDir, string[] dirs, double[] w, int threads, Action<LanguageModel, IBackend> use)
    {
        var be = CliOptions.Backend(p, threads);
        var ia3 = dirs.Select((d, i) => PeftConfigFile.TypeOf(d) != PeftConfigFile.Ia3 ? null
            : w[i] == 1 ? Ia3Adapter.Load(d) : throw new TemperException($"{d}: an (IA)^3 adapter scales the weights; it merges with weight 1 only (got {w[i]})")).ToList();
        var loaded = dirs.Select((d, i) => ia3[i] != null ? null : LoraAdapter.Load(d, allowDora: true, embeddingCopies: true)).ToList();
        try
        {
            using var lm = LanguageModel.Load(modelDir, be, weightDType: CliOptions.WeightDType(p), dequantize: true);
            for (int i = 0; i < loaded.Count; i++)
                if (ia3[i] is { } scaling) scaling.Merge(lm.Weights, be);
                else loaded[i]!.Merge(lm.Weights, be, w[i]);
            use(lm, be);
        }
        finally
        {
            foreach (var a in loaded) a?.Dispose();
        }
    }

    public static Command CreateCombine()
    {
        var adapters = new Option<string[]>("--adapter") { Description = "PEFT LoRA adapter folder (repeat: at least two, of one base)", Required = true };
        var weights = new Option<string?>("--weights") { Description = "Comma-separated weight per adapter (default 1 each)" };
        var type = new Option<string>("--combination-type") { Description = "PEFT's combination_type: cat (default; delta = sum_i w_i s_i B_i A_i exactly, ranks add up), " +
            "linear, ties, dare_linear, dare_ties, magnitude_prune (adapters of one rank; A and B merged separately, sqrt|w s| on each, so linear's delta has PEFT's cross terms B_i A_j), " +
            "svd, ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune_svd (the deltas merged then truncated by SVD; as in PEFT 0.21: w s B A)", DefaultValueFactory = _ => "cat" };
        var density = new Option<double?>("--density") { Description = "Fraction of values kept, in (0, 1], for ties, dare_* and magnitude_prune (and their _svd forms); 1 prunes nothing" };
        var sign = new Option<string?>("--majority-sign-method") { Description = "ties and dare_ties: elect each value's sign by the sum of the values (total, default) or of their signs (frequency); as in PEFT the vote ignores the weights" };
        var svdRank = new Option<int?>("--svd-rank") { Description = "Rank of the _svd types' result (default: the largest adapter rank)" };
        var svdClamp = new Option<double?>("--svd-clamp") { Description = "_svd types: clamp A and B to +-the Q-quantile of their values (Q in [0, 1]; as in PEFT a Q under about 0.5 sets every value to that quantile, and the values depend on the singular vectors' signs, which torch and Temper choose differently)" };
        var seed = new Option<ulong?>("--seed") { Description = "dare types: seed of the random masks (Temper's SplitMix64, not torch's RNG: the same seed gives the same adapter everywhere; default 0)" };
        var output = new Option<string>("--out") { Description = "Folder for the combined adapter", Required = true };
        var cmd = new Command("combine", "Combine LoRA adapters into one PEFT adapter (PEFT's add_weighted_adapter: cat, linear, ties, dare_linear, dare_ties, magnitude_prune and the _svd forms)")
            { adapters, weights, type, density, sign, svdRank, svdClamp, seed, output };
        cmd.SetGuardedAction(p =>
        {
            var dirs = p.GetValue(adapters)!;
            var w = Weights(p.GetValue(weights), dirs.Length);
            var options = new CombinationOptions(p.GetValue(type)!)
            {
                Density = p.GetValue(density),
                MajoritySign = p.GetValue(sign) switch
                {
                    null => null,
                    "total" => MajoritySignMethod.Total,
                    "frequency" => MajoritySignMethod.Frequency,
                    var m => throw new TemperException($"--majority-sign-method must be total or frequency, not '{m}'"),
                },
                SvdRank = p.GetValue(svdRank),
                SvdClamp = p.GetValue(svdClamp),
                Seed = p.GetValue(seed),
            };
            var loaded = new List<LoraAdapter>();
            try
            {
                foreach (var d in dirs) loaded.Add(LoraAdapter.Load(d));
                var cfg = AdapterCombination.Combine([.. loaded.Select((a, i) => (a, w[i]))], p.GetValue(output)!, BaseModel(dirs[0]), options);
                Console.WriteLine($"combined {string.Join(", ", dirs)} ({(options.Type == "cat" ? "" : options.Type + ", ")}rank {cfg.Rank}) into {p.GetValue(output)}");
            }
            finally
            {
                foreach (var a in loaded) a.Dispose();
            }
            return 0;
        });
        return cmd;
    }

    internal static double[] Weights(string? text, int count)
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
