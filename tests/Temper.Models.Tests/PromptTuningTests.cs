// Prompt tuning at inference on the llama-tiny fixture: virtual tokens whose embeddings are some real tokens'
// embedding rows must act exactly as those tokens written before the input (logits of the real rows, a left-padded
// batch, sampled generation through the KV cache); a PEFT PROMPT_TUNING folder loads with every field checked, and
// the uses it has no meaning for (merging, the LoRA loader) refuse it in one line. The post-processor's special
// tokens (what TEXT init tokenizes with) are read from tokenizer.json.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Text;

namespace Temper.Tests;

public sealed class PromptTuningTests
{
    private static readonly int[] Virtual = [70, 71, 72, 73];

    private static string Dir => Fixtures.Hf("llama-tiny");

    // The embedding rows of ids as an f32 host tensor [ids, C].
    private static Tensor Rows(LanguageModel lm, int[] ids)
    {
        var be = lm.Decoder.Backend;
        var rows = be.Zeros(new Shape(ids.Length, lm.Config.HiddenSize));
        be.Embedding(lm.Weights.Embed, ids, rows);
        return Tensor.FromFloats(rows.Shape, rows.ToFloatArray(), "prompt_embeddings");
    }

    /// <summary>A PEFT prompt-tuning folder with prompt_embeddings = values [P,C]; edit changes its config.</summary>
    internal static string WriteAdapter(Tensor values, Action<JsonObject>? edit = null, IEnumerable<KeyValuePair<string, Tensor>>? extra = null)
    {
        string dir = TempFolder.Create("temper-prompt");
        var cfg = new JsonObject
        {
            ["peft_type"] = "PROMPT_TUNING", ["task_type"] = "CAUSAL_LM", ["num_virtual_tokens"] = values.Shape[0], ["token_dim"] = values.Shape[1],
            ["num_transformer_submodules"] = 1, ["num_attention_heads"] = 4, ["num_layers"] = 2, ["prompt_tuning_init"] = "RANDOM",
        };
        edit?.Invoke(cfg);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), cfg.ToJsonString());
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), [new("prompt_embeddings", values), .. extra ?? []]);
        return dir;
    }

    [Fact]
    public void Virtual_tokens_act_as_the_tokens_whose_embeddings_they_hold()
    {
        using var plain = LanguageModel.Load(Dir, new CpuBackend(1));
        using var prompted = LanguageModel.Load(Dir, new CpuBackend(1), WriteAdapter(Rows(plain, Virtual)));
        int[] a = [1, 40, 41, 42, 43, 50], b = [1, 60, 61, 62, 63, 64];
        int c = plain.Config.VocabSize;
        using var withPrompt = prompted.Logits([.. a, .. b], 2);
        using var written = plain.Logits([.. Virtual, .. a, .. Virtual, .. b], 2);
        Assert.Equal(12, withPrompt.Shape[0]); // the real rows only
        float max = written.Floats.ToArray().Max(MathF.Abs);
        for (int row = 0; row < 2; row++)
            for (int t = 0; t < 6; t++)
                for (int v = 0; v < c; v++) // the LM head's GEMM over 12 rows rounds apart from one over 20
                    Assert.True(Math.Abs(written.Floats[(row * 10 + 4 + t) * c + v] - withPrompt.Floats[(row * 6 + t) * c + v]) <= 1e-5f * max, $"row {row}, position {t}, logit {v}");
        using var bare = plain.Logits([.. a, .. b], 2);
        Assert.NotEqual(bare.Floats.ToArray(), withPrompt.Floats.ToArray());
    }

    [Fact]
    public void Generation_with_the_prompt_equals_generation_after_the_written_tokens()
    {
        using var plain = LanguageModel.Load(Dir, new CpuBackend(1));
        using var prompted = LanguageModel.Load(Dir, new CpuBackend(1), WriteAdapter(Rows(plain, Virtual)));
        // Sampled (the tiny model's greedy answer repeats one token whatever comes first), one seed for both.
        var o = new GenerationOptions { MaxNewTokens = 12, IgnoreEos = true, Sampling = new SamplingOptions { Greedy = false, Temperature = 1f, Seed = 5 } };
        int[] p1 = [1, 40, 41, 42], p2 = [1, 60];
        // A left-padded batch: the virtual tokens go before the padding, the real positions count from P.
        var got = new Generator(prompted.Decoder).Generate([p1, p2], o);
        var want = new Generator(plain.Decoder).Generate([[.. Virtual, .. p1], [.. Virtual, .. p2]], o);
        Assert.Equal(want[0].GeneratedIds, got[0].GeneratedIds);
        Assert.Equal(want[1].GeneratedIds, got[1].GeneratedIds);
        Assert.NotEqual(new Generator(plain.Decoder).Generate([p1], o)[0].GeneratedIds, got[0].GeneratedIds);
    }

    [Fact]
    public void Decode_steps_after_a_prompted_prefill_see_the_virtual_tokens_in_the_cache()
    {
        using var plain = LanguageModel.Load(Dir, new CpuBackend(1));
        using var prompted = LanguageModel.Load(Dir, new CpuBackend(1), WriteAdapter(Rows(plain, Virtual)));
        int[] prompt = [1, 40, 41], steps = [90, 91, 92];
        int p = Virtual.Length, c = plain.Config.VocabSize;
        using var cacheP = new KvCache(prompted.Config, prompted.Decoder.Backend, 1, 16);
        using var cacheW = new KvCache(plain.Config, plain.Decoder.Backend, 1, 16);
        prompted.Decoder.Forward(prompt, [0, 1, 2], [], 1, cacheP, allPositions: false).Dispose();
        plain.Decoder.Forward([.. Virtual, .. prompt], Enumerable.Range(0, p + 3).ToArray(), [], 1, cacheW, allPositions: false).Dispose();
        Assert.Equal(p + 3, cacheP.Length);
        for (int i = 0; i < steps.Length; i++)
        {
            // The caller counts real tokens only (position 3 + i); the cache that began with P virtual tokens moves it up by P.
            using var got = prompted.Decoder.Forward([steps[i]], [3 + i], [], 1, cacheP, allPositions: false);
            using var want = plain.Decoder.Forward([steps[i]], [p + 3 + i], [], 1, cacheW, allPositions: false);
            float max = want.Floats.ToArray().Max(MathF.Abs);
            for (int v = 0; v < c; v++) Assert.True(Math.Abs(want.Floats[v] - got.Floats[v]) <= 1e-5f * max, $"step {i}, logit {v}: {got.Floats[v]} against {want.Floats[v]}");
        }
    }

    [Fact]
    public void An_adapter_folder_is_checked_field_by_field()
    {
        using var lm = LanguageModel.Load(Dir, new CpuBackend(1));
        var good = Rows(lm, Virtual);
        string Refusal(string dir) => Assert.Throws<TemperException>(() => lm.AttachAdapter(dir, merge: false)).Message;
        Assert.Contains("token_dim 32 does not match the model's hidden size 64", Refusal(WriteAdapter(good, c => c["token_dim"] = 32)));
        Assert.Contains("has shape [4,64]; num_virtual_tokens 5", Refusal(WriteAdapter(good, c => c["num_virtual_tokens"] = 5)));
        Assert.Contains("num_transformer_submodules 2", Refusal(WriteAdapter(good, c => c["num_transformer_submodules"] = 2)));
        Assert.Contains("'num_virtual_tokens' must be a positive integer", Refusal(WriteAdapter(good, c => c["num_virtual_tokens"] = -1)));
        Assert.Contains("missing field 'token_dim'", Refusal(WriteAdapter(good, c => c.Remove("token_dim"))));
        Assert.Contains("task_type 'SEQ_CLS'", Refusal(WriteAdapter(good, c => c["task_type"] = "SEQ_CLS")));
        Assert.Contains("tensor 'extra' is not part of a prompt-tuning adapter",
            Refusal(WriteAdapter(good, extra: [new("extra", Tensor.FromFloats(new Shape(1), [1f]))])));
        string dir = WriteAdapter(good);
        Assert.Contains("no weights to merge", Assert.Throws<TemperException>(() => lm.AttachAdapter(dir, merge: true)).Message);
        Assert.Contains("prompt-tuning adapter (peft_type PROMPT_TUNING) has no LoRA weights", Assert.Throws<TemperException>(() => LoraAdapter.Load(dir)).Message);
        lm.AttachAdapter(dir, merge: false);
        Assert.Equal(4, lm.Weights.VirtualTokenCount);
        Assert.Contains("attach one at a time", Refusal(dir));
        Assert.Contains("'FOO' is not supported", Assert.Throws<TemperException>(() => LoraAdapter.Load(WriteAdapter(good, c => c["peft_type"] = "FOO"))).Message);
    }

    [Fact]
    public void The_post_processor_s_special_tokens_wrap_a_single_text()
    {
        string Tokenizer(JsonNode? postProcessor)
        {
            string dir = TempFolder.Create("temper-tok");
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Dir, "tokenizer.json")))!.AsObject();
            json["post_processor"] = postProcessor;
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
            return dir;
        }
        var template = JsonNode.Parse("""
            {"type": "Sequence", "processors": [{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
              {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
               "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}, "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}]}
            """);
        var plain = HfTokenizer.Load(Dir).Encode("hello world");
        Assert.Equal([1, .. plain, 2], HfTokenizer.Load(Tokenizer(template)).EncodeWithSpecialTokens("hello world"));
        Assert.Equal([5, .. plain, 6], HfTokenizer.Load(Tokenizer(JsonNode.Parse("""{"type": "BertProcessing", "cls": ["[CLS]", 5], "sep": ["[SEP]", 6]}"""))).EncodeWithSpecialTokens("hello world"));
        Assert.Equal(plain, HfTokenizer.Load(Dir).EncodeWithSpecialTokens("hello world")); // the fixture's template adds nothing
        var missing = JsonNode.Parse("""{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}], "pair": [], "special_tokens": {}}""");
        Assert.Contains("'<x>' is not in its special_tokens", Assert.Throws<TemperException>(() => HfTokenizer.Load(Tokenizer(missing))).Message);
    }
}

// Prefix tuning at inference: a prefix whose keys and values are the ones the model computes for some tokens (read
// from a KV cache that saw them at positions 0..P-1) must act exactly as those tokens written before the input.
public sealed class PrefixTuningTests
{
    private static readonly int[] Virtual = [70, 71, 72];

    private static string Dir => Fixtures.Hf("llama-tiny");

    // The post-RoPE keys and values of Virtual at positions 0..P-1, per layer, as a prefix (host tensors).
    internal static PrefixKv PrefixOf(LanguageModel lm, int[] tokens)
    {
        int p = tokens.Length, width = lm.Config.NumKvHeads * lm.Config.HeadDim;
        using var cache = new KvCache(lm.Config, lm.Decoder.Backend, 1, p);
        lm.Decoder.Forward(tokens, Enumerable.Range(0, p).ToArray(), [], 1, cache, allPositions: false).Dispose();
        Tensor Rows(Tensor t) => Tensor.FromFloats(new Shape(p, width), t.ToFloatArray().AsSpan(0, p * width));
        return new PrefixKv(Enumerable.Range(0, lm.Config.NumLayers).Select(l => Rows(cache.K(l))).ToArray(),
            Enumerable.Range(0, lm.Config.NumLayers).Select(l => Rows(cache.V(l))).ToArray());
    }

    [Fact]
    public void A_prefix_of_computed_keys_and_values_acts_as_the_written_tokens()
    {
        using var plain = LanguageModel.Load(Dir, new CpuBackend(1));
        using var prefixed = LanguageModel.Load(Dir, new CpuBackend(1));
        prefixed.AttachPrefix(PrefixOf(plain, Virtual));
        int[] a = [1, 40, 41, 42, 43, 50], b = [1, 60, 61, 62, 63, 64];
        int c = plain.Config.VocabSize, p = Virtual.Length;
        using var got = prefixed.Logits([.. a, .. b], 2);
        using var want = plain.Logits([.. Virtual, .. a, .. Virtual, .. b], 2);
        float max = want.Floats.ToArray().Max(MathF.Abs);
        for (int row = 0; row < 2; row++)
            for (int t = 0; t < 6; t++)
                for (int v = 0; v < c; v++)
                    Assert.True(Math.Abs(want.Floats[(row * (6 + p) + p + t) * c + v] - got.Floats[(row * 6 + t) * c + v]) <= 1e-5f * max, $"row {row}, position {t}, logit {v}");
        // Decode steps after a prefixed prefill see the prefix in the cache.
        using var cacheP = new KvCache(plain.Config, plain.Decoder.Backend, 1, 16);
        using var cacheW = new KvCache(plain.Config, plain.Decoder.Backend, 1, 16);
        prefixed.Decoder.Forward(a, Enumerable.Range(0, 6).ToArray(), [], 1, cacheP, allPositions: false).Dispose();
        plain.Decoder.Forward([.. Virtual, .. a], Enumerable.Range(0, 6 + p).ToArray(), [], 1, cacheW, allPositions: false).Dispose();
        using var stepP = prefixed.Decoder.Forward([90], [6], [], 1, cacheP, allPositions: false);
        using var stepW = plain.Decoder.Forward([90], [6 + p], [], 1, cacheW, allPositions: false);
        float m = stepW.Floats.ToArray().Max(MathF.Abs);
        for (int v = 0; v < c; v++) Assert.True(Math.Abs(stepW.Floats[v] - stepP.Floats[v]) <= 1e-5f * m, $"decode step, logit {v}");
    }

    [Fact]
    public void A_peft_prefix_folder_round_trips_its_layout_and_is_checked()
    {
        using var lm = LanguageModel.Load(Dir, new CpuBackend(1));
        var prefix = PrefixOf(lm, Virtual);
        int width = lm.Config.NumKvHeads * lm.Config.HeadDim, layers = lm.Config.NumLayers;
        var peft = prefix.ToPeft(lm.Decoder.Backend);
        Assert.Equal([3, layers * 2 * width], peft.Shape.Dims.ToArray());
        // PEFT's view [P, L*2, Hkv, D]: layer 1's value of token 2 is column block 3 of row 2.
        Assert.Equal(prefix.Values[1].Floats.Slice(2 * width, width).ToArray(), peft.Floats.Slice(2 * layers * 2 * width + 3 * width, width).ToArray());
        string Write(Action<JsonObject>? edit = null, Tensor? t = null)
        {
            string dir = TempFolder.Create("temper-prefix");
            var cfg = new JsonObject
            {
                ["peft_type"] = "PREFIX_TUNING", ["task_type"] = "CAUSAL_LM", ["num_virtual_tokens"] = 3, ["token_dim"] = width,
                ["num_attention_heads"] = lm.Config.NumKvHeads, ["num_layers"] = layers, ["num_transformer_submodules"] = 1, ["prefix_projection"] = false,
            };
            edit?.Invoke(cfg);
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), cfg.ToJsonString());
            SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), [new("prompt_embeddings", t ?? peft)]);
            return dir;
        }
        using (var loaded = PrefixTuningAdapter.Load(Write(), lm.Config))
            for (int l = 0; l < layers; l++)
            {
                Assert.Equal(prefix.Keys[l].Floats.ToArray(), loaded.Keys[l].Floats.ToArray());
                Assert.Equal(prefix.Values[l].Floats.ToArray(), loaded.Values[l].Floats.ToArray());
            }
        string Refusal(string dir) => Assert.Throws<TemperException>(() => lm.AttachAdapter(dir, merge: false)).Message;
        Assert.Contains("num_layers 3 does not match the model's 2 layers", Refusal(Write(c => c["num_layers"] = 3)));
        Assert.Contains("token_dim 64 does not match the model's key width 32", Refusal(Write(c => c["token_dim"] = 64)));
        Assert.Contains("make it [3,128]", Refusal(Write(t: Tensor.FromFloats(new Shape(3, 64), new float[192]))));
        Assert.Contains("no weights to merge", Assert.Throws<TemperException>(() => lm.AttachAdapter(Write(), merge: true)).Message);
        Assert.Contains("prefix-tuning adapter (peft_type PREFIX_TUNING) has no LoRA weights", Assert.Throws<TemperException>(() => LoraAdapter.Load(Write())).Message);
        lm.AttachAdapter(Write(), merge: false);
        Assert.Equal(3, lm.Weights.VirtualTokenCount);
        Assert.Contains("attach one at a time", Refusal(Write()));
    }
}
