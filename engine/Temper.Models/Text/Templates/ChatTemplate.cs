// A model's chat template: the Jinja program that turns a list of messages (and tools) into the
// prompt text, rendered exactly as transformers' apply_chat_template renders it (trim_blocks,
// lstrip_blocks, loop controls, tojson, raise_exception, strftime_now). Loaded from a model folder's
// chat_template.jinja, else from tokenizer_config.json's "chat_template", or from a file or inline text that
// replaces it (vLLM's --chat-template).
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models.Text;

public sealed class ChatTemplate
{
    private static readonly string[] SpecialTokenNames =
        ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

    private readonly List<Stmt> _body;
    private readonly TemplateScopes _scopes;
    private readonly Dictionary<string, string> _specialTokens;

    /// <summary>Where the template came from (a file path, or the name given to Parse); errors start with it.</summary>
    public string Origin { get; }

    /// <summary>The template's Jinja source.</summary>
    public string Source { get; }

    /// <summary>bos_token, eos_token, ... as tokenizer_config.json gives them; the template sees them as variables.</summary>
    public IReadOnlyDictionary<string, string> SpecialTokens => _specialTokens;

    private ChatTemplate(string source, string origin, List<Stmt> body, Dictionary<string, string> specialTokens)
    {
        Source = source;
        Origin = origin;
        _body = body;
        _scopes = TemplateScopes.Analyze(body);
        _specialTokens = specialTokens;
    }

    /// <summary>Parses a template; a syntax error is a TemperException naming origin and line.</summary>
    public static ChatTemplate Parse(string source, string? origin = null) => Parse(source, origin, []);

    private static ChatTemplate Parse(string source, string? origin, Dictionary<string, string> specialTokens)
    {
        origin ??= "<chat template>";
        try
        {
            return new ChatTemplate(source, origin, TemplateParser.Parse(source), specialTokens);
        }
        catch (TemplateSyntaxError e)
        {
            throw new TemperException($"{origin}:{e.Line}: {e.Message}", e);
        }
    }

    /// <summary>
    /// The template of a model folder: chat_template.jinja, else tokenizer_config.json's "chat_template"
    /// (a string, or a list of {name, template} of which "default" is taken), else chat_template.json's;
    /// null when the folder has none. Special tokens come from tokenizer_config.json. <paramref name="chatTemplate"/>
    /// (vLLM's --chat-template) replaces the folder's: a file's path, or the template itself when no such file exists
    /// and it holds "{%" or "{{" (its \n, \t, \r and \\ escapes decoded, as vLLM decodes an inline template).
    /// </summary>
    public static ChatTemplate? LoadFromModelDir(string dir, string? chatTemplate = null)
    {
        if (!Directory.Exists(dir)) throw new TemperException($"{dir}: model folder not found");
        var configPath = Path.Combine(dir, "tokenizer_config.json");
        var config = File.Exists(configPath) ? ReadJsonObject(configPath) : null;
        var specialTokens = config == null ? [] : ReadSpecialTokens(config);

        if (chatTemplate != null)
        {
            if (File.Exists(chatTemplate)) return Parse(File.ReadAllText(chatTemplate), chatTemplate, specialTokens);
            if (!chatTemplate.Contains("{%", StringComparison.Ordinal) && !chatTemplate.Contains("{{", StringComparison.Ordinal))
                throw new TemperException($"--chat-template '{chatTemplate}': no such file, and no inline template either (it has no '{{{{' or '{{%')");
            return Parse(DecodeEscapes(chatTemplate), "--chat-template", specialTokens);
        }

        var jinjaPath = Path.Combine(dir, "chat_template.jinja");
        if (File.Exists(jinjaPath)) return Parse(File.ReadAllText(jinjaPath), jinjaPath, specialTokens);

        if (config?["chat_template"] is { } fromConfig)
            return Parse(TemplateText(fromConfig, configPath), configPath, specialTokens);

        var processorPath = Path.Combine(dir, "chat_template.json");
        if (File.Exists(processorPath) && ReadJsonObject(processorPath)["chat_template"] is { } fromProcessor)
            return Parse(TemplateText(fromProcessor, processorPath), processorPath, specialTokens);
        return null;
    }

    /// <summary>
    /// Renders the conversation. The template sees messages, tools (none when null), documents (none),
    /// add_generation_prompt, the special tokens, and every entry of <paramref name="extra"/> (which
    /// wins over the others), as transformers passes them.
    /// </summary>
    public string Render(JsonArray messages, bool addGenerationPrompt = false, JsonArray? tools = null,
        IReadOnlyDictionary<string, JsonNode?>? extra = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var context = new Dictionary<string, TemplateValue>();
        TemplateGlobals.AddTo(context, () => DateTime.Now);
        foreach (var (name, value) in _specialTokens) context[name] = TemplateValue.String(value);
        context["messages"] = TemplateValue.FromJson(messages);
        context["tools"] = tools == null ? TemplateValue.None : TemplateValue.FromJson(tools);
        context["documents"] = TemplateValue.None;
        context["add_generation_prompt"] = TemplateValue.Bool(addGenerationPrompt);
        if (extra != null)
            foreach (var (name, value) in extra) context[name] = TemplateValue.FromJson(value);

        var interpreter = new TemplateInterpreter(_scopes);
        try
        {
            return interpreter.Render(_body, context);
        }
        catch (TemplateRaisedError e)
        {
            throw new TemperException($"{Origin}: {e.Message}", e);
        }
        catch (TemplateError e)
        {
            throw new TemperException($"{Origin}:{interpreter.Line}: {e.Message}", e);
        }
        catch (Exception e) when (e is InvalidCastException or ArgumentException or FormatException
                                      or OverflowException or InvalidOperationException or IndexOutOfRangeException)
        {
            throw new TemperException($"{Origin}:{interpreter.Line}: {e.Message}", e);
        }
    }

    // A template given inline on a command line: \n, \t, \r and \\ become the characters they name (vLLM decodes the
    // flag's value with Python's unicode_escape); other backslashes stay.
    private static string DecodeEscapes(string s)
    {
        var sb = new System.Text.StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            char? decoded = s[i] == '\\' && i + 1 < s.Length ? s[i + 1] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '\\' => '\\', _ => null } : null;
            if (decoded is char c)
            {
                sb.Append(c);
                i++;
            }
            else sb.Append(s[i]);
        }
        return sb.ToString();
    }

    private static JsonObject ReadJsonObject(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new TemperException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new TemperException($"{path}: invalid JSON: {e.Message}", e);
        }
    }

    private static Dictionary<string, string> ReadSpecialTokens(JsonObject config)
    {
        var tokens = new Dictionary<string, string>();
        foreach (var name in SpecialTokenNames)
        {
            var text = config[name] switch
            {
                JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
                JsonObject o when o["content"] is JsonValue c && c.GetValueKind() == JsonValueKind.String => c.GetValue<string>(),
                _ => null,
            };
            if (text != null) tokens[name] = text;
        }
        return tokens;
    }

    /// <summary>"chat_template" is a string, or a list of {"name", "template"} where "default" is used.</summary>
    private static string TemplateText(JsonNode node, string path)
    {
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.String) return v.GetValue<string>();
        if (node is JsonArray list)
        {
            var names = new List<string>();
            foreach (var entry in list)
            {
                var name = entry?["name"]?.GetValue<string>();
                if (name == null) continue;
                if (name == "default" && entry!["template"] is JsonValue t && t.GetValueKind() == JsonValueKind.String)
                    return t.GetValue<string>();
                names.Add(name);
            }
            throw new TemperException($"{path}: chat_template has no \"default\" entry (it has {string.Join(", ", names.Select(n => $"\"{n}\""))})");
        }
        throw new TemperException($"{path}: chat_template must be a string or a list of {{name, template}}");
    }
}
