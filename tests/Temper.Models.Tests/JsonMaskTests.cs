// The JSON constraint's token mask against brute force: over a real byte-level vocabulary (the qwen2-tiny
// fixture's) plus tokens that span several JSON tokens ("},{" ...) or cut a UTF-8 char in two, a token is
// allowed iff appending its bytes keeps the output a valid prefix, and EOS iff the output is complete; at
// every prefix of documents for json_object and for schemas (limited strings, enums, anyOf forks).
using System.Text;
using Temper.Models.Constrained;
using Temper.Models.Text;

namespace Temper.Tests;

public class JsonMaskTests
{
    private static readonly Lazy<TokenVocabulary> Vocab = new(() =>
    {
        var tok = HfTokenizer.Load(Fixtures.Hf("qwen2-tiny"));
        var tokens = Enumerable.Range(0, tok.IdLimit).Select(tok.TokenBytes).ToList();
        string[] extra = ["{\"", "\":\"", "\"},{\"", "\", \"", "\"}", "1,", " {\n  \"", "true", "null,", new string(' ', 12), new string(' ', 13),
            "\"\\", "\\u00", "\\ud8", "e+", "-0.", "]}", "}]", "[{\"", "\":", "ab\"", "\":[", "Grün\"", "\"re", "red\"", "\n", "abcdefgh", "abcdefghijklmnop"];
        tokens.AddRange(extra.Select(Encoding.UTF8.GetBytes));
        tokens.Add([0xC3]);                // the first half of é
        tokens.Add([0xA9, (byte)'"']);     // its second half, then a closing quote
        tokens.Add([0xF0, 0x9F]);          // half of 😀
        tokens.Add([0x98, 0x80, (byte)'a']);
        tokens.Add([]);                    // an empty token: never allowed
        return new TokenVocabulary(tokens, [2]); // <|im_end|>
    });

    private static void CheckEveryPrefix(JsonConstraint c, string doc)
    {
        var v = c.Vocabulary;
        var s = c.Start();
        var bytes = Encoding.UTF8.GetBytes(doc);
        for (int i = 0; i <= bytes.Length; i++)
        {
            var mask = s.Allowed();
            for (int id = 0; id < v.Size; id++)
            {
                bool allowed = (mask[id >> 6] & (1UL << id)) != 0;
                bool expected = v.EosIds.Contains(id) ? s.IsComplete : v.Tokens[id] is { } t && s.Clone().TryAdvance(t);
                if (allowed != expected)
                    Assert.Fail($"after '{Encoding.UTF8.GetString(bytes, 0, i)}': token {id} ({(v.Tokens[id] == null ? "-" : Encoding.UTF8.GetString(v.Tokens[id]!))}) allowed={allowed}, brute force says {expected}");
            }
            if (i < bytes.Length) Assert.True(s.TryAdvance(bytes.AsSpan(i, 1)), doc);
        }
        Assert.True(s.IsComplete);
        Assert.True(s.Allows(2));
        if (doc[^1] is '}' or ']' or '"') Assert.Equal(1, Count(s.Allowed()));   // complete and nothing can follow: EOS alone
    }

    private static int Count(ReadOnlySpan<ulong> mask)
    {
        int n = 0;
        foreach (ulong w in mask) n += System.Numerics.BitOperations.PopCount(w);
        return n;
    }

    [Fact]
    public void Json_object_mask_matches_brute_force_at_every_prefix()
    {
        var c = JsonConstraint.ForObject(Vocab.Value);
        foreach (var doc in new[] { "{}", "{\"a\": [1, -0.5e+2, true, null], \"b\": {\"c\": \"é😀\\n\\u00e9\"}}", "{\n  \"k\": \"v\"\n}", "{\"x\":[{\"y\":[]}]}" })
            CheckEveryPrefix(c, doc);
        var rng = new Random(9);
        for (int i = 0; i < 6; i++) CheckEveryPrefix(c, JsonConstraintTests.RandomObject(rng, 0).ToJsonString());
    }

    [Fact]
    public void Schema_masks_match_brute_force_at_every_prefix()
    {
        (string Schema, string Doc)[] cases =
        [
            ("""{"type":"object","properties":{"name":{"type":"string","maxLength":10},"tag":{"enum":["red","Grün","re"]},"n":{"type":"integer"}},"required":["name","n"]}""",
                "{\"name\": \"abcdefgh\", \"tag\": \"Grün\", \"n\": 12}"),
            ("""{"type":"object","properties":{"name":{"type":"string","minLength":3,"maxLength":5}},"required":["name"]}""", "{\"name\":\"é😀x\"}"),
            ("""{"type":"array","items":{"anyOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},{"type":"object","properties":{"ab":{"type":"string"}},"required":["ab"]},{"type":"null"}]},"maxItems":3}""",
                "[{\"ab\":\"x\"}, null, {\"a\":1}]"),
            ("""{"type":["number","string"]}""", "-0.5e+2"),
            ("""{"type":"string"}""", "\"abcdefghijklmnopq\\\"\""),
        ];
        foreach (var (schema, doc) in cases) CheckEveryPrefix(JsonConstraint.ForSchema(Vocab.Value, schema), doc);
    }

    [Fact]
    public void Tokens_spanning_json_tokens_and_split_chars_advance_the_state()
    {
        var v = Vocab.Value;
        int Id(byte[] b) => Enumerable.Range(0, v.Size).Last(i => v.Tokens[i] is { } t && t.AsSpan().SequenceEqual(b));
        var s = JsonConstraint.ForObject(v).Start();
        Assert.False(s.Allows(Id("[{\""u8.ToArray())));   // json_object: an object, not an array
        foreach (var t in new byte[][] { "{\""u8.ToArray(), "ab\""u8.ToArray(), ":"u8.ToArray(), "[{\""u8.ToArray(), "ab\""u8.ToArray(), ":"u8.ToArray(), "\""u8.ToArray(), [0xC3], [0xA9, (byte)'"'], "}]"u8.ToArray(), "}"u8.ToArray() })
        {
            int id = Id(t);
            Assert.True(s.Allows(id), Encoding.UTF8.GetString(t));
            s.Advance(id);
        }
        Assert.True(s.IsComplete);
        Assert.Throws<InvalidOperationException>(() => s.Advance(Id("}"u8.ToArray())));
        s.Advance(2);
        Assert.True(s.Ended);
        Assert.Equal(0, Count(s.Allowed()));
    }
}
