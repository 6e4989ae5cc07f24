// `temper tokenize --model DIR --text TEXT [--json]`: ids without added special tokens, as one JSON
// array with --json, else a table of ids and pieces. DIR may hold only the tokenizer files.
using System.CommandLine;
using Spectre.Console;
using Temper.Models.Text;

namespace Temper.Cli.Commands;

internal static class TokenizeCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var text = new Option<string>("--text") { Description = "Text to tokenize", Required = true };
        var json = new Option<bool>("--json") { Description = "Print the ids as one JSON array" };
        var cmd = new Command("tokenize", "Tokenize text with a model's tokenizer.json") { model, text, json };
        cmd.SetGuardedAction(p =>
        {
            var tok = HfTokenizer.Load(p.GetValue(model)!);
            var ids = tok.Encode(p.GetValue(text)!);
            if (p.GetValue(json))
            {
                Console.WriteLine("[" + string.Join(",", ids) + "]");
                return 0;
            }
            var table = new Table().AddColumn("#").AddColumn("id").AddColumn("piece");
            for (int i = 0; i < ids.Count; i++)
                table.AddRow(i.ToString(), ids[i].ToString(), Markup.Escape(tok.TokenToString(ids[i])));
            AnsiConsole.Write(table);
            Console.WriteLine($"{ids.Count} tokens");
            return 0;
        });
        return cmd;
    }
}
