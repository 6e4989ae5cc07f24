// Reads an OpenAI-style request body (/v1/completions or /v1/chat/completions) into serving requests:
// model, prompt or messages, max_tokens (max_completion_tokens), temperature (0 = greedy), top_p,
// frequency_penalty and presence_penalty (over the output tokens, [-2, 2]), logit_bias ({"token id":
// bias in [-100, 100]}), n, seed, stop, logprobs (an int for completions; a bool plus top_logprobs for
// chat), stream and stream_options.include_usage; and vLLM's sampling extras top_k (0 or -1 = off),
// min_p and repetition_penalty; for chat, vLLM's add_generation_prompt, continue_final_message and
// chat_template_kwargs (template variables, e.g. Qwen3's enable_thinking), ignore_eos, stop_token_ids and min_tokens
// (EOS and stop ids held back, stop strings not checked, until that many tokens). Sampling
// fields and max_tokens a request leaves out come from the model's generation_config.json (ServedModel.GenerationDefaults),
// as vLLM's --generation-config auto takes them, and a seed left out is the server's --seed (RequestSampling); logprobs
// above the engine's MaxLogprobs (vLLM's --max-logprobs) are refused naming the field. Completions also take a batch of prompts (a list of strings or of
// token-id lists: one serving request each, choice index = prompt x n + choice) and echo (the prompt
// before the completion, and with logprobs each prompt token scored given those before it; max_tokens
// may then be 0: how lm-evaluation-harness scores text). Chat takes tools, tool_choice and parallel_tool_calls
// (ToolRequest); response_format json_object / json_schema and vLLM's guided_json constrain the output
// (ResponseFormat). Anything malformed is a TemperException naming the field (HTTP 400), and so is a field
// whose meaning is not implemented (functions, suffix, best_of > 1); an unknown model is an
// UnknownModelException (HTTP 404).
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Models.Text;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Http;

/// <summary>A parsed request: one serving request per prompt (chat: one), and with echo each prompt's text; Model is the name
/// answers report (an adapter's, or the base's first name whichever of its names the request gave, as vLLM's).</summary>
public sealed record OpenAiRequest(string Model, IReadOnlyList<ServingRequest> Servings, bool Stream, bool IncludeUsage, bool Logprobs, IReadOnlyList<string> Stops,
    IReadOnlyList<string>? Echoes = null)
{
    /// <summary>Chat with tools: whether and how answers are read as calls (auto: ServedModel.ToolCalls; forced: constrained JSON).</summary>
    internal ToolPlan Tools { get; init; } = ToolPlan.None;
    /// <summary>parallel_tool_calls false: only an answer's first call is kept.</summary>
    public bool ParallelToolCalls { get; init; } = true;

    public static OpenAiRequest Parse(JsonObject body, bool chat, ServedModel m)
    {
        string model = Str(body, "model") ?? throw new TemperException("'model' is required");
        Unsupported(body);
        string? adapter = m.AdapterFor(model);
        List<(IReadOnlyList<int> Ids, string? Text)> prompts;
        var plan = ToolPlan.None;
        if (chat) prompts = [(ChatIds(body, m, out plan), null)];
        else if (body["tools"] is JsonArray { Count: > 0 }) throw new TemperException("'tools' is a chat field; use /v1/chat/completions");
        else prompts = body["prompt"] switch
        {
            JsonValue v when v.GetValueKind() == JsonValueKind.String => [(m.Encode(v.GetValue<string>()), v.GetValue<string>())],
            JsonArray a when a.Count > 0 && a.All(IsNumber) => [(Ids(a), null)],
            JsonArray a when a.Count > 0 && a.All(x => x is JsonValue xv && xv.GetValueKind() == JsonValueKind.String) => [.. a.Select(x => (m.Encode(x!.GetValue<string>()), (string?)x.GetValue<string>()))],
            JsonArray a when a.Count > 0 && a.All(x => x is JsonArray ids && ids.Count > 0 && ids.All(IsNumber)) => [.. a.Select(x => (Ids((JsonArray)x!), (string?)null))],
            null => throw new TemperException("'prompt' is required"),
            _ => throw new TemperException("'prompt' must be a string, an array of token ids, or a non-empty list of either"),
        };
        var (sampling, maxTokens) = new RequestSampling // fields left out take generation_config.json's values, as vLLM's --generation-config auto
        {
            MaxTokens = Int(body, "max_completion_tokens") ?? Int(body, "max_tokens"), Temperature = Float(body, "temperature"), TopP = Float(body, "top_p"),
            TopK = Int(body, "top_k"), MinP = Float(body, "min_p"), RepetitionPenalty = Float(body, "repetition_penalty"),
            FrequencyPenalty = Float(body, "frequency_penalty"), PresencePenalty = Float(body, "presence_penalty"),
            Seed = body["seed"] is JsonValue sv && sv.GetValueKind() == JsonValueKind.Number ? sv.GetValue<long>() : null,
            LogitBias = LogitBias(body, m.Engine.Config.VocabSize),
        }.Resolve(m, unsetTemperature: 1f, unsetMaxTokens: chat ? 256 : 16);
        int n = Int(body, "n") ?? 1;
        if ((long)prompts.Count * Math.Max(1, n) > MaxChoices)
            throw new TemperException($"{prompts.Count} prompts x n {n} ask for more than {MaxChoices} choices in one request");
        var stops = body["stop"] switch
        {
            null => [],
            JsonValue v when v.GetValueKind() == JsonValueKind.Null => [],
            JsonValue v when v.GetValueKind() == JsonValueKind.String => [v.GetValue<string>()],
            JsonArray a when a.All(x => x is JsonValue xv && xv.GetValueKind() == JsonValueKind.String) => a.Select(x => x!.GetValue<string>()).ToArray(),
            _ => throw new TemperException("'stop' must be a string or an array of strings"),
        };
        if (stops.Any(s => s.Length == 0)) throw new TemperException("'stop' strings must not be empty");
        int topLogprobs = -1;
        if (chat)
        {
            if (Bool(body, "logprobs") == true) topLogprobs = Int(body, "top_logprobs") ?? 0;
            else if (body["top_logprobs"] != null) throw new TemperException("'top_logprobs' needs 'logprobs': true");
        }
        else if (Int(body, "logprobs") is int lp) topLogprobs = lp;
        if (topLogprobs > m.Engine.MaxLogprobs) // vLLM's --max-logprobs, and its words
            throw new TemperException($"'{(chat ? "top_logprobs" : "logprobs")}': requested sample logprobs of {topLogprobs}, which is greater than max allowed: {m.Engine.MaxLogprobs}");
        bool stream = Bool(body, "stream") ?? false;
        bool echo = !chat && (Bool(body, "echo") ?? false);
        if (echo && stream) throw new TemperException("'echo' is not supported with 'stream'");
        var echoes = echo ? prompts.Select(p => p.Text ?? m.Tokenizer.Decode(p.Ids.ToArray(), skipSpecialTokens: false)).ToArray() : null;
        bool usage = body["stream_options"] is JsonObject so && (Bool(so, "include_usage") ?? false);
        var serving = new ServingRequest
        {
            PromptIds = prompts[0].Ids, MaxNewTokens = maxTokens, N = n, Adapter = adapter, EosIds = [.. m.EosIds.Union(StopTokenIds(body, m.Engine.Config.VocabSize))],
            IgnoreEos = Bool(body, "ignore_eos") ?? false, StopStrings = stops, TopLogprobs = topLogprobs,
            PromptLogprobs = echo ? Math.Max(0, topLogprobs) : -1,
            Sampling = sampling,
        };
        int minTokens = Int(body, "min_tokens") ?? 0;
        if (minTokens < 0 || minTokens > maxTokens) throw new TemperException($"'min_tokens' must be in [0, max_tokens {maxTokens}] (got {minTokens})");
        if (minTokens > 0) serving = serving with { Sampling = serving.Sampling with { MinTokens = minTokens, EndIds = serving.IgnoreEos ? [] : serving.EosIds } };
        serving = serving with
        {
            Sampling = m.Constrain(serving.Sampling, ResponseFormat.Parse(body, m), plan.Forced, "give either 'response_format' or a 'tool_choice' that forces a call, not both"),
        };
        return new OpenAiRequest(adapter ?? m.BaseName, [.. prompts.Select(p => serving with { PromptIds = p.Ids })], stream, usage, topLogprobs >= 0, stops, echoes)
        {
            Tools = plan, ParallelToolCalls = Bool(body, "parallel_tool_calls") ?? true,
        };
    }

    /// <summary>The prompt ids of a chat request's messages and tools, rendered as its fields say; <paramref name="plan"/>:
    /// how its answers are read as tool calls.</summary>
    internal static IReadOnlyList<int> ChatIds(JsonObject body, ServedModel m, out ToolPlan plan)
    {
        if (body["messages"] is not JsonArray messages || messages.Count == 0) throw new TemperException("'messages' must be a non-empty array");
        foreach (var msg in messages)
            if (msg is not JsonObject o || Str(o, "role") == null) throw new TemperException("each message needs a 'role'");
        plan = ToolRequest.Plan(body, m.ToolCalls != null);
        return m.EncodeChat(Flatten(messages), ChatOptions(body), plan.Tools);
    }

    /// <summary>vLLM's chat rendering fields: add_generation_prompt (default true), continue_final_message and
    /// chat_template_kwargs (variables for the template, e.g. {"enable_thinking": false} for Qwen3).</summary>
    private static ChatPromptOptions ChatOptions(JsonObject body)
    {
        var kwargs = body["chat_template_kwargs"];
        var o = new ChatPromptOptions
        {
            AddGenerationPrompt = Bool(body, "add_generation_prompt") ?? true,
            ContinueFinalMessage = Bool(body, "continue_final_message") ?? false,
            TemplateKwargs = kwargs == null || kwargs.GetValueKind() == JsonValueKind.Null ? null : ChatPromptOptions.KwargsFrom(kwargs, "'chat_template_kwargs'"),
        };
        if (o.AddGenerationPrompt && o.ContinueFinalMessage)
            throw new TemperException("'continue_final_message' needs 'add_generation_prompt': false (both cannot be true)");
        return o;
    }

    // Fields whose meaning this server does not implement are refused rather than ignored, so a client never
    // takes a plain answer for a tool call or a fill-in-the-middle.
    // vLLM's stop_token_ids: more ids that end a choice as EOS does (finish_reason "stop"; the token is not in the text).
    private static IEnumerable<int> StopTokenIds(JsonObject body, int vocab) => body["stop_token_ids"] switch
    {
        null => [],
        JsonValue v when v.GetValueKind() == JsonValueKind.Null => [],
        JsonArray a when a.All(x => x is JsonValue xv && xv.TryGetValue<int>(out _)) => a.Select(x => x!.GetValue<int>() is int id && id >= 0 && id < vocab ? id
            : throw new TemperException($"'stop_token_ids' has {id}, not a token id of this model (0..{vocab - 1})")).ToArray(),
        _ => throw new TemperException("'stop_token_ids' must be an array of token ids"),
    };

    private static void Unsupported(JsonObject body)
    {
        if (body["functions"] is JsonArray { Count: > 0 }) throw new TemperException("'functions' (the deprecated form) is not supported by this server; use 'tools'");
        if (body["suffix"] is JsonValue sv && sv.GetValueKind() == JsonValueKind.String && sv.GetValue<string>().Length > 0)
            throw new TemperException("'suffix' (fill-in-the-middle) is not supported by this server");
        if (Int(body, "best_of") is > 1) throw new TemperException("'best_of' > 1 is not supported by this server; use 'n'");
    }

    /// <summary>Most choices (prompts x n) one request may ask for.</summary>
    public const int MaxChoices = 1024;

    private static bool IsNumber(JsonNode? x) => x is JsonValue v && v.GetValueKind() == JsonValueKind.Number;

    private static int[] Ids(JsonArray a)
    {
        try { return a.Select(x => x!.GetValue<int>()).ToArray(); }
        catch (Exception e) when (e is FormatException or InvalidOperationException) { throw new TemperException("'prompt' token ids must be integers"); }
    }

    /// <summary>logit_bias: an object of token ids (as strings, inside the vocabulary) to biases in [-100, 100]; null when absent.</summary>
    private static Dictionary<int, float>? LogitBias(JsonObject body, int vocab)
    {
        var node = body["logit_bias"];
        if (node == null || node.GetValueKind() == JsonValueKind.Null) return null;
        if (node is not JsonObject o) throw new TemperException("'logit_bias' must be an object of token ids to biases");
        var r = new Dictionary<int, float>();
        foreach (var (key, value) in o)
        {
            if (!int.TryParse(key, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id) || id >= vocab)
                throw new TemperException($"'logit_bias' key '{key}' is not a token id of the vocabulary (0..{vocab - 1})");
            float bias = Float(o, key) ?? throw new TemperException($"'logit_bias' of token {id} must be a number");
            if (!(bias >= -100 && bias <= 100)) throw new TemperException($"'logit_bias' of token {id} must be in [-100, 100] (got {bias})");
            r[id] = bias;
        }
        return r;
    }

    /// <summary>Messages whose content is an array of parts ({type: text, text}) become plain strings, which chat templates expect;
    /// an assistant message's tool call arguments (JSON text) become the objects templates render (as vLLM gives them).</summary>
    private static JsonArray Flatten(JsonArray messages)
    {
        var r = new JsonArray();
        foreach (var (msg, i) in messages.Cast<JsonObject>().Select((x, i) => (x, i)))
        {
            var copy = (JsonObject)msg.DeepClone();
            if (copy["content"] is JsonArray parts)
                copy["content"] = string.Concat(parts.Select(p => p is JsonObject po && Str(po, "type") == "text" ? Str(po, "text") ?? ""
                    : throw new TemperException("only text message parts are supported")));
            ToolRequest.ParseArguments(copy, $"messages[{i}]");
            r.Add(copy);
        }
        return r;
    }

    private static T? Get<T>(JsonObject o, string key, JsonValueKind kind, string what) where T : struct
    {
        var n = o[key];
        if (n == null || n.GetValueKind() == JsonValueKind.Null) return null;
        if (n.GetValueKind() != kind) throw new TemperException($"'{key}' must be {what}");
        try { return n.GetValue<T>(); }
        catch (FormatException) { throw new TemperException($"'{key}' must be {what}"); }
        catch (InvalidOperationException) { throw new TemperException($"'{key}' must be {what}"); }
    }

    private static int? Int(JsonObject o, string key) => Get<int>(o, key, JsonValueKind.Number, "an integer");
    private static float? Float(JsonObject o, string key) => Get<float>(o, key, JsonValueKind.Number, "a number");
    private static bool? Bool(JsonObject o, string key)
    {
        var n = o[key];
        return n?.GetValueKind() switch
        {
            null or JsonValueKind.Null => null,
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new TemperException($"'{key}' must be true or false"),
        };
    }

    private static string? Str(JsonObject o, string key)
    {
        var n = o[key];
        if (n == null || n.GetValueKind() == JsonValueKind.Null) return null;
        if (n.GetValueKind() != JsonValueKind.String) throw new TemperException($"'{key}' must be a string");
        return n.GetValue<string>();
    }
}
