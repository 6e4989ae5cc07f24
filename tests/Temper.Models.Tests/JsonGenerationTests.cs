// Generation with a JSON constraint on the random qwen2-tiny model (its real byte-level tokenizer): greedy and
// sampled, batched (each row keeps its own constraint state), for many seeds. Every output that ends with EOS
// parses and validates against the schema; every other one is a valid prefix; a random model must still
// finish most schema outputs within the token budget. The mask comes before top-k/top-p/min-p; token bytes
// (what the mask walks) concatenate to the decoded text.
using System.Text;
using System.Text.Json;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Constrained;
using Temper.Models.Text;

namespace Temper.Tests;

public class JsonGenerationTests
{
    private static readonly Lazy<LanguageModel> Model = new(() => LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), new CpuBackend()));
    private static readonly Lazy<TokenVocabulary> Vocab = new(() => TokenVocabulary.From(Model.Value.RequireTokenizer(), Model.Value.EosIds()));

    private const string Schema = """
        {"type":"object","properties":{
          "name":{"type":"string","maxLength":6},
          "age":{"type":"integer"},
          "ok":{"type":"boolean"},
          "color":{"enum":["red","green"]},
          "tags":{"type":"array","items":{"type":"string","maxLength":3},"maxItems":2},
          "score":{"type":["number","null"]}},
         "required":["name","age","ok","color"]}
        """;

    private static void Validate(JsonElement e)
    {
        Assert.Equal(JsonValueKind.Object, e.ValueKind);
        var names = e.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal(names.Distinct().Count(), names.Count);
        Assert.Subset(new HashSet<string> { "name", "age", "ok", "color", "tags", "score" }, names.ToHashSet());
        Assert.True(e.GetProperty("name").GetString()!.EnumerateRunes().Count() <= 6);
        Assert.True(e.GetProperty("age").TryGetInt64(out _) || e.GetProperty("age").GetRawText().All(c => c == '-' || char.IsAsciiDigit(c)));
        Assert.Contains(e.GetProperty("ok").ValueKind, new[] { JsonValueKind.True, JsonValueKind.False });
        Assert.Contains(e.GetProperty("color").GetString(), new[] { "red", "green" });
        if (e.TryGetProperty("tags", out var tags))
        {
            Assert.InRange(tags.GetArrayLength(), 0, 2);
            foreach (var t in tags.EnumerateArray()) Assert.True(t.GetString()!.EnumerateRunes().Count() <= 3);
        }
        if (e.TryGetProperty("score", out var score)) Assert.Contains(score.ValueKind, new[] { JsonValueKind.Number, JsonValueKind.Null });
    }

    // Generates one row per seed; returns how many finished with EOS (those parsed and validated).
    private static int GenerateAndCheck(JsonConstraint c, bool greedy, int rows, Action<JsonElement> validate, int maxNewTokens)
    {
        var lm = Model.Value;
        var tok = lm.RequireTokenizer();
        var prompts = Enumerable.Range(0, rows).Select(r => (IReadOnlyList<int>)tok.Encode($"Answer in JSON, case {r}:")).ToArray();
        var sampling = greedy ? new SamplingOptions { Constraint = c } : new SamplingOptions { Greedy = false, Temperature = 1.3f, TopP = 0.95f, Seed = 1234, Constraint = c };
        var results = new Generator(lm.Decoder).Generate(prompts, new GenerationOptions { MaxNewTokens = maxNewTokens, EosIds = lm.EosIds(), Sampling = sampling });
        int finished = 0;
        foreach (var r in results)
        {
            var ids = r.GeneratedIds.ToList();
            if (r.Finish == FinishReason.Eos)
            {
                Assert.Contains(ids[^1], lm.EosIds());
                ids.RemoveAt(ids.Count - 1);
            }
            var bytes = ids.SelectMany(id => Vocab.Value.Tokens[id]!).ToArray();
            string text = Encoding.UTF8.GetString(bytes);
            Assert.Equal(text, tok.Decode(ids, skipSpecialTokens: true));
            Assert.True(c.Start().TryAdvance(bytes), text);   // a valid prefix, whatever the finish
            if (r.Finish != FinishReason.Eos) continue;
            finished++;
            using var doc = JsonDocument.Parse(text);
            validate(doc.RootElement);
        }
        return finished;
    }

    [Fact]
    public void Schema_outputs_parse_and_validate_greedy_and_sampled()
    {
        var c = JsonConstraint.ForSchema(Vocab.Value, Schema);
        var greedyDone = GenerateAndCheck(c, greedy: true, rows: 2, Validate, 120);
        int done = GenerateAndCheck(c, greedy: false, rows: 24, Validate, 120);
        Assert.True(done >= 12, $"only {done} of 24 sampled outputs finished within 120 tokens");
        Assert.True(greedyDone >= 0);
    }

    [Fact]
    public void Json_object_outputs_are_objects_or_valid_prefixes()
    {
        var c = JsonConstraint.ForObject(Vocab.Value);
        GenerateAndCheck(c, greedy: true, rows: 1, e => Assert.Equal(JsonValueKind.Object, e.ValueKind), 40);
        GenerateAndCheck(c, greedy: false, rows: 16, e => Assert.Equal(JsonValueKind.Object, e.ValueKind), 40);
    }

    // The mask comes before top-k/top-p: the model's favourite tokens are not allowed, yet top-k 1 and a tiny top-p
    // still pick the best allowed one (filtering first would leave nothing to pick from).
    [Fact]
    public void The_mask_applies_before_top_k_and_top_p()
    {
        var v = Vocab.Value;
        var c = JsonConstraint.ForObject(v);
        var logits = new float[Model.Value.Config.VocabSize];
        var rng = new Random(4);
        for (int i = 0; i < logits.Length; i++) logits[i] = (float)rng.NextDouble();
        var start = c.Start();
        int bestAllowed = Enumerable.Range(0, logits.Length).Where(start.Allows).MaxBy(i => logits[i]);
        foreach (int i in Enumerable.Range(0, logits.Length).Where(i => !start.Allows(i)).Take(20)) logits[i] = 10 + i; // disallowed favourites
        foreach (var o in new[] { new SamplingOptions { Constraint = c }, new SamplingOptions { Greedy = false, TopK = 1, Constraint = c, Seed = 3 },
            new SamplingOptions { Greedy = false, TopP = 1e-6f, Constraint = c, Seed = 5 }, new SamplingOptions { Greedy = false, MinP = 1f, Constraint = c } })
            Assert.Equal(bestAllowed, new Sampler(o).Next(logits, []));
    }

    // What the mask walks: each token's bytes, whose concatenation is the decoded text (byte-level tokenizers, chars cut across tokens).
    [Theory]
    [InlineData("qwen2-tiny")]
    [InlineData("tok-qwen2")]
    [InlineData("tok-llama3")]
    public void Token_bytes_concatenate_to_the_decoded_text(string name)
    {
        var tok = HfTokenizer.Load(name.StartsWith("tok-", StringComparison.Ordinal) ? Fixtures.Tokenizer(name) : Fixtures.Hf(name));
        const string text = "{\"name\": \"Zoë\", \"city\": \"東京\", \"e\": \"😀\\n\"}\n  ok";
        var ids = tok.Encode(text);
        Assert.Equal(text, Encoding.UTF8.GetString(ids.SelectMany(id => tok.TokenBytes(id)!).ToArray()));
        Assert.Equal(text, tok.Decode(ids));
        if (tok.EosId is int eos && tok.AddedTokens.Values.Contains(eos)) Assert.Null(tok.TokenBytes(eos));   // special: never part of the text
    }

    [Fact]
    public void Each_sampler_keeps_its_own_state_and_ignore_eos_is_refused()
    {
        var c = JsonConstraint.ForSchema(Vocab.Value, """{"enum":["yes","no"]}""");
        var s = new Sampler(new SamplingOptions { Constraint = c });
        var flat = new float[Model.Value.Config.VocabSize];
        var picked = new List<int>();
        for (int i = 0; i < 8 && !s.Constraint!.Ended; i++) picked.Add(s.Next(flat, []));
        string text = Encoding.UTF8.GetString(picked.Where(id => !Vocab.Value.EosIds.Contains(id)).SelectMany(id => Vocab.Value.Tokens[id]!).ToArray());
        Assert.Contains(text, new[] { "\"yes\"", "\"no\"" });
        Assert.True(s.Constraint!.Ended);
        Assert.True(new Sampler(new SamplingOptions { Constraint = c }).Constraint!.Allows(Vocab.Value.Tokens.ToList().FindIndex(t => t is [(byte)'"'])));
        var e = Assert.Throws<TemperException>(() => new Generator(Model.Value.Decoder).Generate([[5, 6]],
            new GenerationOptions { IgnoreEos = true, Sampling = new SamplingOptions { Constraint = c } }));
        Assert.Contains("--ignore-eos", e.Message, StringComparison.Ordinal);
    }
}
