// The tokenizer half of a GGUF file for a SentencePiece-style BPE tokenizer.json (Llama 2, Mistral 7B v0.1-v0.3,
// TinyLlama: model BPE with byte_fallback, '▁' for spaces), written as llama.cpp reads its SPM vocabulary:
// tokenizer.ggml.model "llama", pre "default", tokens by id (ids the tokenizer lacks as "[PAD<id>]", type unused),
// scores, token types (1 normal, 2 unknown for unk_token, 3 control for special added tokens, 4 user-defined for other
// added tokens, 5 unused, 6 byte for <0xNN>), add_space_prefix true, the special ids and add_bos/add_eos as the gpt2
// path writes them; no merges (llama.cpp's SPM tokenizer has none).
//
// Accepted pre-processing, SentencePiece's two spellings in tokenizer.json: pre_tokenizer Metaspace '▁' with
// prepend_scheme "first" or "always" and split false (no normalizer), or the older normalizer Sequence[Prepend '▁',
// Replace ' ' -> '▁'] with no pre_tokenizer. Anything else, ignore_merges, or a missing <0xNN> byte token is refused.
//
// Scores. llama.cpp's llm_tokenizer_spm (src/llama-vocab.cpp) splits text into UTF-8 chars and repeatedly joins the
// adjacent pair whose concatenation is a vocabulary token of the HIGHEST score (ties: the leftmost pair); what is
// left that is no token becomes <0xNN> bytes. transformers' BPE joins the listed merge of LOWEST rank (ties:
// leftmost). So a token one or more merges produce scores -(lowest such rank); single chars, bytes and added tokens
// (never the result of a join in either) score 0; a longer token no merge produces scores below every merge, so
// llama.cpp joins it last. The two then agree whenever every split t = a + b of a vocabulary token with a and b in
// the vocabulary is a merge, which transformers' SpmConverter writes (every such split, ordered by t's score);
// a tokenizer.json missing some would let llama.cpp join pairs transformers never does.
//
// Spaces: llama.cpp escapes ' ' to '▁' and, with add_space_prefix, puts a space before every text fragment that starts
// the input or follows a special (control, user-defined or unknown) token, even if it already starts with a space.
// The Prepend normalizer does exactly that (it prepends to each fragment between added tokens, whatever it starts
// with); Metaspace prepends only when the fragment does not already start with '▁', and "first" only at the start of
// the text. So with Metaspace, " x" tokenizes as '▁x' in transformers and '▁▁x' in llama.cpp, and with "first" (Mistral
// v0.3, Llama 2 with legacy=false) text right after <s> or </s> gets '▁' in llama.cpp only.
using System.Text.Json;
using Temper.Core;
using Temper.Core.Gguf;

namespace Temper.Models;

internal static class GgufSpmVocabulary
{
    private const char Metaspace = '\u2581';
    private enum TokenType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    public static void Add(GgufWriter g, ModelConfig cfg, GgufExport.Source source, JsonElement root, string path)
    {
        CheckPreprocessing(root, path);
        var model = root.GetProperty("model");
        if (model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True)
            throw new TemperException($"{path}: ignore_merges has no counterpart in llama.cpp's SentencePiece tokenizer");
        string? unk = model.TryGetProperty("unk_token", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString() : null;

        int v = cfg.VocabSize;
        var tokens = new string?[v];
        var types = new int[v];
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
        {
            int id = entry.Value.GetInt32();
            vocab[entry.Name] = id;
            var type = entry.Name == unk ? TokenType.Unknown : IsByteToken(entry.Name) ? TokenType.Byte : TokenType.Normal;
            GgufVocabulary.Place(tokens, types, id, entry.Name, (int)type, path);
        }
        for (int b = 0; b < 256; b++)
            if (!vocab.ContainsKey($"<0x{b:X2}>"))
                throw new TemperException($"{path}: byte token <0x{b:X2}> is missing; llama.cpp's SentencePiece tokenizer needs all 256 for its byte fallback");
        if (root.TryGetProperty("added_tokens", out var added))
            foreach (var a in added.EnumerateArray())
            {
                string content = a.GetProperty("content").GetString()!;
                bool special = a.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True;
                var type = content == unk ? TokenType.Unknown : special || GgufVocabulary.LooksSpecial(content) ? TokenType.Control : TokenType.UserDefined;
                GgufVocabulary.Place(tokens, types, a.GetProperty("id").GetInt32(), content, (int)type, path);
            }
        GgufVocabulary.FillUnused(tokens, types, path);

        g.Add("tokenizer.ggml.model", "llama");
        g.Add("tokenizer.ggml.pre", "default");
        g.Add("tokenizer.ggml.tokens", tokens!);
        g.Add("tokenizer.ggml.scores", Scores(tokens!, types, GgufVocabulary.Merges(model, path)));
        g.Add("tokenizer.ggml.token_type", types);
        g.Add("tokenizer.ggml.add_space_prefix", true);
        if (unk != null && vocab.TryGetValue(unk, out int unkId) && unkId < v) g.Add("tokenizer.ggml.unknown_token_id", (uint)unkId);
        GgufVocabulary.AddSpecials(g, cfg, source);
    }

    /// <summary>Each token's score as the header says: -(lowest rank of a merge producing it); 0 for single chars,
    /// bytes, added and unused tokens; -(merge count) for a longer normal token no merge produces.</summary>
    internal static float[] Scores(string[] tokens, int[] types, List<string> merges)
    {
        var rank = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int r = 0; r < merges.Count; r++)
            rank.TryAdd(merges[r].Replace(" ", ""), r); // "left right": both halves are free of spaces
        var scores = new float[tokens.Length];
        for (int id = 0; id < tokens.Length; id++)
            scores[id] = rank.TryGetValue(tokens[id], out int r) ? -r
                : types[id] == (int)TokenType.Normal && tokens[id].EnumerateRunes().Count() > 1 ? -merges.Count
                : 0f;
        return scores;
    }

    internal static bool IsByteToken(string s) =>
        s.Length == 6 && s.StartsWith("<0x", StringComparison.Ordinal) && s[5] == '>' && IsUpperHex(s[3]) && IsUpperHex(s[4]);

    private static bool IsUpperHex(char c) => c is >= '0' and <= '9' or >= 'A' and <= 'F';

    private static void CheckPreprocessing(JsonElement root, string path)
    {
        JsonElement? Step(string name) => root.TryGetProperty(name, out var e) && e.ValueKind != JsonValueKind.Null ? e : null;
        var normalizer = Step("normalizer");
        var pre = Step("pre_tokenizer");
        string Str(JsonElement e, string key) => e.TryGetProperty(key, out var x) && x.ValueKind == JsonValueKind.String ? x.GetString()! : "";
        bool metaspace = normalizer == null && pre is { } p && GgufVocabulary.Type(p) == "Metaspace"
            && (p.TryGetProperty("replacement", out _) ? Str(p, "replacement") == Metaspace.ToString() : true)
            && (Str(p, "prepend_scheme") is "first" or "always" || (Str(p, "prepend_scheme") == "" && !(p.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False)))
            && p.TryGetProperty("split", out var split) && split.ValueKind == JsonValueKind.False;
        bool legacy = pre == null && normalizer is { } n && GgufVocabulary.Type(n) == "Sequence"
            && n.GetProperty("normalizers").EnumerateArray().ToList() is [var prepend, var replace]
            && GgufVocabulary.Type(prepend) == "Prepend" && Str(prepend, "prepend") == Metaspace.ToString()
            && GgufVocabulary.Type(replace) == "Replace" && replace.TryGetProperty("pattern", out var pattern)
            && Str(pattern, "String") == " " && Str(replace, "content") == Metaspace.ToString();
        if (!metaspace && !legacy)
            throw new TemperException($"{path}: a byte-fallback BPE tokenizer needs SentencePiece's pre-processing for llama.cpp's 'llama' vocabulary: "
                + "pre_tokenizer Metaspace '\u2581' (prepend_scheme first or always, split false) or normalizer Sequence[Prepend '\u2581', Replace ' ' -> '\u2581']");
    }
}
