// What the speculative decoding tests of Temper.Models.Tests and Temper.Serving.Tests share (tests/Shared/Models/ is
// compiled only into the test projects that reference Temper.Models; tests/Shared/*.cs goes into every one):
//   TinyVocab: a random 2-layer Llama over 8 tokens (hidden 32, 2 query heads and 1 KV head of head_dim 16, FFN 64)
//     with large weights (initializer range 0.35), so its next-token distributions are peaked and varied;
//   ExactDistribution: the probability of every continuation of `tokens` tokens, the product along it of the
//     sampler's filtered next-token distributions (Sampler.Probabilities over a contiguous forward of the whole
//     sequence so far, the penalties counting every earlier token): what sampled speculation must keep;
//   NineOnes / NoWhitespace: a JSON schema that leaves a model little but the repeated "1," a prompt of JSON shows
//     (an object {"a": [nine 1s]}), and a logit bias of -100 on every token that decodes to whitespace only, which
//     a random model favours and the constraint allows between JSON tokens, so prompt lookup's proposals get accepted.
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Constrained;
using Temper.Models.Text;

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

    /// <summary>An object whose one field "a" is an array of exactly nine 1s.</summary>
    public const string NineOnesSchema =
        """{"type": "object", "properties": {"a": {"type": "array", "items": {"const": 1}, "minItems": 9, "maxItems": 9}}, "required": ["a"], "additionalProperties": false}""";

    /// <summary>The constraint of <see cref="NineOnesSchema"/> over the tokenizer's vocabulary.</summary>
    public static JsonConstraint NineOnes(HfTokenizer tokenizer, IReadOnlyList<int> eosIds) =>
        JsonConstraint.ForSchema(TokenVocabulary.From(tokenizer, eosIds), NineOnesSchema);

    /// <summary>A logit bias of -100 on each of the <paramref name="vocabSize"/> tokens that decodes to whitespace only.</summary>
    public static Dictionary<int, float> NoWhitespace(HfTokenizer tokenizer, int vocabSize) =>
        Enumerable.Range(0, vocabSize).Where(id => tokenizer.Decode([id]) is { Length: > 0 } t && string.IsNullOrWhiteSpace(t)).ToDictionary(id => id, _ => -100f);
}
