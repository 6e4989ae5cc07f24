// PEFT prefix tuning (peft_type PREFIX_TUNING, Li & Liang 2021): P learned key/value rows per layer that every
// query attends to before the real tokens, the base model frozen. PEFT stores them as one tensor,
// prompt_embeddings [P, L*2*Hkv*D]: row j holds, for each layer l, its key [Hkv*D] at column block 2l and its value
// at block 2l+1 (PEFT's past_key_values view [P, L*2, Hkv, D]; for grouped-query attention token_dim is Hkv*D and
// num_attention_heads Hkv). The keys are used as they are, with no RoPE (they go into the KV cache as past keys),
// and the real tokens take positions P.. after them. Temper holds them split per layer (PrefixKv: Keys[l], Values[l]
// [P, Hkv*D] f32), as ModelWeights.Prefix. A saved adapter's embedding is final even when it was trained with
// prefix_projection (PEFT saves the projection's output), so such folders load too.
using System.Text.Json;
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Models;

/// <summary>A prefix-tuning adapter's key and value rows: per layer, [P, Hkv*D] each.</summary>
public sealed class PrefixKv(Tensor[] keys, Tensor[] values) : IDisposable
{
    public Tensor[] Keys { get; } = keys;
    public Tensor[] Values { get; } = values;
    public int Tokens => Keys[0].Shape[0];

    /// <summary>Every tensor with the name PEFT's state dict does not have but a checkpoint needs: prefix.L.key / prefix.L.value.</summary>
    public IEnumerable<(string Name, Tensor Value)> Named() =>
        Keys.Select((k, l) => ($"prefix.{l}.key", k)).Concat(Values.Select((v, l) => ($"prefix.{l}.value", v)));

    /// <summary>PEFT's prompt_embeddings [P, L*2*Hkv*D] from host copies of the per-layer rows.</summary>
    public Tensor ToPeft(IBackend be)
    {
        int p = Tokens, w = Keys[0].Shape[1], layers = Keys.Length;
        var all = new float[p * layers * 2 * w];
        for (int l = 0; l < layers; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                var t = kv == 0 ? Keys[l] : Values[l];
                using var copy = t.IsHost ? null : be.ToHost(t);
                var src = (copy ?? t).Floats;
                for (int j = 0; j < p; j++) src.Slice(j * w, w).CopyTo(all.AsSpan(j * layers * 2 * w + (2 * l + kv) * w, w));
            }
        return Tensor.FromFloats(new Shape(p, layers * 2 * w), all, PromptTuningAdapter.TensorName);
    }

    /// <summary>The per-layer rows (f32 host tensors) of PEFT's prompt_embeddings [P, L*2*Hkv*D].</summary>
    public static PrefixKv FromPeft(ReadOnlySpan<float> all, int p, int layers, int width)
    {
        var keys = new Tensor[layers];
        var values = new Tensor[layers];
        for (int l = 0; l < layers; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                var rows = new float[p * width];
                for (int j = 0; j < p; j++) all.Slice(j * layers * 2 * width + (2 * l + kv) * width, width).CopyTo(rows.AsSpan(j * width, width));
                (kv == 0 ? keys : values)[l] = Tensor.FromFloats(new Shape(p, width), rows, $"prefix.{l}.{(kv == 0 ? "key" : "value")}");
            }
        return new PrefixKv(keys, values);
    }

    /// <summary>This backend's copies of these host rows (the host tensors are given up where they were copied).</summary>
    public PrefixKv Upload(IBackend be)
    {
        Tensor Up(Tensor t)
        {
            var d = be.FromHost(t);
            if (!ReferenceEquals(d, t)) t.Dispose();
            return d;
        }
        return new PrefixKv(Keys.Select(Up).ToArray(), Values.Select(Up).ToArray());
    }

    public void Dispose()
    {
        foreach (var t in Keys.Concat(Values)) t.Dispose();
    }
}

public static class PrefixTuningAdapter
{
    /// <summary>Reads the prefix-tuning adapter in DIR for <paramref name="model"/> (null: its own num_layers and token_dim,
    /// which LanguageModel.AttachPrefix checks against the model): P and its rows as f32 host tensors.</summary>
    public static PrefixKv Load(string dir, ModelConfig? model)
    {
        var file = PeftConfigFile.ReadVirtualTokens(dir, PeftConfigFile.PrefixTuning);
        string path = file.Path;
        int Int(string key) => PeftConfigFile.PositiveInt(file, key);
        int p = Int("num_virtual_tokens"), layers = model?.NumLayers ?? Int("num_layers"), width = model == null ? Int("token_dim") : model.NumKvHeads * model.HeadDim;
        if (Int("num_layers") != layers) throw new TemperException($"{path}: num_layers {Int("num_layers")} does not match the model's {layers} layers");
        if (Int("token_dim") != width && model != null)
            throw new TemperException($"{path}: token_dim {Int("token_dim")} does not match the model's key width {width} (num_key_value_heads {model.NumKvHeads} x head_dim {model.HeadDim})");
        int cols = layers * 2 * width;
        var values = PeftConfigFile.ReadPromptEmbeddings(dir, "prefix", p, cols, $"num_virtual_tokens {p}, {layers} layers x key and value x {width}");
        return PrefixKv.FromPeft(values, p, layers, width);
    }
}
