// A GGUF file's tokenizer as the Hugging Face files Temper reads: tokenizer.json, tokenizer_config.json and
// chat_template.jinja. llama.cpp's byte-level BPE vocabulary (tokenizer.ggml.model "gpt2") maps to a BPE model:
// normal and byte tokens go to its vocab, control (3) and user-defined (4) tokens to added_tokens (special when
// control), unused ones (5, the "[PAD<id>]" fillers) are left out; merges "left right" as they are; the pre-tokenizer
// whose regexes llama.cpp applies for tokenizer.ggml.pre, aliases included (GgufPreTokenizers);
// a TemplateProcessing post-processor that adds BOS/EOS as add_bos_token/add_eos_token say; a ByteLevel decoder.
// llama.cpp's SentencePiece vocabulary ("llama") maps to the byte-fallback BPE tokenizer.json Llama 2 and Mistral ship:
// normal, byte and unknown tokens in the vocab (control ones too, as there), control/unknown/user-defined tokens in
// added_tokens, unk_token from unknown_token_id; merges rebuilt from tokenizer.ggml.scores as transformers'
// SpmConverter builds them (for each normal token t of 2+ chars, every split t = a + b with a and b in the vocab,
// ordered by t's score descending, then t's id, then a's and b's ids), which is the order llama.cpp joins pairs in;
// the pre-processing as Llama 2's own tokenizer.json spells it, normalizer Sequence[Prepend '▁', Replace ' ' -> '▁']
// (Replace alone when add_space_prefix is false) and no pre-tokenizer, because that is what llama.cpp does: a '▁'
// before every fragment at the start or after an added token, even one that starts with a space (Metaspace with
// prepend_scheme "first", the newer spelling, adds none after added tokens and none before a leading space, so it
// would tokenize such text unlike the GGUF file); Llama 2's decoder Sequence[Replace '▁' -> ' ', ByteFallback, Fuse,
// Strip(' ', 1, 0)].
// Other vocabularies (WordPiece "bert", Unigram "t5", ...) and pre-tokenizers are refused in one line.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;
using Temper.Core.Gguf;

namespace Temper.Models;

internal sealed class GgufTokenizerImport
{

    private readonly JsonObject _tokenizer;
    private readonly JsonObject _config;
    private readonly string? _template;

    public int? BosId { get; }
    public int? EosId { get; }
    public int? PadId { get; }

    private GgufTokenizerImport(JsonObject tokenizer, JsonObject config, string? template, int? bos, int? eos, int? pad)
    {
        (_tokenizer, _config, _template, BosId, EosId, PadId) = (tokenizer, config, template, bos, eos, pad);
    }

    public static GgufTokenizerImport Read(GgufReader g, int modelVocab)
    {
        string model = g.String("tokenizer.ggml.model") ?? throw g.Fault("tokenizer.ggml.model missing (a GGUF file without its tokenizer)");
        if (model is not ("gpt2" or "llama"))
            throw g.Fault($"tokenizer.ggml.model '{model}' is not byte-level BPE ('gpt2') or SentencePiece BPE ('llama'), the vocabularies Temper imports");
        var tokens = (g.Array("tokenizer.ggml.tokens") ?? throw g.Fault("tokenizer.ggml.tokens missing")).Select(t => t as string ?? throw g.Fault("tokenizer.ggml.tokens holds a non-string")).ToArray();
        var types = g.Array("tokenizer.ggml.token_type")?.Select(t => Convert.ToInt32(t)).ToArray() ?? Enumerable.Repeat(1, tokens.Length).ToArray();
        if (types.Length != tokens.Length) throw g.Fault($"tokenizer.ggml.token_type has {types.Length} entries for {tokens.Length} tokens");
        if (tokens.Length > modelVocab) throw g.Fault($"{tokens.Length} tokens for an embedding of {modelVocab} rows");
        if (model == "llama") return ReadSpm(g, tokens, types);
        var merges = g.Array("tokenizer.ggml.merges")?.Select(m => m as string ?? throw g.Fault("tokenizer.ggml.merges holds a non-string")).ToArray() ?? [];
        string pre = g.String("tokenizer.ggml.pre") ?? "default";

        var vocab = new JsonObject();
        var added = new JsonArray();
        for (int id = 0; id < tokens.Length; id++)
            switch (types[id])
            {
                case 3 or 4:
                    added.Add(AddedToken(id, tokens[id], special: types[id] == 3));
                    break;
                case 5: break;
                default:
                    if (!vocab.TryAdd(tokens[id], id)) throw g.Fault($"token '{tokens[id]}' appears twice in tokenizer.ggml.tokens");
                    break;
            }
        string name = GgufPreTokenizers.Canonical(pre)
            ?? throw g.Fault($"tokenizer.ggml.pre '{pre}' is not a pre-tokenizer Temper imports (the regexes of {string.Join(", ", GgufPreTokenizers.Names)})");
        var bpe = new JsonObject
        {
            ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
            ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = GgufPreTokenizers.IgnoresMerges(name),
            ["vocab"] = vocab, ["merges"] = new JsonArray(merges.Select(m => (JsonNode)m).ToArray()),
        };
        var decoder = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true };
        return Finish(g, tokens, added, GgufPreTokenizers.Nfc(name) ? new JsonObject { ["type"] = "NFC" } : null, GgufPreTokenizers.Build(name), decoder, bpe, null);
    }

    private static JsonNode AddedToken(int id, string content, bool special) => new JsonObject
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = special,
    };

    // The special ids, the BOS/EOS post-processor, tokenizer_config.json and the chat template: every vocabulary's.
    private static GgufTokenizerImport Finish(GgufReader g, string[] tokens, JsonArray added, JsonNode? normalizer, JsonNode? preTokenizer,
        JsonNode decoder, JsonObject model, string? unk)
    {
        int? Id(string key)
        {
            long? v = g.Integer(key);
            return v is long x && x >= 0 && x < tokens.Length ? (int)x : null;
        }
        int? bos = Id("tokenizer.ggml.bos_token_id"), eos = Id("tokenizer.ggml.eos_token_id"), pad = Id("tokenizer.ggml.padding_token_id");
        bool addBos = g.Bool("tokenizer.ggml.add_bos_token") ?? false, addEos = g.Bool("tokenizer.ggml.add_eos_token") ?? false;
        if (addBos && bos == null) throw g.Fault("tokenizer.ggml.add_bos_token is true without a bos_token_id");
        if (addEos && eos == null) throw g.Fault("tokenizer.ggml.add_eos_token is true without an eos_token_id");

        JsonArray Template(bool pair)
        {
            var t = new JsonArray();
            if (addBos) t.Add((JsonNode)new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = tokens[bos!.Value], ["type_id"] = 0 } });
            t.Add((JsonNode)new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } });
            if (addEos) t.Add((JsonNode)new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = tokens[eos!.Value], ["type_id"] = 0 } });
            if (pair) t.Add((JsonNode)new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } });
            return t;
        }
        var specials = new JsonObject();
        foreach (var id in new[] { addBos ? bos : null, addEos ? eos : null })
            if (id is int x && !specials.ContainsKey(tokens[x])) specials[tokens[x]] = new JsonObject { ["id"] = tokens[x], ["ids"] = new JsonArray(x), ["tokens"] = new JsonArray(tokens[x]) };

        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = normalizer,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = new JsonObject { ["type"] = "TemplateProcessing", ["single"] = Template(false), ["pair"] = Template(true), ["special_tokens"] = specials },
            ["decoder"] = decoder,
            ["model"] = model,
        };
        var config = new JsonObject { ["tokenizer_class"] = "PreTrainedTokenizerFast", ["add_bos_token"] = addBos, ["add_eos_token"] = addEos };
        if (bos is int b) config["bos_token"] = tokens[b];
        if (eos is int e) config["eos_token"] = tokens[e];
        if (pad is int p) config["pad_token"] = tokens[p];
        if (unk != null) config["unk_token"] = unk;
        return new GgufTokenizerImport(tokenizer, config, g.String("tokenizer.chat_template"), bos, eos, pad);
    }

    // llama.cpp's SentencePiece vocabulary as the header says.
    private static GgufTokenizerImport ReadSpm(GgufReader g, string[] tokens, int[] types)
    {
        var scores = g.Array("tokenizer.ggml.scores")?.Select(s => s is float f ? f : throw g.Fault("tokenizer.ggml.scores holds a non-float")).ToArray()
            ?? new float[tokens.Length];
        if (scores.Length != tokens.Length) throw g.Fault($"tokenizer.ggml.scores has {scores.Length} entries for {tokens.Length} tokens");
        if (g.Bool("tokenizer.ggml.remove_extra_whitespaces") == true)
            throw g.Fault("tokenizer.ggml.remove_extra_whitespaces is true, which no tokenizer.json pre-tokenizer Temper reads does");
        bool prefix = g.Bool("tokenizer.ggml.add_space_prefix") ?? true;
        long? unkKey = g.Integer("tokenizer.ggml.unknown_token_id");
        int unkId = unkKey is long k && k >= 0 && k < tokens.Length ? (int)k : Array.IndexOf(types, 2);
        string? unk = unkId >= 0 ? tokens[unkId] : null;

        var vocab = new JsonObject();
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        var added = new JsonArray();
        for (int id = 0; id < tokens.Length; id++)
        {
            int type = id == unkId ? 2 : types[id];
            if (type is 1 or 2 or 3 or 6)
            {
                if (!ids.TryAdd(tokens[id], id)) throw g.Fault($"token '{tokens[id]}' appears twice in tokenizer.ggml.tokens");
                vocab[tokens[id]] = id;
            }
            if (type is 2 or 3 or 4) added.Add(AddedToken(id, tokens[id], special: type != 4));
        }
        var merges = new List<(int Token, int Left, int Right)>();
        for (int id = 0; id < tokens.Length; id++)
        {
            string t = tokens[id];
            if (types[id] != 1 || id == unkId || t.Length < 2) continue;
            for (int i = 1; i < t.Length; i++)
                if (!char.IsLowSurrogate(t[i]) && ids.TryGetValue(t[..i], out int a) && ids.TryGetValue(t[i..], out int b))
                    merges.Add((id, a, b));
        }
        merges.Sort((x, y) => x.Token == y.Token
            ? x.Left != y.Left ? x.Left.CompareTo(y.Left) : x.Right.CompareTo(y.Right)
            : scores[x.Token] != scores[y.Token] ? scores[y.Token].CompareTo(scores[x.Token]) : x.Token.CompareTo(y.Token));

        const string space = "\u2581";
        var replace = new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = space };
        JsonNode normalizer = prefix
            ? new JsonObject { ["type"] = "Sequence", ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "Prepend", ["prepend"] = space }, replace) }
            : replace;
        var steps = new JsonArray(
            new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = space }, ["content"] = " " },
            new JsonObject { ["type"] = "ByteFallback" },
            new JsonObject { ["type"] = "Fuse" });
        if (prefix) steps.Add((JsonNode)new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 });
        var bpe = new JsonObject
        {
            ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = unk, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
            ["fuse_unk"] = true, ["byte_fallback"] = true, ["ignore_merges"] = false,
            ["vocab"] = vocab, ["merges"] = new JsonArray(merges.Select(m => (JsonNode)new JsonArray(tokens[m.Left], tokens[m.Right])).ToArray()),
        };
        return Finish(g, tokens, added, normalizer, null, new JsonObject { ["type"] = "Sequence", ["decoders"] = steps }, bpe, unk);
    }

    public void Write(string dir)
    {
        var options = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteAllText(Path.Combine(dir, "tokenizer.json"), _tokenizer.ToJsonString(options));
        AtomicFile.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), _config.ToJsonString(options));
        if (_template != null) AtomicFile.WriteAllText(Path.Combine(dir, "chat_template.jinja"), _template);
    }
}
