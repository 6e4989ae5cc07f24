// GgufImport: a GGUF file back into a Hugging Face folder. Round trips through `GgufExport` in f32 give every tensor
// of the original back bit for bit under its HF name (llama's q/k rows un-permuted, experts split), a config that
// loads to the same logits, and a tokenizer that encodes as the original; llama3 RoPE comes back from rope_freqs;
// q8_0 comes back within half a block step, bf16 as bf16. A broken or hostile file (bad magic, truncated, counts or
// string lengths beyond the file, tensors outside it, unknown types, architectures and vocabularies) is one
// TemperException naming the file, before anything large is allocated.
using System.Text;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class GgufImportTests
{
    private static string RoundTrip(string modelDir, string outType = "f32", string dtype = "auto")
    {
        string dir = TempFolder.Create("temper-gguf-import");
        using (var lm = LanguageModel.Load(modelDir, new CpuBackend()))
            GgufExport.Save(Path.Combine(dir, "model.gguf"), lm, lm.Decoder.Backend, outType);
        GgufImport.Save(Path.Combine(dir, "model.gguf"), Path.Combine(dir, "hf"), dtype);
        return Path.Combine(dir, "hf");
    }

    private static Dictionary<string, float[]> Tensors(string dir)
    {
        using var f = SafetensorsModel.Open(dir);
        return f.Names.ToDictionary(n => n, n => f.Get(n).ToFloatArray());
    }

    private static float[] Logits(string dir, int[] ids)
    {
        using var lm = LanguageModel.Load(dir, new CpuBackend());
        using var l = lm.Logits(ids, 1);
        return l.ToFloatArray();
    }

    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny", "mixtral", "qwen2-moe", "qwen3" };

    private static string Folder(string name) => name switch
    {
        "mixtral" => MoeTiny.Mixtral.Folder,
        "qwen2-moe" => (MoeTiny.Qwen2Moe with { Name = "qwen2-moe-all-sparse-tiny", MlpOnlyLayers = [] }).Folder,
        "qwen3" => Qwen3Tiny.Folder,
        _ => Fixtures.Hf(name),
    };

    [Theory]
    [MemberData(nameof(Models))]
    public void An_f32_round_trip_gives_back_every_tensor_and_the_logits(string name)
    {
        string original = Folder(name), back = RoundTrip(original);
        var a = Tensors(original);
        var b = Tensors(back);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (k, v) in a) Assert.True(v.SequenceEqual(b[k]), $"{name}: {k} differs");
        int[] ids = [1, 40, 41, 42, 50, 51, 300, 7, 99, 12];
        Assert.Equal(Logits(original, ids), Logits(back, ids));
        var t0 = Temper.Models.Text.HfTokenizer.Load(original);
        var t1 = Temper.Models.Text.HfTokenizer.Load(back);
        foreach (var s in new[] { "Hello world, 12345 is a number.", "<|im_start|>user\nDon't stop   the 2024 run!<|im_end|>" })
            Assert.Equal(t0.Encode(s), t1.Encode(s));
        Assert.Equal(t0.EncodeWithSpecialTokens("a b"), t1.EncodeWithSpecialTokens("a b"));
    }

    [Fact]
    public void Llama3_rope_comes_back_from_rope_freqs()
    {
        string dir = TempFolder.Create("temper-gguf-llama3");
        foreach (var f in Directory.GetFiles(Fixtures.Hf("llama-tiny"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        cfg["rope_parameters"] = new JsonObject { ["rope_type"] = "llama3", ["rope_theta"] = 10000.0, ["factor"] = 32.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 8192 };
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        string back = RoundTrip(dir);
        var rope = ModelConfig.Load(back).Rope;
        Assert.Equal(("llama3", 32.0, 1.0, 4.0, 8192.0), (rope.Type, rope.Factor, rope.LowFreqFactor, rope.HighFreqFactor, rope.OriginalMaxPositions));
        int[] ids = Enumerable.Range(0, 40).Select(i => (i * 37 + 5) % 512).ToArray();
        Assert.Equal(Logits(dir, ids), Logits(back, ids));
    }

    // Half a step, plus the f16 rounding of the step itself (2^-11 relative) over up to 127 steps: under 0.6 of a step.
    [Fact]
    public void Q8_0_comes_back_within_half_a_step_and_bf16_as_bf16()
    {
        string original = Fixtures.Hf("qwen2-tiny");
        var a = Tensors(original);
        var q8 = Tensors(RoundTrip(original, "q8_0"));
        var w = a["model.layers.1.mlp.up_proj.weight"];
        var got = q8["model.layers.1.mlp.up_proj.weight"];
        for (int b = 0; b < w.Length / 32; b++)
        {
            float step = w.Skip(b * 32).Take(32).Max(Math.Abs) / 127;
            for (int j = b * 32; j < b * 32 + 32; j++) Assert.True(Math.Abs(got[j] - w[j]) <= step * 0.6, $"value {j}: {got[j]} for {w[j]}");
        }
        Assert.Equal(a["model.layers.1.self_attn.q_proj.bias"], q8["model.layers.1.self_attn.q_proj.bias"]); // vectors stay f32

        string bf = RoundTrip(original, "bf16");
        Assert.Equal("bfloat16", JsonNode.Parse(File.ReadAllText(Path.Combine(bf, "config.json")))!["torch_dtype"]!.GetValue<string>());
        using var f = SafetensorsModel.Open(bf);
        var t = f.Get("model.layers.0.mlp.down_proj.weight");
        Assert.Equal(DType.BF16, t.DType);
        var expected = a["model.layers.0.mlp.down_proj.weight"].Select(x => BFloat16.ToSingle(BFloat16.FromSingle(x)));
        Assert.Equal(expected, t.ToFloatArray());
    }

    // A GGUF file written byte by byte, to break in chosen places.
    private static byte[] Gguf(uint version = 3, ulong? tensorCount = null, ulong? keyCount = null, Action<BinaryWriter>? body = null)
    {
        var s = new MemoryStream();
        var w = new BinaryWriter(s);
        w.Write("GGUF"u8);
        w.Write(version);
        w.Write(tensorCount ?? 0);
        w.Write(keyCount ?? 0);
        body?.Invoke(w);
        w.Write(new byte[64]);
        return s.ToArray();
    }

    private static void Str(BinaryWriter w, string s)
    {
        w.Write((ulong)Encoding.UTF8.GetByteCount(s));
        w.Write(Encoding.UTF8.GetBytes(s));
    }

    private static string Refusal(byte[] bytes)
    {
        string path = Path.Combine(TempFolder.Create("temper-gguf-bad"), "bad.gguf");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<TemperException>(() => GgufImport.Save(path, Path.Combine(Path.GetDirectoryName(path)!, "out")));
        Assert.StartsWith(path + ": ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(Directory.Exists(Path.Combine(Path.GetDirectoryName(path)!, "out")));
        return e.Message;
    }

    [Fact]
    public void A_broken_or_hostile_file_is_one_line_naming_it()
    {
        Assert.Contains("no GGUF magic", Refusal("GGML"u8.ToArray().Concat(new byte[60]).ToArray()));
        Assert.Contains("version 1", Refusal(Gguf(version: 1)));
        Assert.Contains("tensor count 1152921504606846976 is more than", Refusal(Gguf(tensorCount: 1UL << 60)));
        Assert.Contains("key count", Refusal(Gguf(keyCount: ulong.MaxValue)));
        Assert.Contains("runs past the end", Refusal(Gguf(keyCount: 1, body: w => w.Write(1UL << 40))));
        Assert.Contains("item count", Refusal(Gguf(keyCount: 1, body: w => { Str(w, "tokenizer.ggml.tokens"); w.Write(9u); w.Write(8u); w.Write(1UL << 50); })));
        Assert.Contains("unknown value type 77", Refusal(Gguf(keyCount: 1, body: w => { Str(w, "k"); w.Write(77u); })));
        void Tensor(BinaryWriter w, uint dims, ulong ne, uint type, ulong offset)
        {
            Str(w, "token_embd.weight");
            w.Write(dims);
            for (int d = 0; d < dims; d++) w.Write(ne);
            w.Write(type);
            w.Write(offset);
        }
        Assert.Contains("5 dimensions", Refusal(Gguf(tensorCount: 1, body: w => Tensor(w, 5, 2, 0, 0))));
        Assert.Contains("ggml type 99", Refusal(Gguf(tensorCount: 1, body: w => Tensor(w, 2, 4, 99, 0))));
        Assert.Contains("outside the file", Refusal(Gguf(tensorCount: 1, body: w => Tensor(w, 2, 1 << 20, 0, 0))));
        Assert.Contains("outside the file", Refusal(Gguf(tensorCount: 1, body: w => Tensor(w, 1, 4, 0, 1UL << 62))));
        Assert.Contains("not whole", Refusal(Gguf(tensorCount: 1, body: w => Tensor(w, 1, 33, 8, 0))));
        Assert.Contains("general.architecture missing", Refusal(Gguf()));
        Assert.Contains("architecture 'gemma2'", Refusal(Gguf(keyCount: 1, body: w => { Str(w, "general.architecture"); w.Write(8u); Str(w, "gemma2"); })));
    }

    [Fact]
    public void An_unknown_vocabulary_is_refused()
    {
        string dir = TempFolder.Create("temper-gguf-spm");
        using (var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend()))
            GgufExport.Save(Path.Combine(dir, "m.gguf"), lm, lm.Decoder.Backend, "f32");
        var bytes = File.ReadAllBytes(Path.Combine(dir, "m.gguf"));
        // Same length: "gpt2" -> "spm2" keeps every offset; the reader must name the vocabulary it does not take.
        var key = Encoding.UTF8.GetBytes("tokenizer.ggml.model");
        int at = bytes.AsSpan().IndexOf(key) + key.Length + 4 + 8;
        Assert.Equal("gpt2", Encoding.UTF8.GetString(bytes, at, 4));
        Encoding.UTF8.GetBytes("spm2").CopyTo(bytes, at);
        Assert.Contains("tokenizer.ggml.model 'spm2' is not byte-level BPE", Refusal(bytes));
    }
}
