// The files of a model folder besides config.json and the weights that a written copy of the model
// (a merged model, a quantised checkpoint) carries over unchanged: tokenizer, chat template, generation config.
namespace Temper.Models;

public static class ModelFolderFiles
{
    public static readonly IReadOnlyList<string> Tokenizer = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json", "generation_config.json"];

    /// <summary>Copies those of them that sourceDir has into outDir (nothing when they are the same folder).</summary>
    public static void CopyTokenizer(string sourceDir, string outDir)
    {
        foreach (var f in Tokenizer)
        {
            string src = Path.Combine(sourceDir, f);
            if (File.Exists(src) && Path.GetFullPath(src) != Path.GetFullPath(Path.Combine(outDir, f))) File.Copy(src, Path.Combine(outDir, f), overwrite: true);
        }
    }

    /// <summary>Throws the one-line error for a model folder that is not one: a GGUF file (with the command that reads it), or nothing there.</summary>
    public static void RequireFolder(string dir)
    {
        if (System.IO.Directory.Exists(dir)) return;
        if (File.Exists(dir) && dir.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
            throw new Temper.Core.TemperException($"{dir}: a GGUF file; read it into a model folder first: temper gguf-import {dir} --out DIR");
        throw new Temper.Core.TemperException($"{dir}: model folder not found");
    }
}
