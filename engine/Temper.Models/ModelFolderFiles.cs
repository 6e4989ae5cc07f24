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
}
