// A GGUF file's tokenizer as the Hugging Face files Temper reads: tokenizer.json, tokenizer_config.json and
// chat_template.jinja. llama.cpp's byte-level BPE vocabulary (tokenizer.ggml.model "gpt2") maps to a BPE model:
// normal and byte tokens go to its vocab, control (3) and user-defined (4) tokens to added_tokens (special when
// control), unused ones (5, the "[PAD<id>]" fillers) are left out; merges "left right" as they are; the pre-tokenizer
// whose regexes llama.cpp applies for tokenizer.ggml.pre (gpt-2: ByteLevel's own regex; llama-bpe: Llama 3's Split and
// ignore_merges, as llama.cpp sets it; qwen2: Qwen's Split after NFC; smollm: single digits, then ByteLevel's regex);
// a TemplateProcessing post-processor that adds BOS/EOS as add_bos_token/add_eos_token say; a ByteLevel decoder.
// Other vocabularies (SentencePiece "llama", WordPiece "bert", ...) and pre-tokenizers are refused in one line.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.Gguf;

namespace Temper.Models;

internal sealed class GgufTokenizerImport
{
    private const string Llama3Pattern = """(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""";
    private const string QwenPattern = """(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""";

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
        if (model != "gpt2") throw g.Fault($"tokenizer.ggml.model '{model}' is not byte-level BPE ('gpt2'), the one vocabulary Temper imports");
        var tokens = (g.Array("tokenizer.ggml.tokens") ?? throw g.Fault("tokenizer.ggml.tokens missing")).Select(t => t as string ?? throw g.Fault("tokenizer.ggml.tokens holds a non-string")).ToArray();
        var types = g.Array("tokenizer.ggml.token_type")?.Select(t => Convert.ToInt32(t)).ToArray() ?? Enumerable.Repeat(1, tokens.Length).ToArray();
        if (types.Length != tokens.Length) throw g.Fault($"tokenizer.ggml.token_type has {types.Length} entries for {tokens.Length} tokens");
        if (tokens.Length > modelVocab) throw g.Fault($"{tokens.Length} tokens for an embedding of {modelVocab} rows");
        var merges = g.Array("tokenizer.ggml.merges")?.Select(m => m as string ?? throw g.Fault("tokenizer.ggml.merges holds a non-string")).ToArray() ?? [];
        string pre = g.String("tokenizer.ggml.pre") ?? "default";

        var vocab = new JsonObject();
        var added = new JsonArray();
        for (int id = 0; id < tokens.Length; id++)
            switch (types[id])
            {
                case 3 or 4:
                    added.Add((JsonNode)new JsonObject
                    {
                        ["id"] = id, ["content"] = tokens[id], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                        ["normalized"] = false, ["special"] = types[id] == 3,
                    });
                    break;
                case 5: break;
                default:
                    if (!vocab.TryAdd(tokens[id], id)) throw g.Fault($"token '{tokens[id]}' appears twice in tokenizer.ggml.tokens");
                    break;
            }
        JsonNode Split(string pattern) => new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = pattern }, ["behavior"] = "Isolated", ["invert"] = false };
        JsonNode ByteLevel(bool regex) => new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = regex };
        JsonNode Sequence(params JsonNode[] steps) => new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(steps) };
        JsonNode preTokenizer = pre switch
        {
            "gpt-2" => ByteLevel(true),
            "llama-bpe" or "llama3" or "llama-v3" => Sequence(Split(Llama3Pattern), ByteLevel(false)),
            "qwen2" => Sequence(Split(QwenPattern), ByteLevel(false)),
            "smollm" => Sequence(new JsonObject { ["type"] = "Digits", ["individual_digits"] = true }, ByteLevel(true)),
            _ => throw g.Fault($"tokenizer.ggml.pre '{pre}' is not a pre-tokenizer Temper imports (gpt-2, llama-bpe, qwen2, smollm)"),
        };

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
            ["normalizer"] = pre == "qwen2" ? new JsonObject { ["type"] = "NFC" } : null,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = new JsonObject { ["type"] = "TemplateProcessing", ["single"] = Template(false), ["pair"] = Template(true), ["special_tokens"] = specials },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["trim_offsets"] = true, ["use_regex"] = true },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = pre is "llama-bpe" or "llama3" or "llama-v3",
                ["vocab"] = vocab, ["merges"] = new JsonArray(merges.Select(m => (JsonNode)m).ToArray()),
            },
        };
        var config = new JsonObject { ["tokenizer_class"] = "PreTrainedTokenizerFast", ["add_bos_token"] = addBos, ["add_eos_token"] = addEos };
        if (bos is int b) config["bos_token"] = tokens[b];
        if (eos is int e) config["eos_token"] = tokens[e];
        if (pad is int p) config["pad_token"] = tokens[p];
        return new GgufTokenizerImport(tokenizer, config, g.String("tokenizer.chat_template"), bos, eos, pad);
    }

    public void Write(string dir)
    {
        var options = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteAllText(Path.Combine(dir, "tokenizer.json"), _tokenizer.ToJsonString(options));
        AtomicFile.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), _config.ToJsonString(options));
        if (_template != null) AtomicFile.WriteAllText(Path.Combine(dir, "chat_template.jinja"), _template);
    }
}
