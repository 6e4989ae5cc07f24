// The special tokens tokenizer.json's post_processor puts around one encoded text (what HF's tokenizer(text), with
// add_special_tokens=True, adds): TemplateProcessing's "single" template (SpecialToken pieces before and after the
// Sequence A piece, each mapped to its ids through "special_tokens"), BertProcessing's and RobertaProcessing's
// cls ... sep, and a Sequence of processors (the template among ByteLevel steps, which add no tokens). Other
// processors (ByteLevel alone) add nothing.
using System.Text.Json;
using static Temper.Models.Text.JsonFields;

namespace Temper.Models.Text;

/// <summary>Ids before and after a single text's own ids.</summary>
internal sealed record SpecialTokenTemplate(IReadOnlyList<int> Prefix, IReadOnlyList<int> Suffix)
{
    public static readonly SpecialTokenTemplate None = new([], []);
}

internal static class PostProcessorReader
{
    public static SpecialTokenTemplate Read(JsonElement? processor)
    {
        if (processor is not { } p) return SpecialTokenTemplate.None;
        switch (TypeOf(p, "post_processor"))
        {
            case "Sequence":
                var found = Items(p, "processors").Select(x => Read(x)).Where(t => t.Prefix.Count + t.Suffix.Count > 0).ToList();
                if (found.Count > 1) throw new NotSupportedException("a post_processor Sequence with more than one token-adding step");
                return found.FirstOrDefault() ?? SpecialTokenTemplate.None;
            case "TemplateProcessing":
                return Template(p);
            case "BertProcessing" or "RobertaProcessing":
                return new([PairId(p, "cls")], [PairId(p, "sep")]);
            default:
                return SpecialTokenTemplate.None;
        }
    }

    private static SpecialTokenTemplate Template(JsonElement p)
    {
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (var piece in Items(p, "single"))
        {
            if (Optional(piece, "Sequence") != null) { seenSequence = true; continue; }
            var special = Optional(piece, "SpecialToken") ?? throw new InvalidDataException("a post_processor template piece is neither Sequence nor SpecialToken");
            string name = Str(special, "id") ?? throw new InvalidDataException("a post_processor SpecialToken has no 'id'");
            var entry = Optional(p, "special_tokens") is { } map && Optional(map, name) is { } e ? e
                : throw new InvalidDataException($"post_processor special token '{name}' is not in its special_tokens");
            (seenSequence ? suffix : prefix).AddRange(Items(entry, "ids").Select(i => i.GetInt32()));
        }
        return new(prefix, suffix);
    }

    // BertProcessing's "cls": ["[CLS]", 101].
    private static int PairId(JsonElement p, string name) =>
        Optional(p, name) is { ValueKind: JsonValueKind.Array } a && a.GetArrayLength() == 2 && a[1].TryGetInt32(out int id)
            ? id : throw new InvalidDataException($"post_processor '{name}' must be [token, id]");
}
