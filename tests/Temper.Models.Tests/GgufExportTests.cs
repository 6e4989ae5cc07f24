// GgufExport against the conventions of llama.cpp's convert_hf_to_gguf.py, read back by the tests' own GgufFile:
// llama's q_proj/k_proj rows permuted per head as the converter's LlamaModel.permute (numpy's
// reshape(n_head, 2, D/2, C).swapaxes(1, 2), written here as index arithmetic), other tensors as stored, dimensions
// innermost first, every offset aligned; hyperparameters, tokenizer (tokens by id, types, merges, special ids, the
// chat template) and file type in the metadata; Qwen2 kept in rotate-half order with f32 biases; Q8_0 blocks equal to
// ggml's quantize_row_q8_0_ref written out here; f16/bf16 words the nearest to each value; Mixtral's experts stacked
// [E, Out, In] with an f32 router and the q8_0 -> f16 fallback for rows that are not whole blocks; Qwen2-MoE's shared
// expert; llama3's rope_freqs from the converter's formula; and the one-line refusals (dense layers in a Qwen-MoE,
// byte-fallback tokenizers without SentencePiece's pre-processing, unknown pre-tokenizers, unknown --outtype); and a PEFT LoRA as a GGUF LoRA (alpha = PEFT's
// scale x r, plain and rsLoRA; A as is, B's q/k rows permuted as the base's; an adapter of another base refused).
// (That llama.cpp itself runs these files to Temper's logits is measured with bench/peer/llamacpp: docs/GGUF.md.)
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class GgufExportTests
{
    private static GgufFile Export(string modelDir, string outType = "f32")
    {
        using var lm = LanguageModel.Load(modelDir, new CpuBackend());
        string path = Path.Combine(TempFolder.Create("temper-gguf"), "model.gguf");
        GgufExport.Save(path, lm, lm.Decoder.Backend, outType);
        return new GgufFile(path);
    }

    private static float[] Hf(string modelDir, string name)
    {
        using var f = Temper.Core.SafeTensors.SafetensorsModel.Open(modelDir);
        return f.Get(name).ToFloatArray();
    }

    // convert_hf_to_gguf.py's LlamaModel.permute: w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols).
    private static float[] Permute(float[] w, int rows, int cols, int heads)
    {
        int half = rows / heads / 2;
        var r = new float[w.Length];
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
                for (int two = 0; two < 2; two++)
                    for (int c = 0; c < cols; c++)
                        r[((h * half + i) * 2 + two) * cols + c] = w[((h * 2 + two) * half + i) * cols + c];
        return r;
    }

    [Fact]
    public void Llama_tensors_take_llama_cpp_names_with_q_and_k_rows_interleaved()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var g = Export(dir);
        Assert.Equal(3u, g.Version);
        var expected = new List<string> { "token_embd.weight", "output_norm.weight" };
        for (int i = 0; i < 2; i++)
            expected.AddRange(new[] { "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down" }.Select(t => $"blk.{i}.{t}.weight"));
        Assert.Equal(expected.Order(), g.Tensors.Select(t => t.Name).Order()); // tied: no output.weight
        Assert.All(g.Tensors, t => Assert.Equal(0, t.Offset % 32));
        Assert.Equal(0, g.DataStart % 32);
        Assert.Equal([64L, 64L], g.Tensor("blk.0.attn_q.weight").Ne);
        Assert.Equal([64L, 32L], g.Tensor("blk.1.attn_k.weight").Ne);   // ne0 = In = 64, ne1 = Out = 2 heads x 16
        Assert.Equal([160L, 64L], g.Tensor("blk.0.ffn_down.weight").Ne);
        Assert.Equal([64L, 512L], g.Tensor("token_embd.weight").Ne);
        Assert.Equal(Permute(Hf(dir, "model.layers.1.self_attn.q_proj.weight"), 64, 64, 4), g.Floats("blk.1.attn_q.weight"));
        Assert.Equal(Permute(Hf(dir, "model.layers.1.self_attn.k_proj.weight"), 32, 64, 2), g.Floats("blk.1.attn_k.weight"));
        Assert.NotEqual(Hf(dir, "model.layers.1.self_attn.q_proj.weight"), g.Floats("blk.1.attn_q.weight"));
        Assert.Equal(Hf(dir, "model.layers.1.self_attn.v_proj.weight"), g.Floats("blk.1.attn_v.weight"));
        Assert.Equal(Hf(dir, "model.layers.0.mlp.down_proj.weight"), g.Floats("blk.0.ffn_down.weight"));
        Assert.Equal(Hf(dir, "model.embed_tokens.weight"), g.Floats("token_embd.weight"));
        Assert.Equal(Hf(dir, "model.norm.weight"), g.Floats("output_norm.weight"));
    }

    [Fact]
    public void Metadata_carries_the_hyperparameters_and_the_tokenizer()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var g = Export(dir);
        Assert.Equal("llama", g.Get<string>("general.architecture"));
        Assert.Equal(0u, g.Get<uint>("general.file_type"));
        Assert.Equal(32u, g.Get<uint>("general.alignment"));
        Assert.Equal(2u, g.Get<uint>("llama.block_count"));
        Assert.Equal(64u, g.Get<uint>("llama.embedding_length"));
        Assert.Equal(160u, g.Get<uint>("llama.feed_forward_length"));
        Assert.Equal(4u, g.Get<uint>("llama.attention.head_count"));
        Assert.Equal(2u, g.Get<uint>("llama.attention.head_count_kv"));
        Assert.Equal(16u, g.Get<uint>("llama.rope.dimension_count"));
        Assert.Equal(256u, g.Get<uint>("llama.context_length"));
        Assert.Equal(10000f, g.Get<float>("llama.rope.freq_base"));
        Assert.Equal(1e-5f, g.Get<float>("llama.attention.layer_norm_rms_epsilon"));
        Assert.False(g.Metadata.ContainsKey("llama.rope.scaling.type"));

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer.json")))!;
        var tokens = g.Get<object[]>("tokenizer.ggml.tokens").Cast<string>().ToArray();
        Assert.Equal(512, tokens.Length);
        foreach (var (token, id) in json["model"]!["vocab"]!.AsObject()) Assert.Equal(token, tokens[(int)id!]);
        var types = g.Get<object[]>("tokenizer.ggml.token_type").Cast<int>().ToArray();
        Assert.Equal([3, 3, 3], types[..3]); // <|endoftext|>, <|im_start|>, <|im_end|>: special added tokens
        Assert.All(types[3..], t => Assert.Equal(1, t));
        var merges = json["model"]!["merges"]!.AsArray().Select(m => m is JsonArray a ? $"{a[0]} {a[1]}" : (string)m!).ToArray();
        Assert.Equal(merges, g.Get<object[]>("tokenizer.ggml.merges").Cast<string>());
        Assert.Equal("gpt2", g.Get<string>("tokenizer.ggml.model"));
        Assert.Equal("gpt-2", g.Get<string>("tokenizer.ggml.pre"));
        Assert.Equal(1u, g.Get<uint>("tokenizer.ggml.bos_token_id"));   // tokenizer_config.json: <|im_start|>
        Assert.Equal(2u, g.Get<uint>("tokenizer.ggml.eos_token_id"));   // <|im_end|>
        Assert.Equal(0u, g.Get<uint>("tokenizer.ggml.padding_token_id"));
        Assert.False(g.Get<bool>("tokenizer.ggml.add_bos_token"));     // its post-processor adds nothing
        Assert.Equal(File.ReadAllText(Path.Combine(dir, "chat_template.jinja")), g.Get<string>("tokenizer.chat_template"));
    }

    [Fact]
    public void Qwen2_keeps_rotate_half_rows_f32_biases_and_ggml_q8_0_blocks()
    {
        string dir = Fixtures.Hf("qwen2-tiny");
        var g = Export(dir, "q8_0");
        Assert.Equal("qwen2", g.Get<string>("general.architecture"));
        Assert.Equal(7u, g.Get<uint>("general.file_type"));
        Assert.Equal("qwen2", g.Get<string>("tokenizer.ggml.pre")); // transformers 5's Qwen pipeline for a qwen2 folder
        Assert.Equal(Hf(dir, "model.layers.0.self_attn.q_proj.bias"), g.Floats("blk.0.attn_q.bias"));
        Assert.Equal(Hf(dir, "model.layers.0.input_layernorm.weight"), g.Floats("blk.0.attn_norm.weight"));
        var q = g.Tensor("blk.0.attn_q.weight");
        Assert.Equal(8u, q.Type);
        var w = Hf(dir, "model.layers.0.self_attn.q_proj.weight"); // not permuted: llama.cpp's qwen2 rotates halves
        var blocks = g.Data("blk.0.attn_q.weight", w.Length / 32 * 34).ToArray();
        for (int b = 0; b < w.Length / 32; b++)
        {
            // ggml's quantize_row_q8_0_ref: d = amax / 127 (stored f16), q = roundf(x * (1 / d)).
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = Math.Max(amax, Math.Abs(w[b * 32 + j]));
            float d = amax / 127, id = d != 0 ? 1 / d : 0;
            Assert.Equal(BitConverter.HalfToUInt16Bits((Half)d), BitConverter.ToUInt16(blocks, b * 34));
            for (int j = 0; j < 32; j++)
            {
                float x = w[b * 32 + j] * id;
                int code = (int)(Math.Sign(x) * Math.Floor(Math.Abs(x) + 0.5f));
                Assert.Equal(code, (sbyte)blocks[b * 34 + 2 + j]);
            }
        }
    }

    [Theory]
    [InlineData("f16", 1u, 1u)]
    [InlineData("bf16", 30u, 32u)]
    public void Half_types_hold_the_nearest_value(string outType, uint ggmlType, uint fileType)
    {
        string dir = Fixtures.Hf("llama-tiny");
        var g = Export(dir, outType);
        Assert.Equal(fileType, g.Get<uint>("general.file_type"));
        Assert.Equal(0u, g.Tensor("blk.0.attn_norm.weight").Type); // vectors stay f32
        Assert.Equal(ggmlType, g.Tensor("token_embd.weight").Type);
        var words = g.Halves("token_embd.weight");
        var values = Hf(dir, "model.embed_tokens.weight");
        double Widen(int word) => ggmlType == 1 ? (double)BitConverter.UInt16BitsToHalf((ushort)word) : BitConverter.Int32BitsToSingle(word << 16);
        for (int i = 0; i < values.Length; i++)
        {
            double x = values[i], got = Widen(words[i]);
            double Off(int word) => word is < 0 or > 0xFFFF || double.IsNaN(Widen(word)) ? double.PositiveInfinity : Math.Abs(Widen(word) - x); // the neighbours of +-0 or the largest finite word
            Assert.True(Math.Abs(got - x) <= Off(words[i] + 1) && Math.Abs(got - x) <= Off(words[i] - 1), $"{outType} word {i}: {got} for {x}");
        }
    }

    [Fact]
    public void Mixtral_experts_are_stacked_under_the_llama_architecture()
    {
        var m = MoeTiny.Mixtral;
        var g = Export(m.Folder, "q8_0");
        Assert.Equal("llama", g.Get<string>("general.architecture"));
        Assert.Equal(4u, g.Get<uint>("llama.expert_count"));
        Assert.Equal(2u, g.Get<uint>("llama.expert_used_count"));
        Assert.Equal(24u, g.Get<uint>("llama.feed_forward_length"));
        var router = g.Tensor("blk.1.ffn_gate_inp.weight");
        Assert.Equal(0u, router.Type); // routers stay f32
        Assert.Equal(m.Weights["model.layers.1.block_sparse_moe.gate.weight"].Select(x => (float)x), g.Floats("blk.1.ffn_gate_inp.weight"));
        Assert.Equal([32L, 24L, 4L], g.Tensor("blk.1.ffn_gate_exps.weight").Ne);
        Assert.Equal(8u, g.Tensor("blk.1.ffn_up_exps.weight").Type);
        var down = g.Tensor("blk.0.ffn_down_exps.weight");
        Assert.Equal([24L, 32L, 4L], down.Ne);
        Assert.Equal(1u, down.Type); // rows of 24 are not whole Q8_0 blocks: f16, as the converter falls back
        var words = g.Halves("blk.0.ffn_down_exps.weight");
        var stacked = Enumerable.Range(0, 4).SelectMany(e => m.Weights[$"model.layers.0.block_sparse_moe.experts.{e}.w2.weight"]).ToArray();
        for (int i = 0; i < stacked.Length; i++) Assert.Equal(BitConverter.HalfToUInt16Bits((Half)(float)stacked[i]), words[i]);
        Assert.Contains(g.Tensors, t => t.Name == "output.weight"); // untied head
        var f32 = Export(m.Folder);
        foreach (var (gguf, hf) in new[] { ("gate", "w1"), ("up", "w3"), ("down", "w2") })
            Assert.Equal(Enumerable.Range(0, 4).SelectMany(e => m.Weights[$"model.layers.1.block_sparse_moe.experts.{e}.{hf}.weight"]).Select(x => (float)x),
                f32.Floats($"blk.1.ffn_{gguf}_exps.weight"));
    }

    [Fact]
    public void Qwen2_moe_writes_its_shared_expert_and_expert_widths()
    {
        var m = MoeTiny.Qwen2Moe with { Name = "qwen2-moe-all-sparse-tiny", MlpOnlyLayers = [] };
        var g = Export(m.Folder);
        Assert.Equal("qwen2moe", g.Get<string>("general.architecture"));
        Assert.Equal(16u, g.Get<uint>("qwen2moe.expert_feed_forward_length"));
        Assert.Equal(20u, g.Get<uint>("qwen2moe.expert_shared_feed_forward_length"));
        Assert.Equal(m.Weights["model.layers.0.mlp.shared_expert.up_proj.weight"].Select(x => (float)x), g.Floats("blk.0.ffn_up_shexp.weight"));
        Assert.Equal(m.Weights["model.layers.1.mlp.shared_expert_gate.weight"].Select(x => (float)x), g.Floats("blk.1.ffn_gate_inp_shexp.weight"));
        Assert.Equal(m.Weights["model.layers.1.self_attn.k_proj.bias"].Select(x => (float)x), g.Floats("blk.1.attn_k.bias"));
    }

    [Fact]
    public void Llama3_rope_freqs_are_the_converters_factors()
    {
        string dir = CopyWithConfig("llama-tiny", c => c["rope_parameters"] = new JsonObject
        {
            ["rope_type"] = "llama3", ["rope_theta"] = 10000.0, ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 64,
        });
        var freqs = Export(dir).Floats("rope_freqs.weight");
        Assert.Equal(8, freqs.Length);
        for (int i = 0; i < 8; i++)
        {
            double f = 1.0 / Math.Pow(10000, 2.0 * i / 16), wavelen = 2 * Math.PI / f;
            double expected = wavelen < 64 / 4.0 ? 1 : wavelen > 64 ? 8 : 1 / ((1 - (64 / wavelen - 1) / 3) / 8 + (64 / wavelen - 1) / 3);
            Assert.Equal(expected, freqs[i], 1e-5);
        }
        Assert.Contains(1f, freqs);
        Assert.Contains(8f, freqs);
    }

    [Theory]
    [InlineData(false, 8f)] // PEFT scale alpha / r = 8 / 4: llama.cpp's alpha / r with alpha 8
    [InlineData(true, 16f)] // rsLoRA: scale alpha / sqrt(r) = 4, so llama.cpp's alpha is 4 x r = 16
    public void A_lora_adapter_becomes_a_gguf_lora_with_b_rows_permuted_as_the_base(bool rsLora, float alpha)
    {
        string model = Fixtures.Hf("llama-tiny");
        string dir = Copy("llama-tiny", "adapter/adapter_config.json", c => c["use_rslora"] = rsLora);
        using var adapter = LoraAdapter.Load(Path.Combine(dir, "adapter"));
        string path = Path.Combine(TempFolder.Create("temper-gguf-lora"), "lora.gguf");
        GgufLoraExport.Save(path, ModelConfig.Load(model), adapter);
        var g = new GgufFile(path);
        Assert.Equal(("llama", "adapter", "lora"), (g.Get<string>("general.architecture"), g.Get<string>("general.type"), g.Get<string>("adapter.type")));
        Assert.Equal(alpha, g.Get<float>("adapter.lora.alpha"));
        Assert.Equal(28, g.Tensors.Count); // 2 layers x 7 projections x (A, B)
        var (a, b) = adapter.Modules["model.layers.1.self_attn.q_proj"];
        Assert.Equal([64L, 4L], g.Tensor("blk.1.attn_q.weight.lora_a").Ne);   // A [r, In]: ne {In, r}
        Assert.Equal([4L, 64L], g.Tensor("blk.1.attn_q.weight.lora_b").Ne);   // B [Out, r]: ne {r, Out}
        Assert.Equal(a.ToFloatArray(), g.Floats("blk.1.attn_q.weight.lora_a"));
        Assert.Equal(Permute(b.ToFloatArray(), 64, 4, 4), g.Floats("blk.1.attn_q.weight.lora_b"));
        var (_, bk) = adapter.Modules["model.layers.0.self_attn.k_proj"];
        Assert.Equal(Permute(bk.ToFloatArray(), 32, 4, 2), g.Floats("blk.0.attn_k.weight.lora_b"));
        Assert.Equal(adapter.Modules["model.layers.0.mlp.down_proj"].B.ToFloatArray(), g.Floats("blk.0.ffn_down.weight.lora_b"));
        var wrongBase = Assert.Throws<TemperException>(() => GgufLoraExport.Save(path + "2", ModelConfig.Load(MoeTiny.Mixtral.Folder), adapter)).Message;
        Assert.Contains("is not a projection of the base model", wrongBase);
        Assert.False(File.Exists(path + "2"));
    }

    [Fact]
    public void Expert_and_router_adapters_are_stacked_as_llama_cpp_reads_them()
    {
        // A PEFT adapter on Mixtral's router and on experts 0 and 2 of layer 1 (rank 2, alpha 4): experts 1 and 3 get zeros.
        var m = MoeTiny.Mixtral;
        string dir = TempFolder.Create("temper-gguf-moe-lora");
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), """
            {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["w1", "gate"], "base_model_name_or_path": "mixtral-tiny"}
            """);
        var rng = new Random(3);
        Tensor Random(int rows, int cols) => Tensor.FromFloats(new Shape(rows, cols), Enumerable.Range(0, rows * cols).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray());
        var tensors = new List<KeyValuePair<string, Tensor>>();
        void Module(string module, int outDim, int inDim)
        {
            tensors.Add(new($"base_model.model.{module}.lora_A.weight", Random(2, inDim)));
            tensors.Add(new($"base_model.model.{module}.lora_B.weight", Random(outDim, 2)));
        }
        Module("model.layers.1.block_sparse_moe.gate", 4, 32);
        Module("model.layers.1.block_sparse_moe.experts.0.w1", 24, 32);
        Module("model.layers.1.block_sparse_moe.experts.2.w1", 24, 32);
        Temper.Core.SafeTensors.SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        using var adapter = LoraAdapter.Load(dir);
        string path = Path.Combine(dir, "lora.gguf");
        GgufLoraExport.Save(path, ModelConfig.Load(m.Folder), adapter);
        var g = new GgufFile(path);
        Assert.Equal(4f, g.Get<float>("adapter.lora.alpha"));
        Assert.Equal(adapter.Modules["model.layers.1.block_sparse_moe.gate"].B.ToFloatArray(), g.Floats("blk.1.ffn_gate_inp.weight.lora_b"));
        Assert.Equal([32L, 2L, 4L], g.Tensor("blk.1.ffn_gate_exps.weight.lora_a").Ne);  // A [E, r, In]
        Assert.Equal([2L, 24L, 4L], g.Tensor("blk.1.ffn_gate_exps.weight.lora_b").Ne);  // B [E, Out, r]
        var a = g.Floats("blk.1.ffn_gate_exps.weight.lora_a");
        var b = g.Floats("blk.1.ffn_gate_exps.weight.lora_b");
        Assert.Equal(adapter.Modules["model.layers.1.block_sparse_moe.experts.2.w1"].A.ToFloatArray(), a[(2 * 64)..(3 * 64)]);
        Assert.Equal(adapter.Modules["model.layers.1.block_sparse_moe.experts.0.w1"].B.ToFloatArray(), b[..48]);
        Assert.All(a[64..128].Concat(b[48..96]).Concat(a[(3 * 64)..]), x => Assert.Equal(0f, x)); // experts 1 and 3: no change
        Assert.Equal(4, g.Tensors.Count);
    }

    [Theory]
    [InlineData("Llama3", "llama-bpe")]
    [InlineData("Qwen", "qwen2")]
    [InlineData("Tekken", "tekken")]
    [InlineData("Gpt4o", "gpt-4o")]
    public void A_split_regex_names_the_llama_cpp_pre_tokenizer_and_imports_back(string pattern, string pre)
    {
        string regex = (string)typeof(LanguageModel).Assembly.GetType("Temper.Models.Text.PreTokenizerPatterns")!.GetField(pattern)!.GetValue(null)!;
        JsonNode Split(string behavior) => new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = behavior, ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
        };
        string dir = CopyWithTokenizer(t => t["pre_tokenizer"] = Split("Isolated"));
        var g = Export(dir);
        Assert.Equal(pre, g.Get<string>("tokenizer.ggml.pre"));
        string back = TempFolder.Create("temper-gguf-pre");
        GgufImport.Save(g.Path, back);
        var imported = JsonNode.Parse(File.ReadAllText(Path.Combine(back, "tokenizer.json")))!["pre_tokenizer"]!["pretokenizers"]![0]!;
        Assert.Equal(regex, imported["pattern"]!["Regex"]!.GetValue<string>());
        var a = Temper.Models.Text.HfTokenizer.Load(dir);
        var b = Temper.Models.Text.HfTokenizer.Load(back);
        foreach (var text in new[] { "HTTPServer camelCaseWords they'll 12345", "path/to/file\n\n  x\ty", "Straße déjà ЖЖ 東京 3.14159%" })
            Assert.Equal(a.Encode(text), b.Encode(text));
        Assert.Contains("not isolated", Assert.Throws<TemperException>(() => Export(CopyWithTokenizer(t => t["pre_tokenizer"] = Split("Removed")))).Message);
    }

    [Fact]
    public void What_llama_cpp_cannot_run_is_refused_in_one_line()
    {
        static string Refusal(string dir, string outType = "f32") => Assert.Throws<TemperException>(() => Export(dir, outType)).Message;
        Assert.Contains("dense layers", Refusal(MoeTiny.Qwen2Moe.Folder));
        Assert.Contains("norm_topk_prob true", Refusal((MoeTiny.Qwen2Moe with { Name = "qwen2-moe-norm-tiny", MlpOnlyLayers = [], NormTopKProb = true }).Folder));
        string fallback = CopyWithTokenizer(t => t["model"]!["byte_fallback"] = true);
        Assert.Contains("SentencePiece's pre-processing", Refusal(fallback)); // byte fallback under a ByteLevel pre-tokenizer
        string whitespace = CopyWithTokenizer(t => t["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" });
        Assert.Contains("pre_tokenizer [Whitespace]", Refusal(whitespace));
        Assert.Contains("--outtype must be one of", Refusal(Fixtures.Hf("llama-tiny"), "q4_k"));
        Assert.All(new[] { Refusal(MoeTiny.Qwen2Moe.Folder), Refusal(fallback) }, m => Assert.DoesNotContain('\n', m));
    }

    private static string CopyWithConfig(string fixture, Action<JsonObject> edit) => Copy(fixture, "config.json", n => edit(n.AsObject()));

    private static string CopyWithTokenizer(Action<JsonNode> edit) => Copy("llama-tiny", "tokenizer.json", edit);

    private static string Copy(string fixture, string file, Action<JsonNode> edit)
    {
        string src = Fixtures.Hf(fixture), dir = TempFolder.Create("temper-gguf-" + fixture);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        Directory.CreateDirectory(Path.Combine(dir, "adapter"));
        foreach (var f in Directory.GetFiles(Path.Combine(src, "adapter"))) File.Copy(f, Path.Combine(dir, "adapter", Path.GetFileName(f)));
        var node = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, file)))!;
        edit(node);
        File.WriteAllText(Path.Combine(dir, file), node.ToJsonString());
        return dir;
    }
}
