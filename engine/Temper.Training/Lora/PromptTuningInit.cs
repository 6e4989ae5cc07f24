// A fresh prompt-tuning adapter's virtual token embeddings [P, C], initialised as PEFT's PromptEmbedding does:
//   RANDOM           N(0, 1) per value (torch.nn.Embedding's default; seeded here, so not torch's draws)
//   TEXT             the embedding rows of the init text's tokens (tokenized as HF's tokenizer(text), special tokens
//                    included), cut to P or repeated until P
//   RANDOM_DISCRETE  the embedding rows of P vocabulary ids drawn uniformly (seeded)
// The embedding rows are copied as f32 (widened from bf16 where the model holds it so). A prefix-tuning adapter's rows
// ([P, L*2*Hkv*D] in PEFT's layout) start N(0, 1), as PEFT's PrefixEncoder embedding does without prefix_projection.
using Temper.Core;
using Temper.Models;

namespace Temper.Training.Lora;

public static class PromptTuningInit
{
    public static Tensor Create(LanguageModel lm, PromptTuningConfig cfg, int seed)
    {
        int p = cfg.VirtualTokens, c = lm.Config.HiddenSize;
        if (p < 1) throw new TemperException($"--prompt-tuning needs at least 1 virtual token (got {p})");
        var rng = new SplitMix64(SplitMix64.Mix((ulong)(uint)seed ^ 0x50524F4D5054UL));
        switch (cfg.Init)
        {
            case PromptTuningConfig.Random:
                var values = new float[p * c];
                for (int i = 0; i < values.Length; i++) values[i] = Gaussian(rng);
                return Tensor.FromFloats(new Shape(p, c), values, PromptTuningAdapter.TensorName);
            case PromptTuningConfig.Text:
                if (string.IsNullOrEmpty(cfg.InitText)) throw new TemperException("--prompt-tuning-init text needs --prompt-tuning-init-text");
                var ids = lm.RequireTokenizer().EncodeWithSpecialTokens(cfg.InitText);
                if (ids.Count == 0) throw new TemperException("--prompt-tuning-init-text encodes to no tokens");
                return Rows(lm, Enumerable.Range(0, p).Select(i => ids[i % ids.Count]).ToArray());
            case PromptTuningConfig.RandomDiscrete:
                return Rows(lm, Enumerable.Range(0, p).Select(_ => rng.NextInt(lm.Config.VocabSize)).ToArray());
            default:
                throw new TemperException($"prompt_tuning_init '{cfg.Init}' is not one of RANDOM, TEXT, RANDOM_DISCRETE");
        }
    }

    /// <summary>A fresh prefix-tuning adapter's rows, N(0, 1) as PEFT's PrefixEncoder (without prefix_projection) starts them (seeded).</summary>
    public static PrefixKv Prefix(ModelConfig cfg, int tokens, int seed)
    {
        if (tokens < 1) throw new TemperException($"--prefix-tuning needs at least 1 virtual token (got {tokens})");
        var rng = new SplitMix64(SplitMix64.Mix((ulong)(uint)seed ^ 0x5052454649UL));
        int width = cfg.NumKvHeads * cfg.HeadDim;
        var all = new float[tokens * cfg.NumLayers * 2 * width];
        for (int i = 0; i < all.Length; i++) all[i] = Gaussian(rng);
        return PrefixKv.FromPeft(all, tokens, cfg.NumLayers, width);
    }

    // The embedding rows of ids as an f32 host tensor [ids, C].
    private static Tensor Rows(LanguageModel lm, int[] ids)
    {
        var be = lm.Decoder.Backend;
        using var rows = be.Zeros(new Shape(ids.Length, lm.Config.HiddenSize));
        be.Embedding(lm.Weights.Embed, ids, rows);
        using var host = rows.IsHost ? null : be.ToHost(rows);
        return Tensor.FromFloats(rows.Shape, (host ?? rows).ToFloatArray(), PromptTuningAdapter.TensorName);
    }

    // Box-Muller from two uniforms in (0, 1].
    private static float Gaussian(SplitMix64 rng)
    {
        double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
    }
}
