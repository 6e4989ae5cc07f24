// A tiny Qwen3-shaped model for the tests, written as a hub folder is (config.json with model_type qwen3,
// model.safetensors under HF names, the qwen2-tiny fixture's tokenizer and chat template), and a plain
// float64 forward of it written from transformers' modeling_qwen3 for reference:
//   per layer h = x + o(attn(rope(q_norm(q(n1 x))), rope(k_norm(k(n1 x))), v(n1 x))); x = h + down(silu(gate(n2 h)) * up(n2 h)),
// where q_norm/k_norm are RMSNorms over each head's D values, before RoPE. Shapes: hidden 64, 4 query and
// 2 KV heads of head_dim 32 (not hidden/heads, as Qwen3's own configs), FFN 96, 2 layers, vocabulary 512,
// tied embeddings, no biases. Weights are seeded and every norm weight is away from 1, so a missing or
// misplaced norm shows in the logits. YarnFolder is the same model with YaRN scaling in rope_scaling (as
// Qwen3's model cards tell users to add it, scaled down: factor 4 over 64 original positions, so the
// ramp falls inside head_dim 32); Logits(..., yarn: true) rotates by YarnReference's frequencies and
// multiplies cos and sin by its attention factor.
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Tests;

public static class Qwen3Tiny
{
    public const int Hidden = 64, Heads = 4, KvHeads = 2, HeadDim = 32, Ffn = 96, Layers = 2, Vocab = 512;
    public const double Eps = 1e-6, Theta = 1e6;

    private static readonly Lazy<Dictionary<string, double[]>> _weights = new(MakeWeights);
    private static readonly Lazy<string> _folder = new(() => Write(TempFolder.Create("temper-qwen3-tiny")));
    private static readonly Lazy<string> _yarnFolder = new(() => Write(TempFolder.Create("temper-qwen3-yarn-tiny"), YarnScaling));

    /// <summary>The yarn variant's rope_scaling (transformers-4 form).</summary>
    public const string YarnScaling = """{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}""";
    public const double YarnFactor = 4, YarnOriginal = 64;

    /// <summary>The model folder with YarnScaling (written once per test process).</summary>
    public static string YarnFolder => _yarnFolder.Value;

    /// <summary>The model's weights by HF name, flattened row-major (what model.safetensors holds, as float32).</summary>
    public static IReadOnlyDictionary<string, double[]> Weights => _weights.Value;

    /// <summary>The model folder (written once per test process).</summary>
    public static string Folder => _folder.Value;

    /// <summary>The HF shape of every weight.</summary>
    public static IEnumerable<(string Name, int[] Shape)> Shapes()
    {
        yield return ("model.embed_tokens.weight", [Vocab, Hidden]);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            yield return (p + "input_layernorm.weight", [Hidden]);
            yield return (p + "self_attn.q_proj.weight", [Heads * HeadDim, Hidden]);
            yield return (p + "self_attn.k_proj.weight", [KvHeads * HeadDim, Hidden]);
            yield return (p + "self_attn.v_proj.weight", [KvHeads * HeadDim, Hidden]);
            yield return (p + "self_attn.o_proj.weight", [Hidden, Heads * HeadDim]);
            yield return (p + "self_attn.q_norm.weight", [HeadDim]);
            yield return (p + "self_attn.k_norm.weight", [HeadDim]);
            yield return (p + "post_attention_layernorm.weight", [Hidden]);
            yield return (p + "mlp.gate_proj.weight", [Ffn, Hidden]);
            yield return (p + "mlp.up_proj.weight", [Ffn, Hidden]);
            yield return (p + "mlp.down_proj.weight", [Hidden, Ffn]);
        }
        yield return ("model.norm.weight", [Hidden]);
    }

    private static Dictionary<string, double[]> MakeWeights()
    {
        var rng = new Random(20261124);
        var w = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in Shapes())
        {
            var v = new double[shape.Aggregate(1, (a, b) => a * b)];
            bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal);
            double std = name.Contains("embed", StringComparison.Ordinal) ? 0.5 : 1 / Math.Sqrt(shape[^1]);
            for (int i = 0; i < v.Length; i++)
            {
                double u = rng.NextDouble() * 2 - 1;
                v[i] = (double)(float)(norm ? 1 + 0.6 * u : std * Math.Sqrt(3) * u); // exactly the float32 that is written
            }
            w[name] = v;
        }
        return w;
    }

    /// <summary>Writes the model folder into dir (created) and returns dir; ropeScaling is config.json's rope_scaling (JSON).</summary>
    public static string Write(string dir, string ropeScaling = "null")
    {
        Directory.CreateDirectory(dir);
        var tensors = Shapes().Select(s => new KeyValuePair<string, Tensor>(s.Name,
            Tensor.FromFloats(new Shape(s.Shape), Weights[s.Name].Select(x => (float)x).ToArray(), s.Name))).ToList();
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "attention_bias": false, "attention_dropout": 0.0,
             "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "hidden_size": {{Hidden}},
             "intermediate_size": {{Ffn}}, "num_hidden_layers": {{Layers}}, "num_attention_heads": {{Heads}},
             "num_key_value_heads": {{KvHeads}}, "head_dim": {{HeadDim}}, "max_position_embeddings": 256, "max_window_layers": {{Layers}},
             "rms_norm_eps": 1e-06, "rope_scaling": {{ropeScaling}}, "rope_theta": 1000000.0, "sliding_window": null, "use_sliding_window": false,
             "tie_word_embeddings": true, "torch_dtype": "float32", "vocab_size": {{Vocab}}, "transformers_version": "4.51.0"}
            """);
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "chat_template.jinja" })
            File.Copy(Path.Combine(Fixtures.Hf("qwen2-tiny"), f), Path.Combine(dir, f), overwrite: true);
        return dir;
    }

    /// <summary>
    /// Logits [T, V] of one sequence by the float64 reference forward (weights: Weights, or a variant of them;
    /// yarn: YarnFolder's RoPE). project (optional) computes a layer projection instead of W x: (module, e.g.
    /// model.layers.0.self_attn.q_proj, token position, input) -> output; null where the plain product applies.
    /// </summary>
    public static double[][] Logits(int[] ids, IReadOnlyDictionary<string, double[]>? weights = null, Func<string, int, double[], double[]?>? project = null,
        bool yarn = false)
    {
        var w = weights ?? Weights;
        double[] Proj(string module, int pos, double[] x, int rows) => project?.Invoke(module, pos, x) ?? MatVec(w[module + ".weight"], x, rows);
        var invFreq = yarn ? YarnReference.InvFreq(HeadDim, Theta, YarnFactor, YarnOriginal)
            : Enumerable.Range(0, HeadDim / 2).Select(i => 1 / Math.Pow(Theta, 2.0 * i / HeadDim)).ToArray();
        double scaling = yarn ? YarnReference.AttentionFactor(YarnFactor) : 1;
        int t = ids.Length, qd = Heads * HeadDim, kvd = KvHeads * HeadDim;
        var x = ids.Select(id => w["model.embed_tokens.weight"].AsSpan(id * Hidden, Hidden).ToArray()).ToArray();
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var hn = x.Select(r => RmsNorm(r, w[p + "input_layernorm.weight"])).ToArray();
            var q = hn.Select((r, i) => HeadNorms(Proj(p + "self_attn.q_proj", i, r, qd), w[p + "self_attn.q_norm.weight"])).ToArray();
            var k = hn.Select((r, i) => HeadNorms(Proj(p + "self_attn.k_proj", i, r, kvd), w[p + "self_attn.k_norm.weight"])).ToArray();
            var v = hn.Select((r, i) => Proj(p + "self_attn.v_proj", i, r, kvd)).ToArray();
            for (int i = 0; i < t; i++)
            {
                Rope(q[i], i, invFreq, scaling);
                Rope(k[i], i, invFreq, scaling);
            }
            for (int i = 0; i < t; i++)
            {
                var attn = new double[qd];
                for (int h = 0; h < Heads; h++)
                {
                    int g = h / (Heads / KvHeads);
                    var s = new double[i + 1];
                    for (int j = 0; j <= i; j++)
                    {
                        for (int e = 0; e < HeadDim; e++) s[j] += q[i][h * HeadDim + e] * k[j][g * HeadDim + e];
                        s[j] /= Math.Sqrt(HeadDim);
                    }
                    double max = s.Max(), sum = s.Sum(z => Math.Exp(z - max));
                    for (int j = 0; j <= i; j++)
                        for (int e = 0; e < HeadDim; e++) attn[h * HeadDim + e] += Math.Exp(s[j] - max) / sum * v[j][g * HeadDim + e];
                }
                var o = Proj(p + "self_attn.o_proj", i, attn, Hidden);
                for (int c = 0; c < Hidden; c++) x[i][c] += o[c];
                var h2 = RmsNorm(x[i], w[p + "post_attention_layernorm.weight"]);
                var gate = Proj(p + "mlp.gate_proj", i, h2, Ffn);
                var up = Proj(p + "mlp.up_proj", i, h2, Ffn);
                var act = gate.Select((z, f) => z / (1 + Math.Exp(-z)) * up[f]).ToArray();
                var down = Proj(p + "mlp.down_proj", i, act, Hidden);
                for (int c = 0; c < Hidden; c++) x[i][c] += down[c];
            }
        }
        return x.Select(r => MatVec(w["model.embed_tokens.weight"], RmsNorm(r, w["model.norm.weight"]), Vocab)).ToArray();
    }

    /// <summary>Mean cross-entropy of ids[t+1] given ids[..t] over the positions whose label (labels[t+1]) is not -100.</summary>
    public static double Loss(int[] ids, int[] labels, IReadOnlyDictionary<string, double[]>? weights = null, Func<string, int, double[], double[]?>? project = null)
    {
        return Float64CrossEntropy.Mean(Logits(ids, weights, project), labels);
    }

    public static double[] MatVec(double[] m, double[] x, int rows)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < x.Length; c++) y[r] += m[r * x.Length + c] * x[c];
        return y;
    }

    private static double[] RmsNorm(double[] x, double[] weight)
    {
        double r = 1 / Math.Sqrt(x.Sum(z => z * z) / x.Length + Eps);
        return x.Select((z, i) => weight[i] * z * r).ToArray();
    }

    private static double[] HeadNorms(double[] x, double[] weight)
    {
        var y = new double[x.Length];
        for (int h = 0; h < x.Length / HeadDim; h++)
            RmsNorm(x.AsSpan(h * HeadDim, HeadDim).ToArray(), weight).CopyTo(y, h * HeadDim);
        return y;
    }

    // HF rotate_half RoPE of every head in place: pairs (i, i + D/2) turn by pos invFreq[i] (1 / theta^(2i/D)
    // unscaled), cos and sin times the attention scaling.
    private static void Rope(double[] x, int pos, double[] invFreq, double scaling)
    {
        int half = HeadDim / 2;
        for (int h = 0; h < x.Length / HeadDim; h++)
            for (int i = 0; i < half; i++)
            {
                double a = pos * invFreq[i], c = Math.Cos(a) * scaling, s = Math.Sin(a) * scaling;
                int lo = h * HeadDim + i, hi = lo + half;
                (x[lo], x[hi]) = (x[lo] * c - x[hi] * s, x[hi] * c + x[lo] * s);
            }
    }
}
