// A SentencePiece-style BPE tokenizer.json built here, as transformers' SpmConverter lays out Llama 2's and Mistral's:
// ids 0 <unk>, 1 <s>, 2 </s> (special added tokens), 3..258 the byte tokens <0x00>..<0xFF>, then the ASCII chars of a
// small corpus and '▁', then tokens a tiny BPE trained on that corpus (words as '▁word', the most frequent adjacent
// pair merged, ties by text) made, up to 512 ids in all; merges are every split t = a + b of each trained token with
// a and b in the vocabulary, ordered by t's id and within t by (id a, id b) (SpmConverter's order); byte_fallback
// true, unk_token <unk>, pre-tokenizer Metaspace (prepend_scheme first, split false) or the older normalizer
// Sequence[Prepend '▁', Replace ' ' -> '▁']; a post-processor adding <s>; Llama 2's decoder. Folder() puts it beside
// llama-tiny's weights (vocab_size 512) as a model folder.
using System.Text.Json.Nodes;

namespace Temper.Tests;

public static class SpmTiny
{
    private const string Space = "\u2581";

    private static readonly string[] Corpus =
    [
        "the quick brown fox jumps over the lazy dog and the dog sleeps in the sun",
        "hello world, this is a test of the tokenizer: there are 12 tests and 345 numbers.",
        "in the beginning there was the word, and the word was with the tokenizer",
        "she sells sea shells on the sea shore; the shells she sells are sea shells",
        "testing, testing: one two three, four five six! seven eight nine ten?",
        "a model reads the text; then the model writes more text (and more tokens).",
    ];

    /// <summary>Texts the tests and the llama.cpp comparison tokenize: spaces at the ends and in runs, newlines, digits,
    /// punctuation, chars outside the vocabulary (bytes), and the special tokens' text.</summary>
    public static readonly string[] Texts =
    [
        "hello world",
        "the quick brown fox jumps over the lazy dog",
        " leading space",
        "trailing space ",
        "multiple   spaces  here",
        "line one\nline two\n\nend",
        "digits 12345 and 3.14159",
        "punctuation: hello, world! (yes?) [no] {x}",
        "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001F642",
        "<s>hello</s> world",
        "the text with </s> inside",
        "UPPER Case Mixed",
    ];

    private static readonly Lazy<(List<string>, List<(string, int)>, List<(string, string)>)> _built = new(Train);

    /// <summary>The vocabulary by id; the trained tokens in id order (the last ones), each with its merges' count; the merges.</summary>
    public static (List<string> Vocab, List<(string Token, int Splits)> Merged, List<(string Left, string Right)> Merges) Build() => _built.Value;

    private static (List<string>, List<(string, int)>, List<(string, string)>) Train()
    {
        var vocab = new List<string> { "<unk>", "<s>", "</s>" };
        for (int b = 0; b < 256; b++) vocab.Add($"<0x{b:X2}>");
        var words = Corpus.SelectMany(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Select(w => Space + w).ToList();
        var chars = words.SelectMany(w => w).Distinct().Select(c => c.ToString()).Order(StringComparer.Ordinal).ToList();
        vocab.AddRange(chars);
        var known = new HashSet<string>(vocab);
        var split = words.Select(w => w.Select(c => c.ToString()).ToList()).ToList();
        var merged = new List<(string, int)>();
        var merges = new List<(string, string)>();
        while (vocab.Count < 512)
        {
            var counts = new Dictionary<(string, string), int>();
            foreach (var w in split)
                for (int i = 0; i + 1 < w.Count; i++)
                    counts[(w[i], w[i + 1])] = counts.GetValueOrDefault((w[i], w[i + 1])) + 1;
            var best = counts.Where(kv => !known.Contains(kv.Key.Item1 + kv.Key.Item2))
                .OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1 + "\0" + kv.Key.Item2, StringComparer.Ordinal).FirstOrDefault();
            if (best.Value == 0) break;
            string token = best.Key.Item1 + best.Key.Item2;
            foreach (var w in split)
                for (int i = 0; i + 1 < w.Count; i++)
                    if (w[i] == best.Key.Item1 && w[i + 1] == best.Key.Item2) { w[i] = token; w.RemoveAt(i + 1); }
            vocab.Add(token);
            known.Add(token);
            merged.Add((token, 0));
        }
        var id = vocab.Select((t, i) => (t, i)).ToDictionary(x => x.t, x => x.i);
        for (int m = 0; m < merged.Count; m++)
        {
            string t = merged[m].Item1;
            var local = Enumerable.Range(1, t.Length - 1).Select(k => (t[..k], t[k..])).Where(p => id.ContainsKey(p.Item1) && id.ContainsKey(p.Item2))
                .OrderBy(p => id[p.Item1]).ThenBy(p => id[p.Item2]).ToList();
            merges.AddRange(local);
            merged[m] = (t, local.Count);
        }
        return (vocab, merged, merges);
    }

    public static JsonObject Tokenizer(bool legacyNormalizer = false)
    {
        var (vocab, _, merges) = Build();
        var v = new JsonObject();
        for (int i = 0; i < vocab.Count; i++) v[vocab[i]] = i;
        JsonNode Added(int id) => new JsonObject
        {
            ["id"] = id, ["content"] = vocab[id], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        };
        JsonNode Metaspace() => new JsonObject { ["type"] = "Metaspace", ["replacement"] = Space, ["prepend_scheme"] = "first", ["split"] = false };
        JsonNode Normalizer() => new JsonObject
        {
            ["type"] = "Sequence",
            ["normalizers"] = new JsonArray(
                new JsonObject { ["type"] = "Prepend", ["prepend"] = Space },
                new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = Space }),
        };
        JsonNode Special(string id) => new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = id, ["type_id"] = 0 } };
        JsonNode Seq(string id, int type) => new JsonObject { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = type } };
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(Added(0), Added(1), Added(2)),
            ["normalizer"] = legacyNormalizer ? Normalizer() : null,
            ["pre_tokenizer"] = legacyNormalizer ? null : Metaspace(),
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Special("<s>"), Seq("A", 0)),
                ["pair"] = new JsonArray(Special("<s>"), Seq("A", 0), Special("<s>"), Seq("B", 1)),
                ["special_tokens"] = new JsonObject { ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") } },
            },
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = Space }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = true, ["byte_fallback"] = true, ["ignore_merges"] = false, ["vocab"] = v,
                ["merges"] = new JsonArray(merges.Select(m => (JsonNode)new JsonArray(m.Item1, m.Item2)).ToArray()),
            },
        };
    }

    /// <summary>A model folder: llama-tiny's config and weights with this tokenizer (edited by <paramref name="edit"/>).</summary>
    public static string Folder(bool legacyNormalizer = false, Action<JsonObject>? edit = null)
    {
        string src = Fixtures.Hf("llama-tiny"), dir = TempFolder.Create("temper-spm-tiny");
        foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(Path.Combine(src, f), Path.Combine(dir, f));
        var tokenizer = Tokenizer(legacyNormalizer);
        edit?.Invoke(tokenizer);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tokenizer.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), new JsonObject
        {
            ["tokenizer_class"] = "LlamaTokenizerFast", ["add_bos_token"] = true, ["add_eos_token"] = false,
            ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["unk_token"] = "<unk>",
        }.ToJsonString());
        return dir;
    }
}
