// A model folder's generation_config.json: the stop ids and sampling defaults its authors ship (e.g. Qwen2.5-Instruct:
// eos [151645, 151643], do_sample true, temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05), which
// transformers' generate() and vLLM (--generation-config auto) apply when the caller does not say otherwise.
// Read: eos_token_id (an id or a list), do_sample, temperature, top_p, top_k, min_p, repetition_penalty,
// max_new_tokens; every other field is ignored. A field of the wrong type, or out of range where it is used
// (the sampling fields only with do_sample true), is refused in one line naming the file and field. Defaults applies it to sampling options the caller left unset:
//   - do_sample true samples with its temperature / top_p / top_k / min_p, each unset one taking transformers'
//     default (1, 1, 50, off); do_sample false or absent decodes greedily (transformers' rule), and
//   - repetition_penalty applies either way.
// FieldsSet lists what the file sets, for the one line a CLI prints when the defaults change its behaviour.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models;

public sealed record GenerationConfig
{
    public const string FileName = "generation_config.json";

    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    public bool? DoSample { get; init; }
    public float? Temperature { get; init; }
    public float? TopP { get; init; }
    public int? TopK { get; init; }
    public float? MinP { get; init; }
    public float? RepetitionPenalty { get; init; }
    public int? MaxNewTokens { get; init; }

    /// <summary>DIR/generation_config.json, or null when the folder has none.</summary>
    public static GenerationConfig? Load(string dir)
    {
        string path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) return null;
        var info = new FileInfo(path);
        if (info.Length > 1 << 20) throw new TemperException($"{path}: {info.Length} bytes; a generation config is a small JSON object");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new TemperException($"{path}: not a JSON object");
        }
        catch (JsonException e)
        {
            throw new TemperException($"{path}: malformed JSON at line {e.LineNumber + 1}: {ModelConfig.FirstLine(e.Message)}");
        }
        var r = new ConfigReader(root, path);
        bool? doSample = r.OptBool("do_sample");
        // Sampling fields are checked only where they are used (do_sample true): files ship "temperature": 0.0 beside do_sample false.
        bool used = doSample == true;
        TemperException Bad(string key, string range, double v) => new($"{path}: field '{key}' must be {range} (got {v.ToString(CultureInfo.InvariantCulture)})");
        // Out of range and unused: left out (null), so no caller applies it.
        float? Sampling(string key, Func<double, bool> ok, string range) => r.OptDouble(key) is { } v ? (ok(v) ? (float)v : used ? throw Bad(key, range, v) : null) : null;
        int? topK = r.OptInt("top_k");
        if (topK < 0)
        {
            if (used) throw new TemperException($"{path}: field 'top_k' must be >= 0 (got {topK})");
            topK = null;
        }
        double? repetition = r.OptDouble("repetition_penalty");
        if (repetition is { } rp && !(rp > 0)) throw Bad("repetition_penalty", "> 0", rp);
        int? maxNew = r.OptInt("max_new_tokens");
        if (maxNew < 1) throw new TemperException($"{path}: field 'max_new_tokens' must be >= 1 (got {maxNew})");
        return new GenerationConfig
        {
            EosTokenIds = r.IntOrList("eos_token_id"),
            DoSample = doSample,
            Temperature = Sampling("temperature", v => v > 0, "> 0"),
            TopP = Sampling("top_p", v => v > 0 && v <= 1, "in (0, 1]"),
            TopK = topK,
            MinP = Sampling("min_p", v => v >= 0 && v <= 1, "in [0, 1]"),
            RepetitionPenalty = (float?)repetition,
            MaxNewTokens = maxNew,
        };
    }

    /// <summary>The sampling settings the file sets, as "name value" pairs (empty when it sets none).</summary>
    public IReadOnlyList<string> FieldsSet()
    {
        var r = new List<string>();
        void Add(string name, object? v) { if (v != null) r.Add(string.Create(CultureInfo.InvariantCulture, $"{name} {v}")); }
        Add("do_sample", DoSample?.ToString().ToLowerInvariant());
        Add("temperature", Temperature);
        Add("top_p", TopP);
        Add("top_k", TopK);
        Add("min_p", MinP);
        Add("repetition_penalty", RepetitionPenalty);
        return r;
    }

    /// <summary>
    /// Sampling options from the file for a caller that set none of its own: do_sample true gives sampling with the
    /// file's temperature, top_p, top_k and min_p (transformers' defaults 1, 1, 50, 0 for those it leaves out), else
    /// greedy; repetition_penalty either way. Seed and the OpenAI penalties come from <paramref name="start"/>.
    /// </summary>
    public SamplingOptions Defaults(SamplingOptions start)
    {
        var s = start with { RepetitionPenalty = RepetitionPenalty ?? start.RepetitionPenalty };
        if (DoSample != true) return s with { Greedy = true };
        return s with
        {
            Greedy = false,
            Temperature = Temperature ?? 1f,
            TopP = TopP ?? 1f,
            TopK = TopK ?? 50,
            MinP = MinP ?? 0f,
        };
    }
}
