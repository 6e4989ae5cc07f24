// `temper template --model DIR --messages FILE.json [--add-generation-prompt | --continue-final-message]
// [--chat-template-kwargs JSON] [--chat-template FILE|TEMPLATE]`: prints exactly the rendered chat text, nothing added
// (transformers' apply_chat_template), with the model's template or the one --chat-template gives (vLLM's flag).
// FILE.json is a list of messages, or {"messages": [...], "tools": [...]}.
using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Cli.Commands;

internal static class TemplateCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var messages = new Option<string>("--messages") { Description = "JSON file: a list of {role, content} messages", Required = true };
        var genPrompt = new Option<bool>("--add-generation-prompt") { Description = "End with the assistant turn's opening" };
        var continueFinal = new Option<bool>("--continue-final-message") { Description = "End inside the last message (cut after its content), for the model to continue it" };
        var kwargs = CliOptions.ChatTemplateKwargs();
        var chatTemplate = CliOptions.ChatTemplate();
        var cmd = new Command("template", "Render a conversation with the model's chat template") { model, messages, genPrompt, continueFinal, kwargs, chatTemplate };
        cmd.SetGuardedAction(p =>
        {
            string dir = p.GetValue(model)!;
            var tpl = ChatTemplate.LoadFromModelDir(dir, p.GetValue(chatTemplate)) ?? throw new TemperException($"{dir}: no chat template (chat_template.jinja or tokenizer_config.json 'chat_template')");
            var (msgs, tools) = ReadConversation(p.GetValue(messages)!);
            var o = new ChatPromptOptions { AddGenerationPrompt = p.GetValue(genPrompt), ContinueFinalMessage = p.GetValue(continueFinal), TemplateKwargs = CliOptions.TemplateKwargs(p, kwargs) };
            Console.Out.Write(ChatPrompt.Render(tpl, msgs, o, tools));
            Console.Out.Flush();
            return 0;
        });
        return cmd;
    }

    public static (JsonArray Messages, JsonArray? Tools) ReadConversation(string path)
    {
        if (!File.Exists(path)) throw new TemperException($"{path}: file not found");
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new TemperException($"{path}: malformed JSON at line {e.LineNumber + 1}"); }
        JsonArray msgs = node switch
        {
            JsonArray a => a,
            JsonObject o when o["messages"] is JsonArray a => a,
            _ => throw new TemperException($"{path}: expected a list of messages or an object with 'messages'"),
        };
        for (int i = 0; i < msgs.Count; i++)
            if (msgs[i] is not JsonObject m || m["role"] is not JsonValue)
                throw new TemperException($"{path}: message {i} has no 'role'");
        var tools = node is JsonObject obj ? obj["tools"] as JsonArray : null;
        return (msgs, tools);
    }
}
