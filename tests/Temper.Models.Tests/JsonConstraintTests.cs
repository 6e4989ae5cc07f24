// The JSON constraint's automaton on byte strings: valid documents are accepted at every prefix and complete
// at the end, invalid ones are refused at the first wrong byte; every schema keyword with instances that
// pass and fail; unsupported keywords refused by name; random documents (compact and indented) accepted,
// and random mutations accepted only when System.Text.Json parses them.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Constrained;

namespace Temper.Tests;

public class JsonConstraintTests
{
    // One token per byte, plus EOS (id 256).
    internal static readonly TokenVocabulary Bytes = new(Enumerable.Range(0, 256).Select(b => (byte[]?)[(byte)b]).Append(null).ToArray(), [256]);

    // Whether the text is a valid prefix (and whether it is complete).
    private static (bool Prefix, bool Complete) Run(JsonConstraint c, string text) => Run(c, Encoding.UTF8.GetBytes(text));

    private static (bool Prefix, bool Complete) Run(JsonConstraint c, byte[] bytes)
    {
        var s = c.Start();
        foreach (byte b in bytes)
            if (!s.TryAdvance([b])) return (false, false);
        return (true, s.IsComplete);
    }

    private static JsonConstraint Schema(string schema) => JsonConstraint.ForSchema(Bytes, schema);

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"a\":1}")]
    [InlineData("{\"a\": [1, -2.5e+3, 0, 0.0, 1E9, true, false, null, \"x\"], \"b\": {\"c\": {}}}")]
    [InlineData("{\n  \"k\": \"v\",\n  \"n\": []\n}")]
    [InlineData(" {\"esc\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uFFFF\"}")]
    [InlineData("{\"é\":\"日本語 ✓ 😀\"}")]
    [InlineData("{\"a\":-0}")]
    [InlineData("{\"a\":\"\\uD83D\\uDE00\"}")] // a surrogate pair
    public void Json_object_accepts_valid_objects(string text)
    {
        var c = JsonConstraint.ForObject(Bytes);
        Assert.Equal((true, true), Run(c, text));
        using var _ = JsonDocument.Parse(text);
    }

    [Theory]
    [InlineData("[1]")]               // not an object
    [InlineData("\"x\"")]
    [InlineData("{\"a\" 1}")]
    [InlineData("{,}")]
    [InlineData("{\"a\":1,}")]
    [InlineData("{\"a\":01}")]
    [InlineData("{\"a\":1.}")]
    [InlineData("{\"a\":.5}")]
    [InlineData("{\"a\":+1}")]
    [InlineData("{\"a\":1e}")]
    [InlineData("{\"a\":tru}")]
    [InlineData("{\"a\":\"\t\"}")]      // a raw control char in a string
    [InlineData("{\"a\":\"\\x\"}")]
    [InlineData("{\"a\":\"\\ud800\"}")] // a surrogate half
    [InlineData("{\"a\":\"\\udc00\"}")]
    [InlineData("{\"a\":\"\\ud800\\u0041\"}")]
    [InlineData("{\"a\":\"\\u00g0\"}")]
    [InlineData("{} ")]               // nothing after the value
    [InlineData("{}{}")]
    [InlineData("{'a':1}")]
    [InlineData("{\"a\":[1 2]}")]
    [InlineData("{a:1}")]
    public void Json_object_refuses_invalid_text(string text)
    {
        var (prefix, complete) = Run(JsonConstraint.ForObject(Bytes), text);
        Assert.False(prefix && complete, text);
    }

    [Fact]
    public void Prefixes_are_accepted_but_not_complete()
    {
        var c = JsonConstraint.ForObject(Bytes);
        foreach (var text in new[] { "", "{", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":[1,", "{\"a\":\"x" })
            Assert.Equal((true, false), Run(c, text));
    }

    [Fact]
    public void Whitespace_runs_are_limited()
    {
        var c = JsonConstraint.ForObject(Bytes);
        Assert.Equal((true, true), Run(c, "{" + new string(' ', 12) + "}"));
        Assert.False(Run(c, "{" + new string(' ', 13) + "}").Prefix);
        Assert.False(Run(c, new string('\n', 13) + "{}").Prefix);
        Assert.Equal((true, true), Run(c, "{\"a\"" + new string(' ', 12) + ":" + new string(' ', 12) + "1" + new string(' ', 12) + "}"));
    }

    [Fact]
    public void Strings_are_checked_as_utf8()
    {
        var c = JsonConstraint.ForObject(Bytes);
        byte[] Doc(params byte[] inner) => [.. "{\"a\":\""u8.ToArray(), .. inner, .. "\"}"u8.ToArray()];
        Assert.True(Run(c, Doc(0xC3, 0xA9)).Complete);                 // é
        Assert.True(Run(c, Doc(0xF0, 0x9F, 0x98, 0x80)).Complete);     // 😀
        Assert.False(Run(c, Doc(0x80)).Prefix);                        // a stray continuation byte
        Assert.False(Run(c, Doc(0xC0, 0x80)).Prefix);                  // overlong
        Assert.False(Run(c, Doc(0xE0, 0x80, 0x80)).Prefix);            // overlong
        Assert.False(Run(c, Doc(0xED, 0xA0, 0x80)).Prefix);            // a surrogate
        Assert.False(Run(c, Doc(0xF4, 0x90, 0x80, 0x80)).Prefix);      // past U+10FFFF
        Assert.False(Run(c, Doc(0xC3, (byte)'"')).Prefix);              // a char cut short
        Assert.False(Run(c, Doc(0xFF)).Prefix);
    }

    // (schema, instances that must pass, instances that must fail)
    public static TheoryData<string, string[], string[]> Keywords => new()
    {
        { """{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string"}},"required":["a","b"]}""",
            ["{\"a\":1,\"b\":\"x\"}", "{ \"a\" : -12 , \"b\" : \"\" }"], ["{\"b\":\"x\",\"a\":1}", "{\"a\":1}", "{\"a\":1.5,\"b\":\"x\"}", "{\"a\":1,\"b\":\"x\",\"c\":1}", "{}"] },
        { """{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"boolean"},"c":{"type":"null"}},"required":["b"]}""",
            ["{\"b\":true}", "{\"a\":1,\"b\":false}", "{\"b\":true,\"c\":null}", "{\"a\":0,\"b\":true,\"c\":null}"], ["{}", "{\"a\":1}", "{\"c\":null,\"b\":true}", "{\"b\":1}"] },
        { """{"type":"object","properties":{"x":{"type":"number"}},"additionalProperties":false}""",
            ["{}", "{\"x\":1.5e-3}"], ["{\"y\":1}", "{\"x\":\"1\"}"] },
        { """{"type":"object","additionalProperties":{"type":"integer"}}""", ["{}", "{\"any\":1,\"key\":2}"], ["{\"a\":\"x\"}"] },
        { """{"type":"object"}""", ["{}", "{\"a\":[{\"b\":null}]}"], ["[]"] },
        { """{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3}""", ["[1]", "[1,2,3]", "[ 1 , 2 ]"], ["[]", "[1,2,3,4]", "[1.5]", "[\"a\"]"] },
        { """{"type":"array"}""", ["[]", "[1,\"a\",{},[]]"], ["{}"] },
        { """{"type":"string","minLength":2,"maxLength":3}""", ["\"ab\"", "\"abc\"", "\"é😀\"", "\"\\n\\u0041\""], ["\"a\"", "\"abcd\"", "\"é😀x1\""] },
        { """{"type":"string","enum":["red","green","Grün"]}""", ["\"red\"", "\"green\"", "\"Grün\""], ["\"blue\"", "\"re\"", "\"redd\""] },
        { """{"enum":[1,12,"a",null,true,{"k":[1,2]}]}""", ["1", "12", "\"a\"", "null", "true", "{\"k\":[1,2]}"], ["2", "123", "false", "{\"k\":[1]}"] },
        { """{"const":"fixed"}""", ["\"fixed\""], ["\"fixe\"", "\"other\""] },
        { """{"type":"integer"}""", ["0", "-7", "123"], ["1.0", "1e3", "01", "-"] },
        { """{"type":"number"}""", ["0", "-7.25", "1e3", "2E-2"], ["1.", ".5", "--1"] },
        { """{"type":"boolean"}""", ["true", "false"], ["null", "1"] },
        { """{"type":"null"}""", ["null"], ["0"] },
        { """{"type":["string","null"],"maxLength":2}""", ["\"ab\"", "null"], ["\"abc\"", "1"] },
        { """{"anyOf":[{"type":"integer"},{"type":"number"},{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},{"type":"object","properties":{"b":{"type":"string"}},"required":["b"]}]}""",
            ["1", "1.5", "{\"a\":1}", "{\"b\":\"x\"}"], ["\"x\"", "{\"a\":\"x\"}", "{}", "{\"c\":1}"] },
        { """{"oneOf":[{"type":"string"},{"type":"boolean"}]}""", ["\"x\"", "false"], ["1"] },
        { """{"$defs":{"P":{"type":"object","properties":{"n":{"type":"string"}},"required":["n"]}},"type":"object","properties":{"p":{"$ref":"#/$defs/P"},"q":{"type":"array","items":{"$ref":"#/$defs/P"}}},"required":["p","q"]}""",
            ["{\"p\":{\"n\":\"a\"},\"q\":[{\"n\":\"b\"}]}"], ["{\"p\":{\"n\":1},\"q\":[]}", "{\"p\":{},\"q\":[]}"] },
        { """{"definitions":{"Leaf":{"type":"integer"}},"type":"array","items":{"$ref":"#/definitions/Leaf"}}""", ["[1,2]"], ["[\"a\"]"] },
        { """{"$defs":{"T":{"type":"object","properties":{"v":{"type":"integer"},"kids":{"type":"array","items":{"$ref":"#/$defs/T"}}},"required":["v"]}},"$ref":"#/$defs/T"}""",
            ["{\"v\":1,\"kids\":[{\"v\":2,\"kids\":[{\"v\":3}]}]}"], ["{\"v\":1,\"kids\":[{}]}"] },
        { """{"title":"t","description":"d","type":"integer","default":3,"examples":[1]}""", ["5"], ["\"5\""] },
        { """{}""", ["1", "\"s\"", "[]", "{\"a\":null}"], ["nul", "{a}"] },
    };

    [Theory]
    [MemberData(nameof(Keywords))]
    public void Schema_keywords_accept_and_refuse(string schema, string[] valid, string[] invalid)
    {
        var c = Schema(schema);
        foreach (var v in valid) Assert.True(Run(c, v) == (true, true), $"{schema} should accept {v}");
        foreach (var v in invalid) Assert.False(Run(c, v) == (true, true), $"{schema} should refuse {v}");
    }

    [Theory]
    [InlineData("""{"type":"string","pattern":"^a"}""", "'pattern'")]
    [InlineData("""{"type":"string","format":"date-time"}""", "'format'")]
    [InlineData("""{"type":"integer","minimum":0}""", "'minimum'")]
    [InlineData("""{"allOf":[{"type":"integer"}]}""", "'allOf'")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":true}""", "'additionalProperties'")]
    [InlineData("""{"$ref":"https://example.com/s.json"}""", "only references inside the schema")]
    [InlineData("""{"$ref":"#/$defs/Missing"}""", "points at nothing")]
    [InlineData("""{"$defs":{"A":{"anyOf":[{"$ref":"#/$defs/A"},{"type":"null"}]}},"$ref":"#/$defs/A"}""", "recursion")]
    [InlineData("""{"type":"strin"}""", "unknown type 'strin'")]
    [InlineData("""{"type":"object","required":["x"]}""", "required property 'x'")]
    [InlineData("""{"type":"array","minItems":3,"maxItems":2}""", "minItems")]
    [InlineData("""{"type":"object","properties":{"a":{"type":"string","uniqueItems":true}}}""", "'uniqueItems'")]
    [InlineData("""[1]""", "must be an object")]
    [InlineData("""{"type": }""", "not valid JSON")]
    public void Unsupported_or_bad_schemas_are_refused_by_name(string schema, string message)
    {
        var e = Assert.Throws<TemperException>(() => Schema(schema));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Random_documents_are_accepted_and_mutations_only_when_they_parse()
    {
        var c = JsonConstraint.ForObject(Bytes);
        var rng = new Random(5);
        int accepted = 0;
        for (int i = 0; i < 300; i++)
        {
            var doc = RandomObject(rng, 0);
            foreach (bool indented in new[] { false, true })
            {
                string text = doc.ToJsonString(new JsonSerializerOptions { WriteIndented = indented, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
                Assert.True(Run(c, text) == (true, true), text);
            }
            var bytes = Encoding.UTF8.GetBytes(doc.ToJsonString());
            for (int m = 0; m < 10; m++)
            {
                var mutated = bytes.ToList();
                int at = rng.Next(mutated.Count);
                switch (rng.Next(3))
                {
                    case 0: mutated.RemoveAt(at); break;
                    case 1: mutated.Insert(at, Noise[rng.Next(Noise.Length)]); break;
                    default: mutated[at] = Noise[rng.Next(Noise.Length)]; break;
                }
                if (Run(c, [.. mutated]) != (true, true)) continue;
                accepted++;
                using var parsed = JsonDocument.Parse(mutated.ToArray()); // throws if the automaton accepted invalid JSON
                Assert.Equal(JsonValueKind.Object, parsed.RootElement.ValueKind);
            }
        }
        Assert.True(accepted > 50, $"only {accepted} mutations were valid JSON; the check is weak");
    }

    private static readonly byte[] Noise = "{}[]\",:0-.e\\ tnu"u8.ToArray();

    internal static JsonObject RandomObject(Random rng, int depth)
    {
        var o = new JsonObject();
        int n = rng.Next(depth > 2 ? 2 : 4);
        for (int i = 0; i < n; i++) o[RandomString(rng) + i] = RandomValue(rng, depth + 1);
        return o;
    }

    private static JsonNode? RandomValue(Random rng, int depth) => rng.Next(depth > 2 ? 6 : 8) switch
    {
        0 => JsonValue.Create(rng.Next(-1000, 1000)),
        1 => JsonValue.Create(Math.Round(rng.NextDouble() * 100 - 50, 3)),
        2 => JsonValue.Create(RandomString(rng)),
        3 => JsonValue.Create(rng.Next(2) == 0),
        4 => null,
        5 => JsonValue.Create(1e-7 * rng.Next(1, 9)),
        6 => RandomObject(rng, depth),
        _ => new JsonArray(Enumerable.Range(0, rng.Next(3)).Select(_ => RandomValue(rng, depth + 1)).ToArray()),
    };

    private static string RandomString(Random rng)
    {
        const string chars = "abcXYZ09 _-\"\\/\n\té日😀";
        var sb = new StringBuilder();
        int n = rng.Next(5);
        for (int i = 0; i < n; i++)
        {
            int k = rng.Next(chars.Length);
            if (char.IsHighSurrogate(chars[k])) sb.Append(chars, k, 2);
            else if (!char.IsLowSurrogate(chars[k])) sb.Append(chars[k]);
        }
        return sb.ToString();
    }
}
