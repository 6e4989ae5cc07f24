// One base model and its adapters behind one serving engine, as the HTTP server and the IChatClient
// see it: the model ids a request may name (the base's names, as vLLM's --served-model-name gives them, the first
// the one answers report; then each adapter's), the default seed of requests that give none (vLLM's --seed), prompt encoding (text,
// or chat messages and tools through the model's chat template), the EOS ids completions stop at, the
// parsers of chat answers (reasoning, tool calls) and the JSON constraints of structured output over its vocabulary.
// Adapters load and unload at run time (vLLM's runtime LoRA updating): LoadAdapter reads a PEFT folder
// and hands it to the engine, which adds it between steps; UnloadAdapter has the engine remove it.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Models.Constrained;
using Temper.Models.Text;
using Temper.Serving.Lora;
using Temper.Serving.Scheduling;

namespace Temper.Serving.Http;

/// <summary>A request named a model this server does not serve (HTTP 404).</summary>
public sealed class UnknownModelException(string model, IEnumerable<string> known)
    : TemperException($"model '{model}' does not exist; this server has {string.Join(", ", known.Select(k => $"'{k}'"))}");

/// <summary>An unload named an adapter this server does not hold (HTTP 404, as vLLM answers).</summary>
public sealed class UnknownAdapterException(string name) : TemperException($"The lora adapter '{name}' cannot be found.");

public sealed class ServedModel : IDisposable
{
    private readonly LanguageModel _lm;
    private readonly AdapterStack _adapters;
    private readonly ConstraintCache _constraints;

    /// <summary>Loads DIR on the backend with the named adapter folders (name -> folder) and starts the engine; the base
    /// answers to <paramref name="names"/> (default: its folder's name). A max model length (ServingOptions.MaxSequenceLength)
    /// beyond the model's positions or the KV pool is refused.</summary>
    public ServedModel(LanguageModel lm, IReadOnlyList<(string Name, string Dir)> adapters, ServingOptions options, IReadOnlyList<string>? names = null)
    {
        _lm = lm;
        Tokenizer = lm.RequireTokenizer();
        Template = lm.Template;
        BaseNames = names is { Count: > 0 } ? names : [Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(lm.Directory)))];
        if (BaseNames.FirstOrDefault(n => n.Length == 0) != null) throw new TemperException("--served-model-name: a name must not be empty");
        if (BaseNames.GroupBy(n => n).FirstOrDefault(g => g.Count() > 1) is { } twice) throw new TemperException($"--served-model-name: '{twice.Key}' is given twice");
        CheckMaxModelLength(lm, options);
        if (adapters.FirstOrDefault(a => BaseNames.Contains(a.Name)) is { Name: not null } taken) throw new TemperException($"--adapter {taken.Name}: the name is the base model's");
        _adapters = new AdapterStack(lm.Weights, lm.Decoder.Backend);
        try
        {
            foreach (var (n, dir) in adapters)
            {
                var adapter = LoraAdapter.Load(dir);
                try
                {
                    _adapters.Add(n, adapter);
                }
                catch
                {
                    adapter.Dispose();
                    throw;
                }
            }
        }
        catch
        {
            _adapters.Dispose();    // the adapters added so far with it
            throw;
        }
        EosIds = lm.EosIds();
        GenerationDefaults = lm.Generation;
        _constraints = new ConstraintCache(() => TokenVocabulary.From(Tokenizer, EosIds));
        Engine = new ServingEngine(lm.Decoder, options, _adapters, ids => Tokenizer.Decode(ids, skipSpecialTokens: true));
        Engine.Start();
    }

    /// <summary>The name answers report for the base (the first of BaseNames).</summary>
    public string BaseName => BaseNames[0];
    /// <summary>The names a request may give for the base (vLLM's --served-model-name).</summary>
    public IReadOnlyList<string> BaseNames { get; }
    /// <summary>The seed of sampled requests that give none (vLLM's --seed), so a sampled run repeats; null: a random one each.</summary>
    public long? DefaultSeed { get; init; }
    /// <summary>Splits chat answers into reasoning_content and content (temper serve --reasoning-parser); null: all content.</summary>
    public ReasoningParser? Reasoning { get; init; }

    /// <summary>The token that ends the reasoning parser's thinking (its end tag as one token of the vocabulary), after which a
    /// JSON constraint applies (SamplingOptions.ConstraintAfter); null without a parser or when the tag is not one token.</summary>
    public int? ReasoningEnd => Reasoning != null ? Tokenizer.TokenToId(Reasoning.End) : null;
    /// <summary>Finds tool calls in chat answers for tool_choice "auto" (temper serve --enable-auto-tool-choice
    /// --tool-call-parser); null: requests with tools and tool_choice "auto" are refused.</summary>
    public ToolCallParser? ToolCalls
    {
        get => _toolCalls;
        init
        {
            _toolCalls = value;
            if (value?.Marker is not string marker) return;
            if (Tokenizer.TokenToId(marker) is not int id)
            {
                Dispose(); // the engine started in the constructor
                throw new TemperException($"--tool-call-parser {value.Name}: the model's tokenizer has no {marker} token");
            }
            ToolCallKeep = [id];
        }
    }
    private readonly ToolCallParser? _toolCalls;

    /// <summary>The special tokens an answer whose tool calls are parsed is decoded with (the parser's marker); null: none.</summary>
    public IReadOnlyCollection<int>? ToolCallKeep { get; private init; }
    public ServingEngine Engine { get; }
    public HfTokenizer Tokenizer { get; }
    public ChatTemplate? Template { get; }
    public IReadOnlyList<int> EosIds { get; }
    /// <summary>The model's generation_config.json, whose sampling fields and max_new_tokens are the defaults of requests that
    /// leave them out (vLLM's --generation-config auto); null (--generation-config vllm): the OpenAI defaults.</summary>
    public GenerationConfig? GenerationDefaults { get; init; }
    public IReadOnlyList<string> ModelIds => [.. BaseNames, .. Engine.AdapterNames];

    /// <summary>The adapter a model id selects (null: the base, by any of its names); unknown ids throw UnknownModelException.</summary>
    public string? AdapterFor(string? model)
    {
        if (model == null || BaseNames.Contains(model)) return null;
        var ids = ModelIds;
        if (ids.Contains(model)) return model;
        throw new UnknownModelException(model, ids);
    }

    /// <summary>
    /// Loads the PEFT LoRA folder <paramref name="dir"/> as adapter <paramref name="name"/> while serving; a taken
    /// name, a missing folder or one that is no LoRA adapter for this base throws TemperException (nothing changes).
    /// </summary>
    public void LoadAdapter(string name, string dir)
    {
        if (name.Length == 0) throw new TemperException("'lora_name' must not be empty");
        if (BaseNames.Contains(name)) throw new TemperException($"'{name}' is the base model's name");
        if (Engine.AdapterNames.Contains(name)) throw new TemperException($"The lora adapter '{name}' has already been loaded.");
        if (!Directory.Exists(dir)) throw new TemperException($"lora_path '{dir}': folder not found");
        LoraAdapter adapter;
        try
        {
            adapter = LoraAdapter.Load(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or System.Text.Json.JsonException or ArgumentException)
        {
            throw new TemperException($"lora_path '{dir}': not a readable LoRA adapter: {e.Message}");
        }
        try
        {
            Engine.AddAdapter(name, adapter);
        }
        catch
        {
            adapter.Dispose();
            throw;
        }
    }

    /// <summary>Unloads adapter <paramref name="name"/>; requests still running on it end with an error. Unknown: UnknownAdapterException.</summary>
    public void UnloadAdapter(string name)
    {
        if (!Engine.AdapterNames.Contains(name)) throw new UnknownAdapterException(name);
        try
        {
            Engine.RemoveAdapter(name);
        }
        catch (TemperException) when (!Engine.AdapterNames.Contains(name))
        {
            throw new UnknownAdapterException(name);  // a concurrent unload took it first
        }
    }

    // vLLM's --max-model-len: refused at startup above the model's max_position_embeddings (vLLM's rule) or the positions the
    // KV pool holds (where vLLM says the KV cache cannot hold it), and above a sliding window, which the paged cache does not slide.
    private static void CheckMaxModelLength(LanguageModel lm, ServingOptions options)
    {
        if (options.MaxSequenceLength is not int len) return;
        string cfg = Path.Combine(lm.Directory, "config.json");
        if (len < 1) throw new TemperException($"--max-model-len must be >= 1 (got {len})");
        if (len > lm.Config.MaxPositions)
            throw new TemperException($"--max-model-len {len} is greater than the model's max_position_embeddings {lm.Config.MaxPositions} ({cfg})");
        if (lm.Config.SlidingWindow is int w && len > w)
            throw new TemperException($"--max-model-len {len} is greater than the model's sliding_window {w} ({cfg}), which the paged KV cache does not slide");
        int pool = options.Blocks * options.BlockSize;
        if (len > pool)
            throw new TemperException($"--max-model-len {len} is more than the KV cache holds: {pool} positions ({options.Blocks} blocks of {options.BlockSize}); raise --kv-blocks or lower --max-model-len");
    }

    /// <summary>The ids of the conversation (and tools) rendered by the chat template (default: with the generation prompt).</summary>
    public IReadOnlyList<int> EncodeChat(JsonArray messages, ChatPromptOptions? options = null, JsonArray? tools = null)
    {
        var template = Template ?? throw new TemperException($"{_lm.Directory}: the model has no chat template; use /v1/completions");
        return Tokenizer.Encode(ChatPrompt.Render(template, messages, options ?? new ChatPromptOptions(), tools));
    }

    public IReadOnlyList<int> Encode(string text) => Tokenizer.Encode(text);

    /// <summary>Structured output's json_object constraint over this model's vocabulary (one, shared by every request).</summary>
    public JsonConstraint JsonObjectConstraint => _constraints.JsonObject;

    /// <summary>The constraint of a JSON schema's text (compiled once per distinct text; a schema it does not take throws TemperException).</summary>
    public JsonConstraint SchemaConstraint(string schemaJson) => _constraints.Schema(schemaJson);

    /// <summary>Sampling options constrained as a request asks: to its response format's constraint, or to a forced tool
    /// call's schema (asking for both is the TemperException <paramref name="conflict"/>); under a reasoning parser the
    /// constraint waits for the end of the thinking.</summary>
    internal SamplingOptions Constrain(SamplingOptions sampling, JsonConstraint? format, ForcedTools? forced, string conflict)
    {
        var constraint = format;
        if (forced != null)
        {
            if (constraint != null) throw new TemperException(conflict);
            try { constraint = SchemaConstraint(forced.Schema); }
            catch (TemperException e) { throw new TemperException($"'tool_choice': the forced call's schema: {e.Message}"); }
        }
        return constraint == null ? sampling : sampling with { Constraint = constraint, ConstraintAfter = ReasoningEnd };
    }

    public void Dispose()
    {
        Engine.Dispose();
        _adapters.Dispose();
    }
}
