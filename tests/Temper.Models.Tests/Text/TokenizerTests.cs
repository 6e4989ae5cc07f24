// HfTokenizer against the shared fixtures: every reference id list exact (made by HF tokenizers),
// decode(encode(text)) == text, special tokens in text, bos/eos/pad names, and bad-input messages.
using System.Text.Json;
using Temper.Core;
using Temper.Models.Text;

namespace Temper.Tests.Text;

public class TokenizerTests
{
    public static TheoryData<string> ModelDirs => new() { Fixtures.Hf("llama-tiny"), Fixtures.Hf("qwen2-tiny") };

    public static TheoryData<string> TokenizerDirs => new() { Fixtures.Tokenizer("tok-llama3"), Fixtures.Tokenizer("tok-qwen2") };

    public static TheoryData<string> AllDirs => new()
    {
        Fixtures.Hf("llama-tiny"), Fixtures.Hf("qwen2-tiny"), Fixtures.Tokenizer("tok-llama3"), Fixtures.Tokenizer("tok-qwen2"),
    };

    [Theory]
    [MemberData(nameof(AllDirs))]
    public void ReferenceTokenizeCasesAreExact(string dir)
    {
        var tok = HfTokenizer.Load(dir);
        var cases = ReadTokenizeCases(dir);
        Assert.NotEmpty(cases);
        foreach (var (text, ids) in cases)
        {
            var got = tok.Encode(text);
            Assert.True(ids.SequenceEqual(got), $"{Path.GetFileName(dir)}: {JsonSerializer.Serialize(text)} -> [{string.Join(",", got)}], want [{string.Join(",", ids)}]");
        }
    }

    [Theory]
    [MemberData(nameof(AllDirs))]
    public void DecodeInvertsEncode(string dir)
    {
        var tok = HfTokenizer.Load(dir);
        var texts = ReadTokenizeCases(dir).Select(c => c.Text).Concat(ReadTemplateTexts(dir)).ToList();
        Assert.True(texts.Count >= 5);
        foreach (var text in texts) Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Theory]
    [MemberData(nameof(TokenizerDirs))]
    public void RenderedChatTemplateIdsAreExact(string dir)
    {
        var tok = HfTokenizer.Load(dir);
        var template = ReadReference(dir).GetProperty("chat_template");
        string text = template.GetProperty("text_with_generation_prompt").GetString()!;
        var want = template.GetProperty("ids_with_generation_prompt").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(want, tok.Encode(text));
    }

    [Theory]
    [MemberData(nameof(ModelDirs))]
    public void SpecialTokensInTextAreSingleIds(string dir)
    {
        var tok = HfTokenizer.Load(dir);
        Assert.Equal(1, tok.AddedTokens["<|im_start|>"]);
        Assert.Equal(2, tok.AddedTokens["<|im_end|>"]);
        var ids = tok.Encode("<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
        Assert.Equal([1, .. tok.Encode("user\nWhat is 2+2?"), 2, .. tok.Encode("\n")], ids);
        Assert.Equal([1], tok.Encode("<|im_start|>"));
        // A special glued to words on both sides still wins over the BPE pieces around it.
        Assert.Equal([.. tok.Encode("ab"), 0, .. tok.Encode("cd")], tok.Encode("ab<|endoftext|>cd"));

        string rendered = ReadReference(dir).GetProperty("chat_template").GetProperty("text").GetString()!;
        var renderedIds = tok.Encode(rendered);
        Assert.Equal(3, renderedIds.Count(id => id == 1));
        Assert.Equal(3, renderedIds.Count(id => id == 2));
        Assert.Equal("system\nYou are terse.\nuser\nWhat is 2+2?\nassistant\n4\n", tok.Decode(renderedIds, skipSpecialTokens: true));
    }

    [Fact]
    public void Llama3HeadersAreSpecialIds()
    {
        var tok = HfTokenizer.Load(Fixtures.Tokenizer("tok-llama3"));
        var ids = tok.Encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
        Assert.Equal([0, 2, .. tok.Encode("user"), 3, .. tok.Encode("\n\nHi"), 4], ids);
    }

    [Fact]
    public void SpecialTokenIdsComeFromTokenizerConfig()
    {
        var llama = HfTokenizer.Load(Fixtures.Hf("llama-tiny"));
        Assert.Equal((1, 2, 0), (llama.BosId, llama.EosId, llama.PadId));
        var llama3 = HfTokenizer.Load(Fixtures.Tokenizer("tok-llama3"));
        Assert.Equal((0, 4, (int?)null), (llama3.BosId, llama3.EosId, llama3.PadId));
        var qwen2 = HfTokenizer.Load(Fixtures.Tokenizer("tok-qwen2"));
        Assert.Equal(((int?)null, 2, 0), (qwen2.BosId, qwen2.EosId, qwen2.PadId)); // "bos_token": null
    }

    [Fact]
    public void VocabSizeCountsAddedTokensOnce()
    {
        Assert.Equal(512, HfTokenizer.Load(Fixtures.Hf("llama-tiny")).VocabSize);
        Assert.Equal(1150, HfTokenizer.Load(Fixtures.Tokenizer("tok-llama3")).VocabSize);
        Assert.Equal(1200, HfTokenizer.Load(Fixtures.Tokenizer("tok-qwen2")).VocabSize);
    }

    [Fact]
    public void TokenLookupsAndDisplayStrings()
    {
        var tok = HfTokenizer.Load(Fixtures.Hf("qwen2-tiny"));
        int the = tok.TokenToId("Ġthe") ?? throw new InvalidOperationException("no Ġthe");
        Assert.Equal(" the", tok.TokenToString(the));
        Assert.Equal("<|im_start|>", tok.TokenToString(1));
        Assert.Equal(1, tok.TokenToId("<|im_start|>"));
        Assert.Null(tok.TokenToId("no such token"));
        // 'ä' is byte 0xE4 alone, the first byte of a three-byte char: shown as a byte.
        Assert.Equal("<0xE4>", tok.TokenToString(tok.TokenToId("ä")!.Value));
        Assert.Equal("\n", tok.TokenToString(tok.TokenToId("Ċ")!.Value));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.TokenToString(100_000));
    }

    [Fact]
    public void DecodeSkipsSpecialsOnRequestAndMendsBrokenUtf8LikeHf()
    {
        var tok = HfTokenizer.Load(Fixtures.Tokenizer("tok-qwen2"));
        var ids = tok.Encode("<|im_start|>user\ncafé<|im_end|>");
        Assert.Equal("<|im_start|>user\ncafé<|im_end|>", tok.Decode(ids));
        Assert.Equal("user\ncafé", tok.Decode(ids, skipSpecialTokens: true));
        // The first byte of 'é' alone is not UTF-8: one U+FFFD, as String::from_utf8_lossy writes.
        int c3 = tok.TokenToId("Ã")!.Value;
        Assert.Equal("caf\uFFFD", tok.Decode([.. tok.Encode("caf"), c3]));
        Assert.Equal("ok", tok.Decode([.. tok.Encode("ok"), 99_999])); // unknown ids are skipped, as in HF
    }

    [Fact]
    public void MissingFolderOrFileNamesTheFile()
    {
        string dir = Path.Combine(Path.GetTempPath(), "temper-no-such-tokenizer-" + Guid.NewGuid().ToString("N"));
        var e = Assert.Throws<TemperException>(() => HfTokenizer.Load(dir));
        Assert.Contains(Path.Combine(dir, "tokenizer.json"), e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void MalformedJsonNamesTheFileAndLine()
    {
        var e = Assert.Throws<TemperException>(() => TinyTokenizerJson.LoadText("{\n  \"model\": {\"type\": \"BPE\",\n  oops }\n}"));
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("malformed JSON at line 3", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData("""{"model": {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a"}}""", "model type 'WordPiece' is not supported")]
    [InlineData("""{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}""", "model type 'Unigram' is not supported")]
    [InlineData("""{"added_tokens": []}""", "no 'model' object")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "BertPreTokenizer"}}""", "pre_tokenizer 'BertPreTokenizer' is not supported")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}}""", "normalizer 'Precompiled' is not supported")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "WordPiece"}}""", "decoder 'WordPiece' is not supported")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}""", "BPE model is inconsistent")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]}}""", "model.merges[0]")]
    [InlineData("""{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\p{Han}+"}, "behavior": "Isolated", "invert": false}}""", "not readable by .NET")]
    public void UnsupportedContentNamesTheFileAndTheProblem(string json, string problem)
    {
        var e = Assert.Throws<TemperException>(() => TinyTokenizerJson.LoadText(json));
        Assert.Contains("tokenizer.json: ", e.Message);
        Assert.Contains(problem, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void ConfigNamingAnUnknownTokenIsReported()
    {
        var e = Assert.Throws<TemperException>(() => TinyTokenizerJson.LoadText(
            """{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""", """{"eos_token": "</s>"}"""));
        Assert.Contains("tokenizer_config.json: eos_token '</s>' is not a token", e.Message);
    }

    [Fact]
    public void MalformedTokenizerConfigNamesThatFile()
    {
        var e = Assert.Throws<TemperException>(() => TinyTokenizerJson.LoadText(
            """{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}""", """{"eos_token": """));
        Assert.Contains("tokenizer_config.json: malformed JSON", e.Message);
    }

    private static JsonElement ReadReference(string dir) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "reference.json"))).RootElement;

    private static List<(string Text, int[] Ids)> ReadTokenizeCases(string dir) =>
        ReadReference(dir).GetProperty("tokenize").EnumerateArray()
            .Select(c => (c.GetProperty("text").GetString()!, c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray()))
            .ToList();

    private static IEnumerable<string> ReadTemplateTexts(string dir)
    {
        var template = ReadReference(dir).GetProperty("chat_template");
        foreach (var key in new[] { "text", "text_with_generation_prompt" })
            if (template.TryGetProperty(key, out var t)) yield return t.GetString()!;
    }
}

public class TokenizerArchitectureTests
{
    [Fact]
    public void Qwen2_folders_split_digits_as_transformers5_does()
    {
        // tokenizer.json of qwen2-tiny has a plain ByteLevel pre-tokenizer and a "1 0" merge; transformers 5's
        // Qwen2Tokenizer splits numbers digit by digit, and so does Temper for a qwen2 model folder.
        var qwen = Temper.Models.Text.HfTokenizer.Load(Fixtures.Hf("qwen2-tiny"));
        Assert.Equal(3, qwen.Encode("104").Count);
        string dir = Directory.CreateTempSubdirectory("temper-tok-").FullName;
        File.Copy(Path.Combine(Fixtures.Hf("qwen2-tiny"), "tokenizer.json"), Path.Combine(dir, "tokenizer.json"));
        var plain = Temper.Models.Text.HfTokenizer.Load(dir); // no config.json: tokenizer.json as written
        Assert.Equal(2, plain.Encode("104").Count);
        Directory.Delete(dir, true);
    }
}
