// `temper chat --model DIR [--qlora]`: an interactive conversation that keeps its history and renders it with
// the model's chat template (or the one --chat-template gives, as vLLM's flag) each turn (with --chat-template-kwargs'
// variables, e.g. Qwen3's enable_thinking).
// Empty line or /exit ends it; /reset clears the history. The speculative flags (SpeculativeFlags.cs) decode each
// answer speculatively, the draft model loaded once for the whole conversation.
using System.CommandLine;
using System.Text.Json.Nodes;
using Temper.Models;
using Temper.Models.Text;

namespace Temper.Cli.Commands;

internal static class ChatCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapter = CliOptions.Adapter();
        var threads = CliOptions.Threads();
        var qlora = CliOptions.QLora();
        var system = new Option<string?>("--system") { Description = "System prompt" };
        var kwargs = CliOptions.ChatTemplateKwargs();
        var chatTemplate = CliOptions.ChatTemplate();
        var flags = new GenerateCommand.SamplingFlags();
        var speculative = new SpeculativeFlags();
        var cmd = new Command("chat", "Chat with a model interactively") { model, adapter, threads, qlora, system, kwargs, chatTemplate };
        flags.AddTo(cmd);
        speculative.AddTo(cmd);
        cmd.SetGuardedAction(p =>
        {
            var chatOptions = new ChatPromptOptions { TemplateKwargs = CliOptions.TemplateKwargs(p, kwargs) }; // refused before the model loads
            speculative.Check(p); // so are bad speculative flags
            var template = CliOptions.ChatTemplateOverride(p, chatTemplate, model); // and a template that does not parse
            using var lm = CliOptions.LoadModel(p, model, adapter, threads, qlora);
            if (template != null) lm.Template = template;
            var tok = lm.RequireTokenizer();
            var tpl = lm.RequireTemplate();
            var (spec, draft) = speculative.Read(p, lm);
            using var ownedDraft = draft;
            var opts = flags.Read(p, lm) with { Speculative = spec };
            var gen = new Generator(lm.Decoder, ids => tok.Decode(ids, skipSpecialTokens: true));
            var history = new JsonArray();
            if (p.GetValue(system) is string sys) history.Add(new JsonObject { ["role"] = "system", ["content"] = sys });
            Console.Error.WriteLine("temper chat: type a message; empty line or /exit quits, /reset clears.");
            while (true)
            {
                Console.Error.Write("> ");
                string? line = Console.ReadLine();
                if (line == null || line.Trim() is "" or "/exit") return 0;
                if (line.Trim() == "/reset") { history.Clear(); continue; }
                history.Add(new JsonObject { ["role"] = "user", ["content"] = line });
                var ids = tok.Encode(ChatPrompt.Render(tpl, history, chatOptions));
                var stream = new StreamingText(tok);
                var r = gen.Generate([ids], opts, (_, id) => Console.Out.Write(stream.Push(id)))[0];
                Console.Out.WriteLine();
                history.Add(new JsonObject { ["role"] = "assistant", ["content"] = tok.Decode(r.GeneratedIds, skipSpecialTokens: true).Trim() });
            }
        });
        return cmd;
    }
}
