// Qwen3 (model_type qwen3: q_norm and k_norm over each head before RoPE, head_dim not hidden/heads, no
// attention biases) against a float64 forward written from transformers' modeling_qwen3 (Qwen3Tiny):
// logits of a padded batch, greedy generation through the KV cache, and the config and tokenizer as a
// Qwen3 folder is read. The transformers fixture for it is owed (tests/reference/make_fixtures.py).
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public class Qwen3Tests
{
    private static readonly int[] A = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501], B = [300, 12, 9, 77, 123];

    private static void AssertClose(double[][] reference, ReadOnlySpan<float> actual, int row0 = 0)
    {
        double maxRef = reference.Max(r => r.Max(Math.Abs)), maxErr = 0;
        for (int t = 0; t < reference.Length; t++)
            for (int v = 0; v < Qwen3Tiny.Vocab; v++) maxErr = Math.Max(maxErr, Math.Abs(reference[t][v] - actual[(row0 + t) * Qwen3Tiny.Vocab + v]));
        Assert.True(maxErr <= 1e-4 * maxRef, $"max abs error {maxErr:G4} exceeds 1e-4 x max|ref| = {1e-4 * maxRef:G4}");
    }

    [Fact]
    public void Config_reads_head_norms_and_no_biases()
    {
        var cfg = ModelConfig.Load(Qwen3Tiny.Folder);
        Assert.Equal("qwen3", cfg.ModelType);
        Assert.True(cfg.QkNorm);
        Assert.False(cfg.AttentionBias);
        Assert.False(cfg.OutputBias);
        Assert.Equal(32, cfg.HeadDim);
        Assert.Null(cfg.SlidingWindow);
        Assert.False(ModelConfig.Load(Fixtures.Hf("qwen2-tiny")).QkNorm);
    }

    [Fact]
    public void Logits_of_a_padded_batch_match_the_float64_forward()
    {
        using var lm = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        Assert.NotNull(lm.Weights.Layers[1].QNorm);
        int t = A.Length;
        var ids = A.Concat(B).Concat(Enumerable.Repeat(0, t - B.Length)).ToArray();
        var mask = Enumerable.Repeat(1, t + B.Length).Concat(Enumerable.Repeat(0, t - B.Length)).ToArray();
        using var logits = lm.Logits(ids, 2, mask);
        AssertClose(Qwen3Tiny.Logits(A), logits.Floats);
        AssertClose(Qwen3Tiny.Logits(B), logits.Floats, row0: t);
    }

    [Fact]
    public void Greedy_generation_through_the_cache_picks_the_float64_argmax()
    {
        using var lm = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        var generated = new Generator(lm.Decoder).Generate([B], new GenerationOptions { MaxNewTokens = 12, IgnoreEos = true })[0].GeneratedIds;
        Assert.Equal(12, generated.Count);
        var reference = Qwen3Tiny.Logits([.. B, .. generated]);
        for (int i = 0; i < generated.Count; i++)
        {
            var row = reference[B.Length - 1 + i];
            var top = row.OrderDescending().Take(2).ToArray();
            if (top[0] - top[1] < 1e-3) continue; // a near-tie may go either way
            Assert.Equal(Array.IndexOf(row, top[0]), generated[i]);
        }
    }

    [Fact]
    public void A_qwen3_folder_splits_digits_as_qwen_does()
    {
        using var qwen3 = LanguageModel.Load(Qwen3Tiny.Folder, new CpuBackend());
        using var qwen2 = LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), new CpuBackend());
        const string text = "x = 12345 + 678";
        var ids = qwen3.RequireTokenizer().Encode(text);
        Assert.Equal(qwen2.RequireTokenizer().Encode(text), ids);
        Assert.Equal(text, qwen3.RequireTokenizer().Decode(ids));
    }
}
