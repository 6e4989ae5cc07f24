// `temper gguf --model DIR [--adapter DIR ...] [--weights W,...] --out FILE.gguf [--outtype auto|f32|f16|bf16|q8_0] [--name NAME]`:
// writes the model, with the adapters merged as `temper merge` merges them (a bitsandbytes 4-bit base dequantised
// first), as one GGUF file for llama.cpp, Ollama and LM Studio (GgufExport: llama.cpp's tensor names, permutations,
// hyperparameters and tokenizer, as convert_hf_to_gguf.py writes them; --outtype as its flag of that name).
// `temper gguf-import FILE.gguf --out DIR [--dtype auto|f32|f16|bf16]`: the reverse (GgufImport): a GGUF file as a
// Hugging Face folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json, chat_template.jinja)
// that every other verb takes as --model; quantised blocks are decoded to f32 (auto) or the --dtype given.
using System.CommandLine;
using Spectre.Console;
using Temper.Core;
using Temper.Models;

namespace Temper.Cli.Commands;

internal static class GgufCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapters = new Option<string[]>("--adapter") { Description = "PEFT LoRA or IA3 adapter folder merged first (repeatable, as in temper merge)" };
        var weights = new Option<string?>("--weights") { Description = "Comma-separated weight per adapter (default 1 each)" };
        var output = new Option<string>("--out") { Description = "The .gguf file to write", Required = true };
        var outType = new Option<string>("--outtype")
        {
            Description = "Type of the weight matrices: auto (as the embedding is stored), f32, f16, bf16 or q8_0 (ggml's 8-bit blocks of 32); norms, biases and routers stay f32",
            DefaultValueFactory = _ => "auto",
        };
        outType.AcceptOnlyFromAmong([.. GgufExport.OutTypes]);
        var name = new Option<string?>("--name") { Description = "general.name (default: the model folder's name)" };
        var adapterOnly = new Option<bool>("--adapter-only") { Description = "Write the one --adapter as a GGUF LoRA (llama.cpp's --lora, Ollama's ADAPTER) for the base's GGUF, instead of the merged model; --outtype f32 (default here), f16 or bf16" };
        var threads = CliOptions.Threads();
        var cmd = new Command("gguf", "Write the model (adapters merged) as a GGUF file for llama.cpp, Ollama and LM Studio") { model, adapters, weights, output, outType, name, adapterOnly, threads };
        cmd.SetGuardedAction(p =>
        {
            var dirs = p.GetValue(adapters) ?? [];
            var w = MergeCommand.Weights(p.GetValue(weights), dirs.Length);
            string path = p.GetValue(output)!;
            if (Directory.Exists(path)) throw new TemperException($"--out {path} is a folder; give the .gguf file's path");
            if (p.GetValue(adapterOnly)) return SaveAdapter(p.GetValue(model)!, dirs, p.GetValue(weights), path, p.GetValue(outType)!, p.GetValue(name));
            GgufExport.Summary? s = null;
            MergeCommand.LoadMerged(p, p.GetValue(model)!, dirs, w, p.GetValue(threads),
                (lm, be) => WithProgress("writing " + Path.GetFileName(path), progress => s = GgufExport.Save(path, lm, be, p.GetValue(outType)!, p.GetValue(name), progress)));
            Console.WriteLine($"wrote {path}: {s!.Architecture}, {s.OutType}, {s.Tensors} tensors, {s.Bytes / 1048576.0:F1} MiB{(dirs.Length > 0 ? $" ({string.Join(", ", dirs)} merged)" : "")}");
            return 0;
        });
        return cmd;
    }

    // A tensor-by-tensor progress bar on a terminal (nothing when output is redirected).
    private static void WithProgress(string label, Action<Action<int, int>?> run)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            run(null);
            return;
        }
        AnsiConsole.Progress().AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask(label, maxValue: 1);
                run((done, total) => { task.MaxValue = total; task.Value = done; });
            });
    }

    // --adapter-only: one LoRA adapter, unmerged, at weight 1 (llama.cpp takes a scale per adapter at run time).
    private static int SaveAdapter(string model, string[] dirs, string? weights, string path, string outType, string? name)
    {
        if (dirs.Length != 1 || weights != null) throw new TemperException("--adapter-only writes exactly one --adapter (without --weights: llama.cpp scales adapters at run time)");
        if (PeftConfigFile.TypeOf(dirs[0]) == PeftConfigFile.Ia3) throw new TemperException($"{dirs[0]}: an (IA)^3 adapter has no GGUF LoRA form; merge it (leave out --adapter-only)");
        var cfg = ModelConfig.Load(model);
        using var adapter = LoraAdapter.Load(dirs[0], allowDora: true, embeddingCopies: true);
        var s = GgufLoraExport.Save(path, cfg, adapter, outType == "auto" ? "f32" : outType, name);
        Console.WriteLine($"wrote {path}: a {s.Architecture} LoRA of {s.Modules} modules, alpha {s.Alpha}, {s.Bytes / 1048576.0:F2} MiB");
        return 0;
    }

    public static Command CreateImport()
    {
        var file = new Argument<string>("file") { Description = "The .gguf file to read" };
        var output = new Option<string>("--out") { Description = "Folder for the Hugging Face model", Required = true };
        var dtype = new Option<string>("--dtype")
        {
            Description = "Type of the weight matrices written: auto (f16/bf16 when every matrix is stored so, else f32: quantised blocks decoded exactly), f32, f16 or bf16",
            DefaultValueFactory = _ => "auto",
        };
        dtype.AcceptOnlyFromAmong([.. GgufImport.DTypes]);
        var cmd = new Command("gguf-import", "Read a GGUF file (llama.cpp, Ollama) into a Hugging Face model folder") { file, output, dtype };
        cmd.SetGuardedAction(p =>
        {
            GgufImport.Summary? s = null;
            WithProgress("reading " + Path.GetFileName(p.GetValue(file)!), progress => s = GgufImport.Save(p.GetValue(file)!, p.GetValue(output)!, p.GetValue(dtype)!, progress));
            Console.WriteLine($"wrote {p.GetValue(output)}: {s!.ModelType}, {s.Tensors} tensors in {s.DType}, {s.Bytes / 1048576.0:F1} MiB");
            return 0;
        });
        return cmd;
    }
}
