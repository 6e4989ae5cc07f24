// bitsandbytes 4-bit checkpoints (config.json quantization_config, Params4bit + packed QuantState tensors):
// `Bnb4BitExport` writes one in the layout transformers saves, and a load reads it back in NF4 with the codes
// mapped from the file, giving the logits of the same weights quantised by --qlora; a plain (not
// double-quantised) absmax is kept exactly for dense (dequantised) loads; skipped modules stay dense; and every
// malformed tensor, field or config is refused in one line naming it. bitsandbytes' own files are owed
// (tests/reference/make_bnb_reference.py needs bitsandbytes): these tests hold the layout to its definition.
using System.Text;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.Quantization;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class Bnb4BitTests
{
    private const string Down0 = "model.layers.0.mlp.down_proj.weight";

    private static string Temp(string prefix) => Directory.CreateTempSubdirectory(prefix).FullName;

    private static string CopyModel(string name)
    {
        string src = Fixtures.Hf(name), dst = Temp("temper-bnb-src-");
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        return dst;
    }

    private static string Quantized(string model, bool doubleQuant = true, params string[] skip)
    {
        string dst = Temp("temper-bnb-");
        Bnb4BitExport.Save(Fixtures.Hf(model), dst, doubleQuant, skip);
        return dst;
    }

    private static float[] Logits(LanguageModel lm)
    {
        using var t = lm.Logits([1, 5, 9, 33, 100, 7, 2, 50, 3, 17, 250, 4], 2);
        return t.ToFloatArray();
    }

    [Fact]
    public void Written_checkpoint_has_the_bitsandbytes_layout()
    {
        string dir = Quantized("llama-tiny");
        using var original = SafetensorsFile.Open(Path.Combine(Fixtures.Hf("llama-tiny"), "model.safetensors"));
        using var f = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        var w = original.Get(Down0);
        long n = w.Shape.Elements, blocks = (n + 63) / 64;
        Assert.Equal((DType.U8, new Shape((int)((n + 1) / 2), 1)), (f.Entry(Down0).DType, f.Entry(Down0).Shape));
        Assert.Equal((DType.U8, new Shape((int)blocks)), (f.Entry(Down0 + ".absmax").DType, f.Entry(Down0 + ".absmax").Shape));
        Assert.Equal(new Shape((int)((blocks + 255) / 256)), f.Entry(Down0 + ".nested_absmax").Shape);
        Assert.Equal(Nf4CodeBook.Values.ToArray(), f.Get(Down0 + ".quant_map").Floats.ToArray());
        Assert.Equal(DynamicMap.Values.ToArray(), f.Get(Down0 + ".nested_quant_map").Floats.ToArray());
        var state = JsonNode.Parse(Encoding.UTF8.GetString(f.Get(Down0 + ".quant_state.bitsandbytes__nf4").Bytes))!.AsObject();
        Assert.Equal(["quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"], state.Select(kv => kv.Key));
        Assert.Equal("nf4", (string?)state["quant_type"]);
        Assert.Equal(64, (int)state["blocksize"]!);
        Assert.Equal("float32", (string?)state["dtype"]);
        Assert.Equal([w.Shape[0], w.Shape[1]], state["shape"]!.AsArray().Select(d => (int)d!));

        // The codes and absmax are bitsandbytes' quantize_4bit of the weight: the same as --qlora's quantisation,
        // whose codes the Nf4Weight tests hold to a float64 evaluation of the definition.
        var expect = Nf4Weight.Quantize(w);
        Assert.Equal(expect.Codes.Bytes.ToArray(), f.Get(Down0).Bytes.ToArray());
        Assert.Equal(expect.AbsmaxCodes.Bytes.ToArray(), f.Get(Down0 + ".absmax").Bytes.ToArray());
        Assert.Equal(expect.AbsmaxScales.Floats.ToArray(), f.Get(Down0 + ".nested_absmax").Floats.ToArray());
        Assert.Equal(expect.AbsmaxOffset, (float)(double)state["nested_offset"]!);
        // Everything else is copied as stored, and config.json says what the file is.
        Assert.Equal(original.Get("model.embed_tokens.weight").Bytes.ToArray(), f.Get("model.embed_tokens.weight").Bytes.ToArray());
        var q = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!["quantization_config"]!;
        Assert.Equal(("bitsandbytes", true, "nf4", true), ((string?)q["quant_method"], (bool)q["load_in_4bit"]!, (string?)q["bnb_4bit_quant_type"], (bool)q["bnb_4bit_use_double_quant"]!));
        Assert.True(File.Exists(Path.Combine(dir, "tokenizer.json")));
        Directory.Delete(dir, true);
    }

    [Theory]
    [InlineData("llama-tiny")]
    [InlineData("qwen2-tiny")]
    public void Loads_in_nf4_with_the_logits_of_the_qlora_base(string model)
    {
        string dir = Quantized(model), copy = CopyModel(model);
        var be = new CpuBackend();
        using var bnb = LanguageModel.Load(dir, be);
        using var qlora = LanguageModel.Load(copy, be, qlora: true);
        Assert.NotNull(bnb.Config.Bnb4Bit);
        Assert.All(bnb.Weights.Projections, p => Assert.NotNull(p.Nf4));
        // The codes are the file's own bytes (mapped), not a second quantisation.
        var storage = Assert.IsType<HostStorage>(bnb.Weights.Layers[0].Down.Nf4!.Codes.Storage);
        Assert.False(System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(storage.Memory, out _), "codes in a managed array");
        Assert.False(File.Exists(Path.Combine(dir, Nf4ModelFile.FileName)));
        Assert.Equal(Logits(qlora), Logits(bnb));
        Directory.Delete(dir, true);
        Directory.Delete(copy, true);
    }

    [Fact]
    public void Plain_absmax_is_exact_when_dense_and_double_quantised_in_nf4()
    {
        string plain = Quantized("llama-tiny", doubleQuant: false), nested = Quantized("llama-tiny");
        using var original = SafetensorsFile.Open(Path.Combine(Fixtures.Hf("llama-tiny"), "model.safetensors"));
        using (var f = SafetensorsFile.Open(Path.Combine(plain, "model.safetensors")))
        {
            var w = original.Get(Down0).Floats;
            var absmax = f.Get(Down0 + ".absmax");
            Assert.Equal(DType.F32, absmax.DType);
            for (int b = 0; b < absmax.Elements; b++)
            {
                float max = 0;
                for (int i = b * 64; i < Math.Min(w.Length, b * 64 + 64); i++) max = Math.Max(max, Math.Abs(w[i]));
                Assert.Equal(max, absmax.Floats[b]);
            }
            Assert.False(f.Contains(Down0 + ".nested_absmax"));
            Assert.DoesNotContain("nested", Encoding.UTF8.GetString(f.Get(Down0 + ".quant_state.bitsandbytes__nf4").Bytes));
        }
        var be = new CpuBackend();
        // In NF4 the exact absmax is double-quantised as bitsandbytes' compress_statistics would have: the same
        // weights as the double-quantised checkpoint.
        using (var a = LanguageModel.Load(plain, be))
        using (var b = LanguageModel.Load(nested, be))
            Assert.Equal(Logits(b), Logits(a));
        // Dense, each value is nf4[code] * absmax exactly (the product of two floats, exact in double, rounded once).
        using (var dense = LanguageModel.Load(plain, be, dequantize: true))
        using (var f = SafetensorsFile.Open(Path.Combine(plain, "model.safetensors")))
        {
            var p = dense.Weights.Layers[0].Down;
            Assert.Null(p.Nf4);
            var values = p.WeightValues(be);
            var codes = f.Get(Down0).Bytes;
            var absmax = f.Get(Down0 + ".absmax").Floats;
            for (int i = 0; i < values.Length; i++)
            {
                int code = i % 2 == 0 ? codes[i / 2] >> 4 : codes[i / 2] & 15;
                Assert.Equal((float)((double)Nf4CodeBook.Values[code] * absmax[i / 64]), values[i]);
            }
        }
        Directory.Delete(plain, true);
        Directory.Delete(nested, true);
    }

    [Fact]
    public void Skipped_modules_stay_dense()
    {
        string dir = Quantized("llama-tiny", true, "mlp.down_proj");
        using var original = SafetensorsFile.Open(Path.Combine(Fixtures.Hf("llama-tiny"), "model.safetensors"));
        var be = new CpuBackend();
        using var lm = LanguageModel.Load(dir, be);
        Assert.Equal(["mlp.down_proj"], lm.Config.Bnb4Bit!.SkipModules);
        foreach (var p in lm.Weights.Projections)
            if (p.Name.EndsWith("down_proj", StringComparison.Ordinal)) Assert.Equal(original.Get(p.Name + ".weight").Floats.ToArray(), p.WeightValues(be));
            else Assert.NotNull(p.Nf4);
        Assert.All(Logits(lm), v => Assert.True(float.IsFinite(v)));
        var ex = Assert.Throws<TemperException>(() => Bnb4BitExport.Save(Fixtures.Hf("llama-tiny"), Temp("temper-bnb-bad-"), true, ["mlp.downproj"]));
        Assert.Contains("'mlp.downproj' names no layer projection", ex.Message);
        Directory.Delete(dir, true);
    }

    // Rewrites DIR/model.safetensors with one tensor changed (null removes it).
    private static void Rewrite(string dir, string name, Func<Tensor, Tensor?> change)
    {
        string path = Path.Combine(dir, "model.safetensors");
        var tensors = new List<KeyValuePair<string, Tensor>>();
        using (var f = SafetensorsFile.Open(path))
            foreach (var e in f.Entries)
            {
                var t = Tensor.FromArray<byte>(e.Shape, f.Get(e.Name).Bytes, e.DType);
                if (e.Name == name && change(t) is not { } c) continue;
                tensors.Add(new(e.Name, e.Name == name ? change(t)! : t));
            }
        SafetensorsWriter.Write(path, tensors);
    }

    private static Func<Tensor, Tensor?> EditState(Func<string, string> edit) => t =>
    {
        var json = Encoding.UTF8.GetBytes(edit(Encoding.UTF8.GetString(t.Bytes)));
        return Tensor.FromArray<byte>(new Shape(json.Length), json, DType.U8);
    };

    public static TheoryData<string, string, string> BadTensors => new()
    {
        { "absmax", "short", "absmax' is U8[31]" },
        { "quant_map", "book", "quant_map' entry 3" },
        { "nested_quant_map", "book", "nested_quant_map' entry 3" },
        { "state", "shape", "shape is [32, 96], config.json implies [32, 64]" },
        { "state", "blocksize", "blocksize is 128" },
        { "state", "fp4", "quant_type is 'fp4'" },
        { "state", "json", "is not JSON" },
        { "state", "offset", "'nested_offset' must be a finite number" },
        { "", "missing", "absmax' missing" },
    };

    [Theory, MemberData(nameof(BadTensors))]
    public void Malformed_tensors_are_refused_in_one_line(string part, string how, string expect)
    {
        string dir = Quantized("llama-tiny");
        const string K = "model.layers.1.self_attn.k_proj.weight";
        switch (how)
        {
            case "short": Rewrite(dir, K + ".absmax", t => Tensor.FromArray<byte>(new Shape(t.Shape[0] - 1), t.Bytes[..^1], DType.U8)); break;
            case "book":
                Rewrite(dir, K + "." + part, t =>
                {
                    var v = t.Floats.ToArray();
                    v[3] += 0.01f;
                    return Tensor.FromFloats(t.Shape, v);
                });
                break;
            case "shape": Rewrite(dir, K + Bnb4BitWeights.QuantStateSuffix, EditState(s => s.Replace("[32, 64]", "[32, 96]"))); break;
            case "blocksize": Rewrite(dir, K + Bnb4BitWeights.QuantStateSuffix, EditState(s => s.Replace("\"blocksize\": 64", "\"blocksize\": 128"))); break;
            case "fp4": Rewrite(dir, K + Bnb4BitWeights.QuantStateSuffix, EditState(s => s.Replace("\"nf4\"", "\"fp4\""))); break;
            case "json": Rewrite(dir, K + Bnb4BitWeights.QuantStateSuffix, EditState(s => s[..^5])); break;
            case "offset": Rewrite(dir, K + Bnb4BitWeights.QuantStateSuffix, EditState(s => s[..s.IndexOf("\"nested_offset\"", StringComparison.Ordinal)] + "\"nested_offset\": \"x\"}")); break;
            case "missing": Rewrite(dir, K + ".absmax", _ => null); break;
        }
        var ex = Assert.Throws<TemperException>(() => LanguageModel.Load(dir, new CpuBackend()));
        Assert.Contains(K, ex.Message);
        Assert.Contains(expect, ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        Directory.Delete(dir, true);
    }

    // bitsandbytes' own checkpoint (owed: tests/reference/make_bnb_reference.py): its codes and absmax codes are
    // Temper's quantisation of the same weights, its dynamic map is DynamicMap's bit for bit, and Temper's logits
    // over it are bitsandbytes' within 1e-4 x max|ref| (both dequantise to f32; the sums' order differs).
    [Fact]
    public void Bitsandbytes_own_checkpoint_loads_with_its_logits()
    {
        string dir = Fixtures.Hf("llama-tiny-bnb4");
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        Assert.Equal(reference.Get("dynamic_map").Floats.ToArray(), DynamicMap.Values.ToArray());
        using var original = SafetensorsFile.Open(Path.Combine(Fixtures.Hf("llama-tiny"), "model.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        foreach (var p in lm.Weights.Projections)
        {
            var mine = Nf4Weight.Quantize(original.Get(p.Name + ".weight"));
            Assert.Equal(mine.Codes.Bytes.ToArray(), p.Nf4!.Codes.Bytes.ToArray());
            Assert.Equal(mine.AbsmaxCodes.Bytes.ToArray(), p.Nf4.AbsmaxCodes.Bytes.ToArray());
        }
        var ids = reference.Get("input_ids");
        using var logits = lm.Logits(ids.Span<int>().ToArray(), ids.Shape[0]);
        var expect = reference.Get("logits").Floats;
        var got = logits.ToFloatArray();
        float max = 0, err = 0;
        for (int i = 0; i < got.Length; i++) (max, err) = (Math.Max(max, Math.Abs(expect[i])), Math.Max(err, Math.Abs(got[i] - expect[i])));
        Assert.True(err <= 1e-4f * max, $"max |logit error| {err:G3} against max |ref| {max:G3}");
    }

    [Theory]
    [InlineData("\"quant_method\": \"gptq\", \"bits\": 4", "quant_method 'gptq' is not supported")]
    [InlineData("\"quant_method\": \"bitsandbytes\", \"load_in_8bit\": true", "bitsandbytes 8-bit (LLM.int8)")]
    [InlineData("\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true", "bnb_4bit_quant_type 'fp4' is not supported")]
    [InlineData("\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"nf4\", \"bnb_4bit_quant_storage\": \"bfloat16\"", "bnb_4bit_quant_storage 'bfloat16'")]
    [InlineData("\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"nf4\", \"llm_int8_skip_modules\": 3", "'llm_int8_skip_modules' must be a list")]
    public void Unsupported_quantization_configs_are_refused(string fields, string expect)
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Hf("llama-tiny"), "config.json")))!.AsObject();
        root["quantization_config"] = JsonNode.Parse("{" + fields + "}");
        var ex = Assert.Throws<TemperException>(() => ModelConfig.Parse(root, "x/config.json"));
        Assert.Contains("x/config.json", ex.Message);
        Assert.Contains(expect, ex.Message);
    }
}
