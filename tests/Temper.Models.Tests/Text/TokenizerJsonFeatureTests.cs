// HfTokenizer on small hand-made tokenizer.json files, one feature each: added-token options
// (lstrip/rstrip/single_word/normalized, cases taken from HF's own added_vocabulary tests), split
// behaviors, Oniguruma-only regex syntax, code points beyond the BMP, NFC/NFD, merges in both forms,
// ignore_merges, and the SentencePiece-style layout of Llama 2 / Mistral (▁, byte_fallback).
using System.Text.Json.Nodes;
using Temper.Models.Text;
using static Temper.Tests.Text.TinyTokenizerJson;

namespace Temper.Tests.Text;

public class TokenizerJsonFeatureTests
{
    private static JsonObject Lowercase => new() { ["type"] = "Lowercase" };

    [Fact]
    public void AddedTokenOptionsFollowHf()
    {
        // HF added_vocabulary.rs `options_use_cases`: splits [CLS] | " my " | name | " is anthony " | [SEP].
        var tok = Load(ByteLevel(normalizer: Lowercase, addedTokens:
        [
            Added(256, "my", lstrip: true, rstrip: true), Added(257, "name"), Added(258, "ony", singleWord: true),
            Added(259, "[CLS]", special: true), Added(260, "[SEP]", special: true),
        ]));
        Assert.Equal([259, 256, 257, .. Bytes(" is anthony "), 260], tok.Encode("[CLS] My name is Anthony [SEP]"));
    }

    [Fact]
    public void SingleWordTokensMatchOnlyWholeWords()
    {
        // HF `test_single_word_is_correct`: <mask> | " my name " | <mask> | " a<mask> <mask>ony " | <mask>.
        var tok = Load(ByteLevel(normalizer: Lowercase, addedTokens: [Added(256, "<mask>", singleWord: true)]));
        Assert.Equal([256, .. Bytes(" my name "), 256, .. Bytes(" a<mask> <mask>ony "), 256],
            tok.Encode("<mask> My name <mask> A<mask> <mask>ony <mask>"));
        // HF `test_single_word_is_unicode_correct`: punctuation is not a word char, a combining mark is.
        Assert.Equal([256, .. Bytes(", "), 256, .. Bytes("- ◌̰<mask>")], tok.Encode("<mask>, <mask>- ◌̰<mask>"));
    }

    [Fact]
    public void StripOptionsTakeUnicodeSpaces()
    {
        // HF `test_lstrip_unicode_space`: "hi" | " <mask> " | "there" | "\t<mask>\t" | "<mask>\u2000".
        var tok = Load(ByteLevel(normalizer: Lowercase, addedTokens:
            [Added(256, "<mask>", lstrip: true, rstrip: true, singleWord: true)]));
        Assert.Equal([.. Bytes("hi"), 256, .. Bytes("there"), 256, 256], tok.Encode("Hi <mask> there\t<mask>\t<mask>\u2000"));
    }

    [Fact]
    public void LongestAddedTokenWinsAndSpecialsMatchRawText()
    {
        var tok = Load(ByteLevel(normalizer: Lowercase, addedTokens:
            [Added(256, "<a>", special: true), Added(257, "<a><b>", special: true), Added(258, "<B>", special: true)]));
        Assert.Equal([257, 258, 256], tok.Encode("<a><b><B><a>"));
        Assert.Equal(Bytes("<b>"), tok.Encode("<b>")); // not normalized: "<b>" is not "<B>"
        Assert.Equal("<a><b><B><a>", tok.Decode(tok.Encode("<a><b><B><a>")));
    }

    [Theory]
    [InlineData("Isolated", new[] { "a", "-", "-", "b", "-", "c" })]
    [InlineData("Removed", new[] { "a", "b", "c" })]
    [InlineData("MergedWithPrevious", new[] { "a-", "-", "b-", "c" })]
    [InlineData("MergedWithNext", new[] { "a", "-", "-b", "-c" })]
    [InlineData("Contiguous", new[] { "a", "--", "b", "-", "c" })]
    public void SplitBehaviorsCutLikeHf(string behavior, string[] pieces)
    {
        // Every two-char piece a behavior can make is one merged token, so the ids show the cuts.
        var split = new JsonObject
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { ["String"] = "-" }, ["behavior"] = behavior, ["invert"] = false,
        };
        var tok = Load(ByteLevel(preTokenizer: Sequence(split, NoRegexByteLevel()),
            merges: [["a", "-"], ["-", "-"], ["-", "b"], ["-", "c"], ["b", "-"]]));
        Assert.Equal(pieces.Select(p => tok.TokenToId(p)!.Value), tok.Encode("a--b-c"));
    }

    [Fact]
    public void PossessiveQuantifiersAndRubyIntervalsAreTranslated()
    {
        Assert.Equal("(?>[a-z]*)x", OnigurumaPatternProbe(@"[a-z]*+x"));
        Assert.Equal(@"(?>\p{L}+)(?>\s?)", OnigurumaPatternProbe(@"\p{L}++\s?+"));
        Assert.Equal("(?:a{1,3})+", OnigurumaPatternProbe("a{1,3}+"));
        Assert.Equal(@"\P{L}[0-9a-fA-F]\u00E9", OnigurumaPatternProbe(@"\p{^L}\h\x{E9}"));

        // And they work as a Split pattern: "aaa" stays one piece, so its merge applies.
        var split = new JsonObject
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = @"\p{L}++|\s++|[^\s\p{L}]++" },
            ["behavior"] = "Isolated", ["invert"] = false,
        };
        var tok = Load(ByteLevel(preTokenizer: Sequence(split, NoRegexByteLevel()), merges: [["a", "a"], ["aa", "a"]]));
        Assert.Equal([257, 32, 257], tok.Encode("aaa aaa"));
    }

    [Fact]
    public void CodePointsBeyondTheBmpKeepTheirUnicodeCategory()
    {
        // Llama 3's regex takes "😀abc" as one piece ([^\r\n\p{L}\p{N}]?\p{L}+ with 😀 as the optional
        // char) and "𝐀c" (math letters, category Lu) as one piece; .NET alone would see surrogates.
        string llama3 = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        var split = new JsonObject
        {
            ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = llama3 }, ["behavior"] = "Isolated", ["invert"] = false,
        };
        var tok = Load(ByteLevel(preTokenizer: Sequence(split, NoRegexByteLevel()), merges: [.. AllPairMerges("😀abc"), .. AllPairMerges("𝐀c")]));
        Assert.Equal([tok.TokenToId(ByteChars("😀abc"))!.Value], tok.Encode("😀abc"));
        Assert.Equal([tok.TokenToId(ByteChars("𝐀c"))!.Value], tok.Encode("𝐀c"));
        Assert.Equal("😀abc 𝐀c", tok.Decode(tok.Encode("😀abc 𝐀c")));
    }

    [Fact]
    public void NfcAndNfdNormalizersWorkWithoutIcu()
    {
        var nfc = Load(ByteLevel(normalizer: new JsonObject { ["type"] = "NFC" }));
        Assert.Equal(Bytes("é"), nfc.Encode("e\u0301"));
        Assert.Equal(Bytes("\uD55C"), nfc.Encode("\u1112\u1161\u11AB")); // Hangul jamo compose to 한
        Assert.Equal(Bytes("\u00C5"), nfc.Encode("\u212B")); // ANGSTROM SIGN is a singleton
        Assert.Equal(Bytes("\u1EA1\u0301"), nfc.Encode("a\u0301\u0323")); // marks reordered: ạ, then no ạ́ exists
        Assert.Equal(Bytes("\u1EA5"), nfc.Encode("a\u0302\u0301")); // â then ấ

        var nfd = Load(ByteLevel(normalizer: new JsonObject { ["type"] = "NFD" }));
        Assert.Equal(Bytes("e\u0301"), nfd.Encode("é"));
        Assert.Equal(Bytes("\u1112\u1161\u11AB"), nfd.Encode("\uD55C"));
        Assert.Equal(Bytes("a\u0323\u0302\u0301"), nfd.Encode("\u1EAD\u0301")); // ậ + acute
    }

    [Fact]
    public void MergesInStringFormMatchPairForm()
    {
        var pairs = ByteLevel(merges: [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"]]);
        var strings = ByteLevel(merges: [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"]]);
        strings["model"]!["merges"] = new JsonArray("h e", "l l", "he ll", "hell o");
        var a = Load(pairs);
        var b = Load(strings);
        Assert.Equal([259], a.Encode("hello"));
        Assert.Equal(a.Encode("hello help"), b.Encode("hello help"));
    }

    [Fact]
    public void IgnoreMergesTakesWholeVocabularyPieces()
    {
        // "abc" is in the vocabulary but no merge chain builds it: only ignore_merges finds it.
        var json = ByteLevel(merges: [["a", "b"]]);
        json["model"]!["vocab"]!["abc"] = 300;
        Assert.Equal([256, (int)'c'], Load(json).Encode("abc"));
        json["model"]!["ignore_merges"] = true;
        Assert.Equal([300], Load(json).Encode("abc"));
    }

    [Fact]
    public void SentencePieceLayoutRoundTrips()
    {
        // Llama 2 / Mistral: normalizer Prepend ▁ + Replace ' ' -> ▁, no pre-tokenizer, BPE with
        // byte_fallback, decoder Replace ▁ -> ' ', ByteFallback, Fuse, Strip one leading space.
        var tok = Load(SentencePieceJson(normalizerLayout: true), """{"bos_token": "<s>", "eos_token": "</s>"}""");
        Assert.Equal((1, 2), (tok.BosId!.Value, tok.EosId!.Value));
        int Id(string piece) => tok.TokenToId(piece)!.Value;

        Assert.Equal([Id("▁hello"), Id("▁w"), Id("o"), Id("r"), Id("l"), Id("d")], tok.Encode("hello world"));
        // 'é' is not in the vocabulary: its UTF-8 bytes as <0xC3><0xA9>.
        Assert.Equal([Id("▁hello"), Id("▁"), Id("<0xC3>"), Id("<0xA9>")], tok.Encode("hello é"));
        // The legacy layout prepends ▁ after a special token too, as HF does.
        Assert.Equal([1, Id("▁hello")], tok.Encode("<s>hello"));

        foreach (var text in new[] { "hello world", "hello é", "  hello  ", "héllo 😀 wörld", "hello\nworld" })
            Assert.Equal(text, tok.Decode(tok.Encode(text)));
        Assert.Equal("hello", tok.Decode([1, .. tok.Encode("hello"), 2], skipSpecialTokens: true));
        Assert.Equal(" hello", tok.TokenToString(Id("▁hello")));
        // A byte run that is not UTF-8 decodes to one U+FFFD per byte, as HF's ByteFallback does.
        Assert.Equal("hello\uFFFD\uFFFD", tok.Decode([Id("▁hello"), Id("<0xC3>"), Id("<0xC3>")]));
    }

    [Fact]
    public void MetaspacePreTokenizerMatchesTheNormalizerLayout()
    {
        // Newer Llama 2 / Mistral files: Metaspace pre-tokenizer (prepend_scheme "first", no split)
        // and Metaspace decoder instead of the normalizer and the Replace/Strip decoders.
        var legacy = Load(SentencePieceJson(normalizerLayout: true));
        var metaspace = Load(SentencePieceJson(normalizerLayout: false));
        foreach (var text in new[] { "hello world", "hello é", "héllo 😀 wörld", "two  spaces " })
        {
            Assert.Equal(legacy.Encode(text), metaspace.Encode(text));
            Assert.Equal(text, metaspace.Decode(metaspace.Encode(text)));
        }
        // Text that starts with a space gets no extra ▁ here (it does in the legacy layout), and the
        // Metaspace decoder drops every ▁ of the first token: HF loses that space too.
        Assert.NotEqual(legacy.Encode(" x"), metaspace.Encode(" x"));
        // "first": no ▁ is prepended after a special token.
        Assert.Equal([1, metaspace.TokenToId("h")!.Value, metaspace.TokenToId("ello")!.Value], metaspace.Encode("<s>hello"));
    }

    // ---- helpers -------------------------------------------------------------------------------------

    private static string OnigurumaPatternProbe(string pattern) => OnigurumaPattern.ToDotNet(pattern);

    private static JsonObject NoRegexByteLevel() => new() { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = false };

    private static JsonObject Sequence(params JsonNode[] steps) => new() { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(steps) };

    // Left-to-right merges that build every prefix of the text's byte chars: "abc" -> [a,b], [ab,c].
    private static string[][] AllPairMerges(string text)
    {
        string chars = ByteChars(text);
        var merges = new List<string[]>();
        for (int i = 1; i < chars.Length; i++) merges.Add([chars[..i], chars[i].ToString()]);
        return [.. merges];
    }

    // A tiny SentencePiece-style BPE: <unk> <s> </s>, the 256 byte tokens, then pieces built by merges.
    private static JsonObject SentencePieceJson(bool normalizerLayout)
    {
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int b = 0; b < 256; b++) vocab[$"<0x{b:X2}>"] = 3 + b;
        int next = 259;
        foreach (var piece in new[] { "▁", "h", "e", "l", "o", "w", "r", "d", "ö", "\n" }) vocab[piece] = next++;
        string[][] merges = [["▁", "h"], ["l", "l"], ["e", "ll"], ["ell", "o"], ["▁h", "ello"], ["▁", "w"]];
        foreach (var m in merges) vocab[m[0] + m[1]] = next++;

        JsonNode Pattern(string s) => new JsonObject { ["String"] = s };
        var json = new JsonObject
        {
            ["added_tokens"] = new JsonArray(Added(0, "<unk>", special: true), Added(1, "<s>", special: true), Added(2, "</s>", special: true)),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["unk_token"] = "<unk>", ["fuse_unk"] = true, ["byte_fallback"] = true,
                ["vocab"] = vocab, ["merges"] = new JsonArray(merges.Select(m => (JsonNode)(m[0] + " " + m[1])).ToArray()),
            },
        };
        if (normalizerLayout)
        {
            json["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = Pattern(" "), ["content"] = "▁" }),
            };
            json["pre_tokenizer"] = null;
            json["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = Pattern("▁"), ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            };
        }
        else
        {
            json["normalizer"] = null;
            json["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false };
            json["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Metaspace", ["replacement"] = "▁", ["prepend_scheme"] = "first", ["split"] = false },
                    new JsonObject { ["type"] = "Fuse" }),
            };
        }
        return json;
    }
}
