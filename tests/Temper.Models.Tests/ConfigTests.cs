// config.json parsing: both transformers forms, explicit head_dim, RoPE scaling variants, and one
// test per refused input asserting the one-line message names config.json and the field.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;

namespace Temper.Tests;

public class ConfigTests
{
    private static JsonObject Base() => JsonNode.Parse("""
        {"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":64,"intermediate_size":160,
         "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":512,
         "rms_norm_eps":1e-5,"tie_word_embeddings":true,"rope_theta":10000.0,"eos_token_id":[2,3]}
        """)!.AsObject();

    private static ModelConfig Parse(JsonObject o) => ModelConfig.Parse(o, "/m/config.json");

    private static string Fails(JsonObject o) => Assert.Throws<TemperException>(() => Parse(o)).Message;

    [Fact]
    public void Fixture_configs_load()
    {
        var llama = ModelConfig.Load(Fixtures.Hf("llama-tiny"));
        Assert.Equal(("llama", 16, 2, true, false), (llama.ModelType, llama.HeadDim, llama.NumKvHeads, llama.TieWordEmbeddings, llama.AttentionBias));
        var qwen = ModelConfig.Load(Fixtures.Hf("qwen2-tiny"));
        Assert.Equal(("qwen2", 1e6, false, true), (qwen.ModelType, qwen.Rope.Theta, qwen.TieWordEmbeddings, qwen.AttentionBias));
    }

    [Fact]
    public void Transformers4_form_and_eos_list()
    {
        var c = Parse(Base());
        Assert.Equal(new RopeSpec("default", 10000), c.Rope);
        Assert.Equal([2, 3], c.EosTokenIds);
        Assert.Equal(16, c.HeadDim);
    }

    [Fact]
    public void Explicit_head_dim_wins_as_in_mistral_nemo()
    {
        var o = Base();
        o["model_type"] = "mistral";
        o["hidden_size"] = 5120; o["num_attention_heads"] = 32; o["num_key_value_heads"] = 8; o["head_dim"] = 128;
        Assert.Equal(128, Parse(o).HeadDim);
    }

    [Fact]
    public void Linear_scaling_in_both_spellings()
    {
        var o = Base();
        o["rope_scaling"] = JsonNode.Parse("""{"type":"linear","factor":4.0}""");
        var f = Parse(o).Rope.Frequencies(16).InvFreq;
        var d = RopeFrequencies.DefaultInvFreq(16, 10000);
        for (int i = 0; i < f.Length; i++) Assert.Equal(d[i] / 4f, f[i], 6);
        o["rope_scaling"] = JsonNode.Parse("""{"rope_type":"linear","factor":4.0}""");
        Assert.Equal("linear", Parse(o).Rope.Type);
    }

    [Fact]
    public void Llama3_scaling_follows_the_published_formula()
    {
        var o = Base();
        o.Remove("rope_theta");
        o["rope_parameters"] = JsonNode.Parse("""{"rope_type":"llama3","rope_theta":500000.0,"factor":32.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}""");
        var f = Parse(o).Rope.Frequencies(64).InvFreq;
        var d = RopeFrequencies.DefaultInvFreq(64, 500000);
        // Highest frequencies (short wavelengths) are untouched, the lowest are divided by the factor.
        Assert.Equal(d[0], f[0]);
        Assert.Equal(d[^1] / 32f, f[^1], 9);
        // In the band between, the value lies between the two.
        int mid = Enumerable.Range(0, d.Length).First(i => 2 * Math.PI / d[i] > 8192 / 4.0 && 2 * Math.PI / d[i] < 8192);
        Assert.InRange(f[mid], d[mid] / 32f, d[mid]);
    }

    [Fact]
    public void Unknown_architecture_is_refused_by_name()
    {
        var o = Base();
        o["model_type"] = "gpt2"; o["architectures"] = new JsonArray("GPT2LMHeadModel");
        var m = Fails(o);
        Assert.Contains("/m/config.json", m);
        Assert.Contains("gpt2", m);
    }

    [Theory]
    [InlineData("dynamic")]
    [InlineData("longrope")]
    public void Unsupported_rope_type_is_refused_by_name(string type)
    {
        var o = Base();
        o["rope_scaling"] = JsonNode.Parse($$"""{"rope_type":"{{type}}","factor":2.0}""");
        var m = Fails(o);
        Assert.Contains($"unsupported RoPE type '{type}'", m);
        Assert.Contains("config.json", m);
    }

    [Theory]
    [InlineData("hidden_size")]
    [InlineData("num_hidden_layers")]
    [InlineData("vocab_size")]
    [InlineData("model_type")]
    public void Missing_field_is_named(string field)
    {
        var o = Base();
        o.Remove(field);
        Assert.Equal($"/m/config.json: missing field '{field}'", Fails(o));
    }

    [Fact]
    public void Wrong_types_and_bad_head_counts_are_named()
    {
        var o = Base();
        o["hidden_size"] = "big";
        Assert.Contains("field 'hidden_size' must be an integer", Fails(o));
        o = Base();
        o["num_key_value_heads"] = 3;
        Assert.Contains("not a multiple of num_key_value_heads 3", Fails(o));
        o = Base();
        o["rope_scaling"] = JsonNode.Parse("""{"rope_type":"llama3","factor":8.0}""");
        Assert.Contains("missing 'low_freq_factor'", Fails(o));
    }

    [Fact]
    public void Malformed_json_names_the_file()
    {
        string dir = Directory.CreateTempSubdirectory("temper-cfg-").FullName;
        File.WriteAllText(Path.Combine(dir, "config.json"), "{\"model_type\": ");
        var m = Assert.Throws<TemperException>(() => ModelConfig.Load(dir)).Message;
        Assert.StartsWith(Path.Combine(dir, "config.json") + ": malformed JSON", m);
        Directory.Delete(dir, true);
    }
}
