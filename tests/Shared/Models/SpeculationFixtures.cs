// What the speculative decoding tests of Temper.Models.Tests and Temper.Serving.Tests share (tests/Shared/Models/ is
// compiled only into the test projects that reference Temper.Models; tests/Shared/*.cs goes into every one):
//   TinyVocab: a random 2-layer Llama over 8 tokens (hidden 32, 2 query heads and 1 KV head of head_dim 16, FFN 64)
//     with large weights (initializer range 0.35), so its next-token distributions are peaked and varied;
//   ExactDistribution: the probability of every continuation of `tokens` tokens, the product along it of the
//     sampler's filtered next-token distributions (Sampler.Probabilities over a contiguous forward of the whole
//     sequence so far, the penalties counting every earlier token): what sampled speculation must keep.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;

namespace Temper.Tests;

public static class SpeculationFixtures
{
    public const int TinyVocabSize = 8;

    /// <summary>The 8-token model with weights drawn from <paramref name="seed"/> (target and draft differ by seed), on a 1-thread CPU backend.</summary>
    public static Decoder TinyVocab(int seed)
    {
        var cfg = new ModelConfig
        {
            ModelType = "llama", HiddenSize = 32, IntermediateSize = 64, NumLayers = 2, NumHeads = 2, NumKvHeads = 1, HeadDim = 16,
            VocabSize = TinyVocabSize, RmsNormEps = 1e-5f, TieWordEmbeddings = true, AttentionBias = false, OutputBias = false, MlpBias = false,
            MaxPositions = 64, Rope = new RopeSpec("default", 10000), InitializerRange = 0.35f,
        };
        var be = new CpuBackend(1);
        return new Decoder(cfg, ModelWeights.Random(cfg, be, seed), be);
    }

    /// <summary>Every continuation of <paramref name="tokens"/> tokens after <paramref name="prompt"/> with a probability above 0 under
    /// <paramref name="sampling"/> (key: the tokens joined by ","), with that probability.</summary>
    public static Dictionary<string, double> ExactDistribution(Decoder target, int[] prompt, int tokens, SamplingOptions sampling)
    {
        int vocab = target.Config.VocabSize;
        var exact = new Dictionary<string, double>();
        var probe = new Sampler(sampling);
        void Enumerate(List<int> seq, double prob)
        {
            if (seq.Count == prompt.Length + tokens)
            {
                exact[string.Join(",", seq.Skip(prompt.Length))] = prob;
                return;
            }
            var ids = seq.ToArray();
            using var cache = new KvCache(target.Config, target.Backend, 1, ids.Length);
            using var logits = target.Forward(ids, Enumerable.Range(0, ids.Length).ToArray(), [], 1, cache, allPositions: false);
            var p = new float[vocab];
            probe.Probabilities(logits.Floats, ids, prompt.Length, p);
            for (int x = 0; x < vocab; x++)
                if (p[x] > 0)
                {
                    seq.Add(x);
                    Enumerate(seq, prob * p[x]);
                    seq.RemoveAt(seq.Count - 1);
                }
        }
        Enumerate([.. prompt], 1);
        return exact;
    }
}
