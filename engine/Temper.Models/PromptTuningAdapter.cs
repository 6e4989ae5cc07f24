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
        var file = PeftConfigFile.ReadVirtualTokens(dir, PeftConfigFile.PromptTuning);
        var (path, o) = file;
        int p = PeftConfigFile.PositiveInt(file, "num_virtual_tokens");
        int dim = PeftConfigFile.PositiveInt(file, "token_dim");
        if (hiddenSize is int c && dim != c) throw new TemperException($"{path}: token_dim {dim} does not match the model's hidden size {hiddenSize}");
        string init = o["prompt_tuning_init"]?.GetValue<string>() ?? PromptTuningConfig.Random;
        var cfg = new PromptTuningConfig(p, init, o["prompt_tuning_init_text"]?.GetValue<string>());
        var values = PeftConfigFile.ReadPromptEmbeddings(dir, "prompt", p, dim, $"num_virtual_tokens {p} and token_dim {dim}");
        return (cfg, Tensor.FromFloats(new Shape(p, dim), values, TensorName));
    }
}
