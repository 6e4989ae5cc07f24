// Preference data in TRL's forms, tokenized exactly as SFT's prompt/completion form (the completion is
// what rendering prompt + completion adds after the prompt with the generation prompt):
//   paired (DPO, ORPO):  {"prompt": ..., "chosen": ..., "rejected": ...}
//   unpaired (KTO):      {"prompt": ..., "completion": ..., "label": true|false}
// prompt/chosen/rejected/completion are all text or all message lists. Each example keeps its raw
// prompt and completion so KTO can tokenize mismatched pairs (prompt i with completion i-1).
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Training.Data;

public sealed record PreferencePair(SftExample Chosen, SftExample Rejected, int SourceLine);

public sealed record UnpairedExample(SftExample Example, bool Desirable, JsonNode Prompt, JsonNode Completion, int SourceLine);

public sealed class PreferenceDataset
{
    private readonly SftDataset _tokenizer;

    private PreferenceDataset(string path, SftDataset tokenizer, string sha)
    {
        Path = path;
        _tokenizer = tokenizer;
        Sha256 = sha;
    }

    public string Path { get; }
    public string Sha256 { get; }
    public IReadOnlyList<PreferencePair> Pairs { get; private set; } = [];
    public IReadOnlyList<UnpairedExample> Unpaired { get; private set; } = [];
    public int LineCount { get; private set; }
    public int SkippedBadLines { get; private set; }
    public int DroppedCount { get; private set; }

    /// <summary>Reads paired ({prompt, chosen, rejected}) or unpaired ({prompt, completion, label}) lines.</summary>
    public static PreferenceDataset Load(string path, HfTokenizer tok, ChatTemplate? tpl, bool unpaired, int? maxLength = null, bool skipBadLines = false)
    {
        if (!File.Exists(path)) throw new TemperException($"{path}: data file not found");
        var bytes = File.ReadAllBytes(path);
        var ds = new PreferenceDataset(path, SftDataset.ForObjects(path, tok, tpl), Convert.ToHexStringLower(SHA256.HashData(bytes)));
        var pairs = new List<PreferencePair>();
        var singles = new List<UnpairedExample>();
        var lines = System.Text.Encoding.UTF8.GetString(bytes).Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            int line = i + 1;
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            ds.LineCount++;
            try
            {
                var o = Parse(lines[i].TrimStart('\uFEFF'), path, line);
                if (unpaired)
                {
                    var label = o["label"] is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False
                        ? v.GetValue<bool>() : throw new TemperException($"{path}:{line}: \"label\" must be true or false");
                    var (p, c) = (Need(o, "prompt", path, line), Need(o, "completion", path, line));
                    var ex = ds.Example(p, c, line);
                    if (maxLength is int m && ex.Length > m) { ds.DroppedCount++; continue; }
                    singles.Add(new UnpairedExample(ex, label, p, c, line));
                }
                else
                {
                    var p = Need(o, "prompt", path, line);
                    var chosen = ds.Example(p, Need(o, "chosen", path, line), line);
                    var rejected = ds.Example(p, Need(o, "rejected", path, line), line);
                    if (chosen.Ids.AsSpan().SequenceEqual(rejected.Ids)) throw new TemperException($"{path}:{line}: chosen and rejected are identical, so the pair teaches nothing");
                    if (maxLength is int m && Math.Max(chosen.Length, rejected.Length) > m) { ds.DroppedCount++; continue; }
                    pairs.Add(new PreferencePair(chosen, rejected, line));
                }
            }
            catch (TemperException) when (skipBadLines)
            {
                ds.SkippedBadLines++;
            }
        }
        ds.Pairs = pairs;
        ds.Unpaired = singles;
        if (pairs.Count + singles.Count == 0) throw new TemperException($"{path}: no usable {(unpaired ? "prompt/completion/label" : "prompt/chosen/rejected")} examples");
        return ds;
    }

    /// <summary>Tokenizes a prompt with a completion (as the SFT prompt/completion form does).</summary>
    public SftExample Example(JsonNode prompt, JsonNode completion, int line)
    {
        var obj = new JsonObject { ["prompt"] = prompt.DeepClone(), ["completion"] = completion.DeepClone() };
        var (ids, labels) = _tokenizer.TokenizeObject(obj, line);
        return new SftExample(ids, labels, line);
    }

    private static JsonObject Parse(string text, string path, int line)
    {
        try
        {
            return JsonNode.Parse(text) as JsonObject ?? throw new TemperException($"{path}:{line}: not a JSON object");
        }
        catch (JsonException e)
        {
            throw new TemperException($"{path}:{line}: not valid JSON: {e.Message.Split('\n')[0]}");
        }
    }

    private static JsonNode Need(JsonObject o, string key, string path, int line) =>
        o[key] ?? throw new TemperException($"{path}:{line}: missing field \"{key}\" (found: {string.Join(", ", o.Select(kv => kv.Key))})");
}
