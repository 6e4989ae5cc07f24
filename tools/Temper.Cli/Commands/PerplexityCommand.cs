// `temper perplexity --model DIR [--adapter DIR] [--qlora] --data FILE [--ctx N] [--stride S] [--batch-size B]
//  [--max-tokens N] [--json]`: the perplexity of a .txt text or a .jsonl file's "text" lines (joined with "\n\n")
// in strided windows, as llama-perplexity and transformers' "Perplexity of fixed-length models" guide report it
// (Temper.Models.Evaluation.Perplexity). A progress bar on an interactive terminal; --json prints one object
// {tokens, text_tokens, windows, nll, ppl, ppl_stderr, ctx, stride}.
using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using Spectre.Console;
using Temper.Models.Evaluation;

namespace Temper.Cli.Commands;

internal static class PerplexityCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = CliOptions.Adapter();
        var qlora = CliOptions.QLora();
        var threads = CliOptions.Threads();
        var data = new Option<string>("--data") { Description = "A .txt file (one text) or a .jsonl file of {\"text\": ...} lines (joined with a blank line between)", Required = true };
        var ctx = new Option<int?>("--ctx") { Description = "Window length in tokens (default: the model's max_position_embeddings, at most 2048)" };
        var stride = new Option<int?>("--stride") { Description = "Tokens between window starts, 1..ctx (default: ctx, disjoint windows); a smaller stride gives each scored token more context" };
        var batch = new Option<int>("--batch-size") { Description = "Windows run side by side in one pass", DefaultValueFactory = _ => 1 };
        var maxTokens = new Option<int?>("--max-tokens") { Description = "Keep only the first N tokens of the text (for quick runs)" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object: tokens, text_tokens, windows, nll, ppl, ppl_stderr, ctx, stride" };
        var cmd = new Command("perplexity", "Perplexity of a model on a text, in strided windows (llama-perplexity, transformers' guide)")
            { model, adapter, qlora, threads, data, ctx, stride, batch, maxTokens, json };
        cmd.SetGuardedAction(p =>
        {
            string path = p.GetValue(data)!;
            string text = PerplexityText.Read(path); // file errors before the model loads
            using var lm = CliOptions.LoadModel(p, model, adapter, threads, qlora);
            var ids = PerplexityText.Tokenize(path, text, lm.RequireTokenizer(), p.GetValue(maxTokens));
            int c = p.GetValue(ctx) ?? Math.Min(Perplexity.DefaultCtx(lm.Config), lm.Config.MaxPositions - lm.Weights.VirtualTokenCount);
            int s = p.GetValue(stride) ?? c;
            int b = p.GetValue(batch);
            PerplexityResult result;
            if (!p.GetValue(json) && AnsiConsole.Profile.Capabilities.Interactive)
            {
                PerplexityResult? done = null;
                AnsiConsole.Progress()
                    .AutoClear(true)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                    .Start(progressContext =>
                    {
                        var task = progressContext.AddTask("perplexity", maxValue: 1);
                        done = Perplexity.Evaluate(lm.Decoder, ids, c, s, b, pr =>
                        {
                            task.MaxValue = pr.Windows;
                            task.Value = pr.WindowsDone;
                            task.Description = $"perplexity window {pr.WindowsDone}/{pr.Windows} ppl {pr.RunningPpl:F4}";
                        });
                    });
                result = done!;
            }
            else result = Perplexity.Evaluate(lm.Decoder, ids, c, s, b);

            if (p.GetValue(json))
            {
                var o = new JsonObject
                {
                    ["tokens"] = result.Tokens,
                    ["text_tokens"] = ids.Length,
                    ["windows"] = result.Windows,
                    ["nll"] = result.Nll,
                    ["ppl"] = result.Ppl,
                    ["ppl_stderr"] = result.PplStderr,
                    ["ctx"] = result.Ctx,
                    ["stride"] = result.Stride,
                };
                Console.WriteLine(o.ToJsonString());
                return 0;
            }
            var inv = CultureInfo.InvariantCulture;
            string pm = result.PplStderr is double e ? string.Create(inv, $" +/- {e:F5}") : "";
            Console.WriteLine(string.Create(inv, $"PPL = {result.Ppl:F4}{pm}"));
            Console.WriteLine(string.Create(inv, $"mean NLL {result.Nll:F6} nats over {result.Tokens} tokens ({ids.Length} in the text), {result.Windows} windows of {result.Ctx}, stride {result.Stride}"));
            return 0;
        });
        return cmd;
    }
}
