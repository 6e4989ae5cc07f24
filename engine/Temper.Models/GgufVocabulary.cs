// The tokenizer half of a GGUF file, as convert_hf_to_gguf.py writes a byte-level BPE tokenizer.json (Llama 3, Qwen,
// SmolLM, GPT-2 styles): tokenizer.ggml.model "gpt2"; tokenizer.ggml.pre, the llama.cpp pre-tokenizer whose regexes
// equal the ones Temper splits with: the GgufPreTokenizers name whose pre_tokenizer has this one's form (qwen2 also
// where transformers 5 imposes Qwen's pipeline on a qwen2/qwen3 folder);
// tokenizer.ggml.tokens by id for the model's whole vocabulary (ids the tokenizer lacks as "[PAD<id>]", type unused);
// token types (1 normal, 3 control for special added tokens and <|...|> ones, 4 user-defined for other added tokens,
// 5 unused); merges as "left right"; the special ids (tokenizer_config.json's, else config.json's); add_bos_token and
// add_eos_token from what the post-processor adds; and tokenizer.chat_template. A SentencePiece-style byte-fallback BPE
// (Llama 2, Mistral 7B v0.1-v0.3) goes to GgufSpmVocabulary (llama.cpp's "llama" vocabulary). Any other tokenizer
// (WordPiece, Unigram, a pre-tokenizer llama.cpp has no regex for) is refused in one line naming tokenizer.json.
using System.Text.Json;
using Temper.Core;
using Temper.Core.Gguf;
using Temper.Models.Text;

namespace Temper.Models;

internal static class GgufVocabulary
{
    private enum TokenType { Normal = 1, Control = 3, UserDefined = 4, Unused = 5 }

    public static void Add(GgufWriter g, ModelConfig cfg, GgufExport.Source source)
    {
        string path = Path.Combine(source.TokenizerDir, "tokenizer.json");
        if (!File.Exists(path)) throw new TemperException($"{source.TokenizerDir}: no tokenizer.json (a GGUF file carries its tokenizer)");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var root = doc.RootElement;
        var model = root.GetProperty("model");
        string type = model.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";
        if (type != "BPE") throw new TemperException($"{path}: a {(type.Length == 0 ? "typeless" : type)} tokenizer has no GGUF form Temper writes (BPE only: byte-level, or SentencePiece-style with byte_fallback)");
        if (model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True)
        {
            GgufSpmVocabulary.Add(g, cfg, source, root, path);
            return;
        }

        int v = cfg.VocabSize;
        var tokens = new string?[v];
        var types = new int[v];
        foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            Place(tokens, types, entry.Value.GetInt32(), entry.Name, TokenType.Normal, path);
        if (root.TryGetProperty("added_tokens", out var added))
            foreach (var a in added.EnumerateArray())
            {
                string content = a.GetProperty("content").GetString()!;
                bool special = a.TryGetProperty("special", out var sp) && sp.ValueKind == JsonValueKind.True;
                Place(tokens, types, a.GetProperty("id").GetInt32(), content, special || LooksSpecial(content) ? TokenType.Control : TokenType.UserDefined, path);
            }
        FillUnused(tokens, types, path);

        g.Add("tokenizer.ggml.model", "gpt2");
        g.Add("tokenizer.ggml.pre", PreTokenizer(root, source.TokenizerDir, path));
        g.Add("tokenizer.ggml.tokens", tokens!);
        g.Add("tokenizer.ggml.token_type", types);
        g.Add("tokenizer.ggml.merges", Merges(model, path));
        AddSpecials(g, cfg, source);
    }

    // The special ids (tokenizer_config.json's, else config.json's), add_bos/add_eos from what the post-processor adds
    // to "a", and the chat template: the same for every vocabulary.
    internal static void AddSpecials(GgufWriter g, ModelConfig cfg, GgufExport.Source source)
    {
        var tok = source.Tokenizer;
        int v = cfg.VocabSize;
        if ((tok.BosId ?? cfg.BosTokenId) is int bos && bos < v) g.Add("tokenizer.ggml.bos_token_id", (uint)bos);
        if ((tok.EosId ?? (cfg.EosTokenIds.Count > 0 ? cfg.EosTokenIds[0] : null)) is int eos && eos < v) g.Add("tokenizer.ggml.eos_token_id", (uint)eos);
        if ((tok.PadId ?? cfg.PadTokenId) is int pad && pad < v) g.Add("tokenizer.ggml.padding_token_id", (uint)pad);
        var plain = tok.Encode("a");
        var full = tok.EncodeWithSpecialTokens("a");
        int prefix = full.Count - plain.Count;
        for (int i = 0; i < plain.Count && prefix >= 0; i++)
            if (full[prefix + i] != plain[i]) prefix = -1;
        g.Add("tokenizer.ggml.add_bos_token", prefix > 0);
        g.Add("tokenizer.ggml.add_eos_token", prefix >= 0 && full.Count > plain.Count + prefix);
        if (source.Template is { } template) g.Add("tokenizer.chat_template", template.Source);
    }

    /// <summary>Ids the tokenizer lacks become "[PAD<id>]" of type unused (5), as the converter pads; every text must then
    /// have one id, as llama.cpp needs.</summary>
    internal static void FillUnused(string?[] tokens, int[] types, string path)
    {
        for (int i = 0; i < tokens.Length; i++)
            if (tokens[i] == null) (tokens[i], types[i]) = ($"[PAD{i}]", (int)TokenType.Unused);
        if (tokens.GroupBy(x => x).FirstOrDefault(x => x.Count() > 1) is { } dup)
            throw new TemperException($"{path}: token '{dup.Key}' has more than one id; llama.cpp needs one id per token text");
    }

    internal static void Place(string?[] tokens, int[] types, int id, string text, int type, string path)
    {
        if ((uint)id >= (uint)tokens.Length) throw new TemperException($"{path}: token '{text}' has id {id}, outside the model's vocab_size {tokens.Length}");
        tokens[id] = text;
        types[id] = type;
    }

    private static void Place(string?[] tokens, int[] types, int id, string text, TokenType type, string path) =>
        Place(tokens, types, id, text, (int)type, path);

    // convert_hf_to_gguf.py's does_token_look_special, for the forms these families use.
    internal static bool LooksSpecial(string s) =>
        s is "<pad>" or "<mask>" || (s.StartsWith("<|", StringComparison.Ordinal) && s.EndsWith("|>", StringComparison.Ordinal) && s.Length > 4);

    internal static List<string> Merges(JsonElement model, string path)
    {
        var merges = new List<string>();
        if (!model.TryGetProperty("merges", out var m)) return merges;
        foreach (var e in m.EnumerateArray())
        {
            string[] parts = e.ValueKind == JsonValueKind.Array ? e.EnumerateArray().Select(x => x.GetString()!).ToArray() : e.GetString()!.Split(' ');
            if (parts.Length != 2 || parts.Any(p => p.Length == 0 || p.Contains(' ')))
                throw new TemperException($"{path}: merge {merges.Count} ({e.GetRawText()}) is not two tokens without spaces, which GGUF's \"left right\" merges need");
            merges.Add(parts[0] + " " + parts[1]);
        }
        return merges;
    }

    private static string PreTokenizer(JsonElement root, string dir, string path)
    {
        if (TokenizerArchitecture.ImposesQwenPipeline(dir)) return "qwen2";
        if (root.TryGetProperty("normalizer", out var n) && n.ValueKind != JsonValueKind.Null && Type(n) != "NFC")
            throw new TemperException($"{path}: a {Type(n)} normalizer has no llama.cpp pre-tokenizer Temper writes");
        var steps = root.TryGetProperty("pre_tokenizer", out var p) && p.ValueKind == JsonValueKind.Object ? Steps(p) : [];
        string form = Form(steps);
        return GgufPreTokenizers.Names.FirstOrDefault(name => Form(Steps(JsonDocument.Parse(GgufPreTokenizers.Build(name).ToJsonString()).RootElement)) == form)
            ?? throw new TemperException($"{path}: pre_tokenizer [{(form.Length > 120 ? form[..120] + "..." : form)}] has no llama.cpp pre-tokenizer Temper knows ({string.Join(", ", GgufPreTokenizers.Names)})");
    }

    private static List<JsonElement> Steps(JsonElement p) => Type(p) == "Sequence" ? p.GetProperty("pretokenizers").EnumerateArray().ToList() : [p];

    private static string Form(IEnumerable<JsonElement> steps) => string.Join(", ", steps.Select(Describe));

    internal static string Type(JsonElement e) => e.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";

    private static string Describe(JsonElement step) => Type(step) switch
    {
        "ByteLevel" => step.TryGetProperty("use_regex", out var r) && r.ValueKind == JsonValueKind.False ? "ByteLevel" : "ByteLevel(regex)",
        // llama.cpp's regexes isolate each match: only an Isolated, non-inverted Split is one of them.
        "Split" => (step.TryGetProperty("behavior", out var b) && b.GetString() == "Isolated" && !(step.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True) ? "Split(" : "Split(not isolated: ")
            + (step.GetProperty("pattern").TryGetProperty("Regex", out var re) ? re.GetString() : "string") + ")",
        "Digits" => step.TryGetProperty("individual_digits", out var d) && d.ValueKind == JsonValueKind.True ? "Digits(single)" : "Digits",
        var other => other,
    };
}
