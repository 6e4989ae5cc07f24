// A PEFT prompt-tuning adapter folder (peft_type PROMPT_TUNING, Lester et al. 2021): adapter_config.json with
// num_virtual_tokens P and token_dim C (num_transformer_submodules 1: a decoder-only model), and
// adapter_model.safetensors with one tensor, prompt_embeddings [P, C], the P learned token embeddings that go
// before every sequence. The other fields PEFT writes (prompt_tuning_init and its text, tokenizer_name_or_path,
// num_layers, num_attention_heads) describe how it was made; the embeddings are what it is. Loaded onto a
// backend it becomes ModelWeights.PromptEmbeddings; it cannot be merged into the weights.
using System.Text.Json;
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Models;

/// <param name="Init">PEFT's prompt_tuning_init: RANDOM (nn.Embedding's N(0,1)), TEXT (the embeddings of a text's tokens,
/// repeated or cut to P) or RANDOM_DISCRETE (the embeddings of P random vocabulary tokens).</param>
public sealed record PromptTuningConfig(int VirtualTokens, string Init = PromptTuningConfig.Random, string? InitText = null)
{
    public const string Random = "RANDOM", Text = "TEXT", RandomDiscrete = "RANDOM_DISCRETE";

    /// <summary>RANDOM, TEXT or RANDOM_DISCRETE from the CLI's random, text or random-discrete (any case).</summary>
    public static string ParseInit(string s) => s.Replace('-', '_').ToUpperInvariant() switch
    {
        Random => Random,
        Text => Text,
        RandomDiscrete => RandomDiscrete,
        _ => throw new TemperException($"--prompt-tuning-init must be random, text or random-discrete (got '{s}')"),
    };
}

public static class PromptTuningAdapter
{
    public const string TensorName = "prompt_embeddings";

    /// <summary>Reads the adapter in DIR for a model of hidden size C (null: its token_dim, checked when it is attached):
    /// its config and prompt_embeddings [P,C] as an f32 host tensor.</summary>
    public static (PromptTuningConfig Config, Tensor Embeddings) Load(string dir, int? hiddenSize)
    {
        var file = PeftConfigFile.Read(dir);
        var (path, o) = file;
        if (PeftConfigFile.TypeOf(file) != PeftConfigFile.PromptTuning) throw new TemperException($"{path}: not a prompt-tuning adapter (peft_type {PeftConfigFile.TypeOf(file)})");
        int Int(string key)
        {
            var n = o[key] ?? throw new TemperException($"{path}: missing field '{key}'");
            return n.GetValueKind() == JsonValueKind.Number && n.GetValue<double>() is double v && v == Math.Floor(v) && v is >= 1 and <= int.MaxValue
                ? (int)v : throw new TemperException($"{path}: '{key}' must be a positive integer");
        }
        int p = Int("num_virtual_tokens");
        int dim = Int("token_dim");
        if (hiddenSize is int c && dim != c) throw new TemperException($"{path}: token_dim {dim} does not match the model's hidden size {hiddenSize}");
        if (o["num_transformer_submodules"] is { } sub && sub.GetValueKind() == JsonValueKind.Number && sub.GetValue<double>() != 1)
            throw new TemperException($"{path}: num_transformer_submodules {sub} (an encoder-decoder prompt) is not supported; a decoder-only model has 1");
        if (o["task_type"]?.GetValue<string>() is string task && task != "CAUSAL_LM")
            throw new TemperException($"{path}: task_type '{task}' is not supported for prompt tuning (CAUSAL_LM is)");
        string init = o["prompt_tuning_init"]?.GetValue<string>() ?? PromptTuningConfig.Random;
        var cfg = new PromptTuningConfig(p, init, o["prompt_tuning_init_text"]?.GetValue<string>());

        string weights = Path.Combine(dir, "adapter_model.safetensors");
        if (!File.Exists(weights)) throw new TemperException($"{weights}: adapter_model.safetensors not found");
        using var st = SafetensorsFile.Open(weights);
        var entry = st.Entries.FirstOrDefault(e => e.Name is TensorName or "base_model." + TensorName)
            ?? throw new TemperException($"{weights}: tensor '{TensorName}' missing");
        foreach (var e in st.Entries)
            if (!ReferenceEquals(e, entry)) throw new TemperException($"{weights}: tensor '{e.Name}' is not part of a prompt-tuning adapter (only '{TensorName}' is)");
        var t = st.Get(entry.Name);
        if (t.Shape.Rank != 2 || t.Shape[0] != p || t.Shape[1] != dim)
            throw new TemperException($"{weights}: tensor '{entry.Name}' has shape {t.Shape}; num_virtual_tokens {p} and token_dim {dim} make it [{p},{dim}]");
        return (cfg, Tensor.FromFloats(t.Shape, t.ToFloatArray(), TensorName)); // a copy: the file's mapping closes here
    }
}
