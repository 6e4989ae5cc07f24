// YaRN RoPE scaling: inverse frequencies and attention factor parsed from both config forms against
// YarnReference (transformers' _compute_yarn_parameters evaluated in float64), for a Qwen3-style config
// (factor 4 over 32768), DeepSeek-style mscale/mscale_all_dim, beta and truncate overrides; the tiny
// Qwen3 with yarn (Qwen3Tiny.YarnFolder) against the float64 forward, padded and through the KV cache;
// the CUDA decode graph's tables carrying the attention factor; and the refusals (bad fields, dynamic,
// longrope) as one line naming config.json and the field.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Kernels.Cuda;
using Temper.Models;

namespace Temper.Tests;

public class YarnTests
{
    // A Qwen3-8B-shaped config (head_dim 128, theta 1e6, 40960 positions) in the transformers-4 form.
    private static JsonObject Qwen3(string scaling)
    {
        var o = JsonNode.Parse("""
            {"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","hidden_size":4096,"intermediate_size":12288,
             "num_hidden_layers":36,"num_attention_heads":32,"num_key_value_heads":8,"head_dim":128,"vocab_size":151936,
             "max_position_embeddings":40960,"rms_norm_eps":1e-6,"tie_word_embeddings":false,"rope_theta":1000000.0}
            """)!.AsObject();
        o["rope_scaling"] = JsonNode.Parse(scaling);
        return o;
    }

    // The same config in the transformers-5 form: rope_theta moves into rope_parameters.
    private static JsonObject Transformers5(JsonObject t4)
    {
        var o = t4.DeepClone().AsObject();
        var rp = (o["rope_scaling"] ?? new JsonObject()).DeepClone().AsObject();
        rp["rope_theta"] = o["rope_theta"]!.GetValue<double>();
        o.Remove("rope_scaling");
        o.Remove("rope_theta");
        o["rope_parameters"] = rp;
        return o;
    }

    private static ModelConfig Parse(JsonObject o) => ModelConfig.Parse(o, "/m/config.json");

    private static string Fails(JsonObject o) => Assert.Throws<TemperException>(() => Parse(o)).Message;

    private static void AssertYarn(JsonObject o, int dim, double theta, double factor, double original, double attention,
        double betaFast = 32, double betaSlow = 1, bool truncate = true)
    {
        var cfg = Parse(o);
        Assert.Equal("yarn", cfg.Rope.Type);
        var f = cfg.Rope.Frequencies(dim);
        var reference = YarnReference.InvFreq(dim, theta, factor, original, betaFast, betaSlow, truncate);
        Assert.Equal(dim / 2, f.InvFreq.Length);
        for (int i = 0; i < reference.Length; i++)
            Assert.True(Math.Abs(f.InvFreq[i] - reference[i]) <= 1e-6 * reference[i], $"inv_freq[{i}] = {f.InvFreq[i]:R}, float64 reference {reference[i]:R}");
        Assert.Equal(attention, f.AttentionScaling, 1e-6);
        // The ramp really blends: the first frequency is unscaled, the last divided by the factor.
        var plain = RopeFrequencies.DefaultInvFreq(dim, theta);
        Assert.Equal(plain[0], f.InvFreq[0]);
        Assert.Equal(plain[^1] / factor, f.InvFreq[^1], 1e-6 * plain[^1] / factor);
    }

    [Fact]
    public void Qwen3_model_card_yarn_in_both_forms()
    {
        var t4 = Qwen3("""{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}""");
        double attention = YarnReference.AttentionFactor(4);
        Assert.Equal(1 + 0.1 * Math.Log(4), attention, 12);
        AssertYarn(t4, 128, 1e6, 4, 32768, attention);
        AssertYarn(Transformers5(t4), 128, 1e6, 4, 32768, attention);
        // transformers 4's older "type" key.
        AssertYarn(Qwen3("""{"type":"yarn","factor":4.0,"original_max_position_embeddings":32768}"""), 128, 1e6, 4, 32768, attention);
        // The explicit factor wins over max_position_embeddings / original (40960 / 32768 = 1.25).
        Assert.Equal(4, Parse(t4).Rope.Factor);
    }

    [Fact]
    public void Deepseek_style_mscale_and_mscale_all_dim()
    {
        // DeepSeek-V2-Lite's rope_scaling (rope dim 64, theta 10000): mscale == mscale_all_dim gives factor 1.
        const string ds = """{"type":"yarn","factor":40,"original_max_position_embeddings":4096,"beta_fast":32,"beta_slow":1,"mscale":0.707,"mscale_all_dim":0.707}""";
        var o = Qwen3(ds);
        o["rope_theta"] = 10000.0; o["head_dim"] = 64; o["max_position_embeddings"] = 163840;
        AssertYarn(o, 64, 1e4, 40, 4096, 1.0);
        AssertYarn(Transformers5(o), 64, 1e4, 40, 4096, 1.0);
        // Different mscales give their ratio; a zero mscale_all_dim falls back to 0.1 ln(factor) + 1 (Python truthiness).
        o["rope_scaling"]!["mscale_all_dim"] = 0.5;
        AssertYarn(o, 64, 1e4, 40, 4096, YarnReference.AttentionFactor(40, null, 0.707, 0.5));
        Assert.NotEqual(1.0, YarnReference.AttentionFactor(40, null, 0.707, 0.5), 3);
        o["rope_scaling"]!["mscale_all_dim"] = 0;
        AssertYarn(o, 64, 1e4, 40, 4096, 1 + 0.1 * Math.Log(40));
        // An explicit attention_factor wins over both.
        o["rope_scaling"]!["attention_factor"] = 0.8;
        AssertYarn(o, 64, 1e4, 40, 4096, 0.8);
    }

    [Fact]
    public void Beta_and_truncate_overrides_and_defaults()
    {
        var o = Qwen3("""{"rope_type":"yarn","factor":8.0,"original_max_position_embeddings":4096,"beta_fast":16,"beta_slow":2}""");
        double attention = YarnReference.AttentionFactor(8);
        AssertYarn(o, 128, 1e6, 8, 4096, attention, 16, 2);
        AssertYarn(Transformers5(o), 128, 1e6, 8, 4096, attention, 16, 2);
        // Python's `or`: 0 and null take the defaults 32 and 1.
        o = Qwen3("""{"rope_type":"yarn","factor":8.0,"original_max_position_embeddings":4096,"beta_fast":0,"beta_slow":null}""");
        AssertYarn(o, 128, 1e6, 8, 4096, attention);
        // truncate false (gpt-oss): the ramp's bounds are not rounded.
        o = Qwen3("""{"rope_type":"yarn","factor":32.0,"original_max_position_embeddings":4096,"truncate":false}""");
        o["rope_theta"] = 150000.0; o["head_dim"] = 64;
        AssertYarn(o, 64, 150000, 32, 4096, YarnReference.AttentionFactor(32), truncate: false);
        var rounded = Qwen3("""{"rope_type":"yarn","factor":32.0,"original_max_position_embeddings":4096}""");
        rounded["rope_theta"] = 150000.0; rounded["head_dim"] = 64;
        Assert.NotEqual(Parse(o).Rope.Frequencies(64).InvFreq, Parse(rounded).Rope.Frequencies(64).InvFreq);
    }

    [Fact]
    public void Original_positions_default_and_precedence_follow_the_config_form()
    {
        // No original_max_position_embeddings: transformers takes max_position_embeddings.
        var o = Qwen3("""{"rope_type":"yarn","factor":4.0}""");
        Assert.Equal(40960, Parse(o).Rope.OriginalMaxPositions);
        AssertYarn(o, 128, 1e6, 4, 40960, YarnReference.AttentionFactor(4));
        // transformers 5 (rope_parameters): a top-level original_max_position_embeddings wins; transformers 4 ignores it.
        o = Qwen3("""{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}""");
        o["original_max_position_embeddings"] = 8192;
        Assert.Equal(32768, Parse(o).Rope.OriginalMaxPositions);
        Assert.Equal(8192, Parse(Transformers5(o)).Rope.OriginalMaxPositions);
        // transformers 5: "factor": null is max_position_embeddings / original.
        var t5 = Transformers5(Qwen3("""{"rope_type":"yarn","factor":null,"original_max_position_embeddings":10240}"""));
        Assert.Equal(4, Parse(t5).Rope.Factor);
    }

    [Fact]
    public void Bad_yarn_fields_are_one_line_errors_naming_the_file_and_field()
    {
        string Bad(string scaling, bool t5 = false)
        {
            var o = Qwen3(scaling);
            var m = Fails(t5 ? Transformers5(o) : o);
            Assert.StartsWith("/m/config.json: ", m);
            Assert.DoesNotContain('\n', m);
            return m;
        }
        Assert.Contains("rope_scaling of type 'yarn' is missing 'factor'", Bad("""{"rope_type":"yarn","original_max_position_embeddings":32768}"""));
        Assert.Contains("rope_parameters of type 'yarn' is missing 'factor'", Bad("""{"rope_type":"yarn","original_max_position_embeddings":32768}""", t5: true));
        Assert.Contains("rope_scaling of type 'yarn' is missing 'factor'", Bad("""{"rope_type":"yarn","factor":null}"""));
        Assert.Contains("'rope_scaling.factor' must be >= 1", Bad("""{"rope_type":"yarn","factor":0.5}"""));
        Assert.Contains("'rope_parameters.factor' must be >= 1", Bad("""{"rope_type":"yarn","factor":0.5}""", t5: true));
        Assert.Contains("field 'rope_scaling.factor' must be a number", Bad("""{"rope_type":"yarn","factor":"4"}"""));
        Assert.Contains("field 'rope_scaling.beta_fast' must be a number", Bad("""{"rope_type":"yarn","factor":4.0,"beta_fast":"fast"}"""));
        Assert.Contains("field 'rope_scaling.original_max_position_embeddings' must be a number", Bad("""{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":[32768]}"""));
        Assert.Contains("field 'rope_scaling.mscale' must be a number", Bad("""{"rope_type":"yarn","factor":4.0,"mscale":true}"""));
        Assert.Contains("field 'rope_scaling.truncate' must be true or false", Bad("""{"rope_type":"yarn","factor":4.0,"truncate":"no"}"""));
        Assert.Contains("'rope_parameters.beta_slow' must be > 0", Bad("""{"rope_type":"yarn","factor":4.0,"beta_slow":-1}""", t5: true));
        Assert.Contains("'rope_scaling.attention_factor' must be > 0", Bad("""{"rope_type":"yarn","factor":4.0,"attention_factor":-1}"""));
        var o = Qwen3("""{"rope_type":"yarn","factor":4.0}""");
        o.Remove("max_position_embeddings");
        Assert.Contains("needs 'original_max_position_embeddings'", Fails(o));
    }

    [Theory]
    [InlineData("dynamic")]
    [InlineData("longrope")]
    [InlineData("ntk")]
    public void Other_scaling_types_stay_refused_by_name(string type)
    {
        foreach (var o in new[] { Qwen3($$"""{"rope_type":"{{type}}","factor":2.0}"""), Transformers5(Qwen3($$"""{"rope_type":"{{type}}","factor":2.0}""")) })
        {
            var m = Fails(o);
            Assert.StartsWith($"/m/config.json: unsupported RoPE type '{type}' in rope_", m);
            Assert.DoesNotContain('\n', m);
            if (type == "dynamic") Assert.Contains("KV cache", m);
        }
    }

    private static void AssertClose(double[][] reference, ReadOnlySpan<float> actual, int row0 = 0)
    {
        double maxRef = reference.Max(r => r.Max(Math.Abs)), maxErr = 0;
        for (int t = 0; t < reference.Length; t++)
            for (int v = 0; v < Qwen3Tiny.Vocab; v++) maxErr = Math.Max(maxErr, Math.Abs(reference[t][v] - actual[(row0 + t) * Qwen3Tiny.Vocab + v]));
        Assert.True(maxErr <= 1e-4 * maxRef, $"max abs error {maxErr:G4} exceeds 1e-4 x max|ref| = {1e-4 * maxRef:G4}");
    }

    private static readonly int[] A = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501, 9, 77, 123, 300, 12, 64, 8, 211], B = [300, 12, 9, 77, 123];

    [Fact]
    public void Tiny_qwen3_with_yarn_gives_the_float64_logits()
    {
        using var lm = LanguageModel.Load(Qwen3Tiny.YarnFolder, new CpuBackend());
        Assert.Equal("yarn", lm.Config.Rope.Type);
        int t = A.Length;
        var ids = A.Concat(B).Concat(Enumerable.Repeat(0, t - B.Length)).ToArray();
        var mask = Enumerable.Repeat(1, t + B.Length).Concat(Enumerable.Repeat(0, t - B.Length)).ToArray();
        using var logits = lm.Logits(ids, 2, mask);
        var reference = Qwen3Tiny.Logits(A, yarn: true);
        AssertClose(reference, logits.Floats);
        AssertClose(Qwen3Tiny.Logits(B, yarn: true), logits.Floats, row0: t);
        // The scaling matters at these lengths: the unscaled forward is far off.
        var plain = Qwen3Tiny.Logits(A);
        double diff = 0, maxRef = reference.Max(r => r.Max(Math.Abs));
        for (int i = 0; i < t; i++)
            for (int v = 0; v < Qwen3Tiny.Vocab; v++) diff = Math.Max(diff, Math.Abs(plain[i][v] - reference[i][v]));
        Assert.True(diff > 1e-2 * maxRef, $"yarn changes the logits by only {diff:G3}");
    }

    [Fact]
    public void Tiny_qwen3_with_yarn_generates_through_the_cache_as_a_full_forward()
    {
        using var lm = LanguageModel.Load(Qwen3Tiny.YarnFolder, new CpuBackend());
        var generated = new Generator(lm.Decoder).Generate([B], new GenerationOptions { MaxNewTokens = 16, IgnoreEos = true })[0].GeneratedIds.ToArray();
        Assert.Equal(16, generated.Length);
        int[] full = [.. B, .. generated];
        using var logits = lm.Logits(full, 1);
        int v = Qwen3Tiny.Vocab;
        var reference = Qwen3Tiny.Logits(full, yarn: true);
        AssertClose(reference, logits.Floats);
        for (int i = 0; i < generated.Length; i++)
        {
            var row = logits.Floats.Slice((B.Length - 1 + i) * v, v).ToArray();
            var top = row.OrderDescending().Take(2).ToArray();
            if (top[0] - top[1] < 1e-3) continue; // a near-tie may go either way
            Assert.Equal(Array.IndexOf(row, top[0]), generated[i]);
        }
    }

    [Fact]
    public void Cuda_decode_graph_tables_carry_the_attention_factor()
    {
        var cfg = ModelConfig.Load(Qwen3Tiny.YarnFolder);
        var shape = GraphDecoding.Shape(cfg);
        var rope = cfg.Rope.Frequencies(cfg.HeadDim);
        Assert.Equal((float)YarnReference.AttentionFactor(Qwen3Tiny.YarnFactor), shape.RopeScaling, 6);
        Assert.Equal(rope.InvFreq, shape.RopeInvFreq);
        var (cos, sin) = CudaDecodeGraph.RopeTables(shape, 8);
        int half = cfg.HeadDim / 2;
        for (int p = 0; p < 8; p++)
            for (int i = 0; i < half; i++)
            {
                float angle = p * rope.InvFreq[i];
                Assert.Equal(MathF.Cos(angle) * rope.AttentionScaling, cos[p * half + i]);
                Assert.Equal(MathF.Sin(angle) * rope.AttentionScaling, sin[p * half + i]);
            }
    }
}
