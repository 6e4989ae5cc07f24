// Tiny mixture-of-experts models for the tests, written as hub folders are (config.json with model_type mixtral,
// qwen3_moe or qwen2_moe, model.safetensors with per-expert tensors under HF names, the qwen2-tiny fixture's tokenizer
// and chat template), and a plain float64 forward of each written from transformers' modeling_mixtral /
// modeling_qwen3_moe / modeling_qwen2_moe:
//   per layer h = x + o(attn(rope(q(n1 x)), rope(k(n1 x)), v(n1 x)))  (Qwen3-MoE: q_norm/k_norm per head before RoPE;
//     Qwen2-MoE: q/k/v biases);
//   sparse layer: p = softmax(n2 h W_router^T) over the E experts; the k largest (ties: lower index);
//     w = p_top / sum(p_top) (Mixtral always, Qwen3-MoE when norm_topk_prob); x = h + sum_j w_j down_j(silu(gate_j n2 h) * up_j n2 h)
//     Qwen2-MoE adds its shared expert: + sigmoid(w_sg . n2 h) * shared(n2 h);
//   dense layer (Qwen: in mlp_only_layers, or (l + 1) % decoder_sparse_step != 0): x = h + down(silu(gate n2 h) * up n2 h).
// Shapes: hidden 32, 4 query and 2 KV heads of head_dim 8, vocabulary 512; the variants differ in layers, E, k,
// expert and dense widths, norm_topk_prob, mlp_only_layers and decoder_sparse_step. Router weights are drawn wider
// than the rest so routing probabilities are well apart; the reference throws if a token's k-th and (k+1)-th
// probabilities are within 1e-6 (a near-tie float32 could route the other way: pick another seed). Loss and WithLora
// (W + s B A merged in float64) serve the training tests' central differences; RouterAuxLoss is transformers'
// load_balancing_loss_func over every sparse layer's router logits of a padded batch's real tokens, written from its
// definition (f[e]: share of (layer, token) pairs with e in their top k; P[e]: mean routing probability; E sum f P).
using Temper.Core;
using Temper.Core.SafeTensors;

namespace Temper.Tests;

public sealed record MoeTiny(string Name, string ModelType, int Layers, int Experts, int TopK, int ExpertFfn, int DenseFfn, bool NormTopKProb,
    int[] MlpOnlyLayers, int SparseStep, bool Tied, int Seed, int SharedFfn = 0)
{
    public const int Hidden = 32, Heads = 4, KvHeads = 2, HeadDim = 8, Vocab = 512;
    public const double Eps = 1e-6, Theta = 1e6;

    /// <summary>Mixtral: every layer sparse, renormalised top-2 of 4 experts, untied lm_head.</summary>
    public static readonly MoeTiny Mixtral = new("mixtral-tiny", "mixtral", 2, 4, 2, 24, 24, true, [], 1, false, 20261124);
    /// <summary>Qwen3-MoE with norm_topk_prob false and layer 1 in mlp_only_layers (dense, width 40); top-2 of 5, tied.</summary>
    public static readonly MoeTiny Qwen3Moe = new("qwen3-moe-tiny", "qwen3_moe", 3, 5, 2, 16, 40, false, [1], 1, true, 20261125);
    /// <summary>Qwen3-MoE with norm_topk_prob true and decoder_sparse_step 2 (layers 1 and 3 sparse); top-3 of 4.</summary>
    public static readonly MoeTiny Qwen3MoeStep = new("qwen3-moe-step-tiny", "qwen3_moe", 4, 4, 3, 16, 40, true, [], 2, true, 20261126);
    /// <summary>Qwen2-MoE: q/k/v biases, a shared expert of width 20 gated per token, norm_topk_prob false, layer 0 dense; top-2 of 4.</summary>
    public static readonly MoeTiny Qwen2Moe = new("qwen2-moe-tiny", "qwen2_moe", 2, 4, 2, 16, 40, false, [0], 1, false, 20261127, SharedFfn: 20);

    public static MoeTiny[] All => [Mixtral, Qwen3Moe, Qwen3MoeStep, Qwen2Moe];

    private static readonly Dictionary<string, Dictionary<string, double[]>> _weights = [];
    private static readonly Dictionary<string, string> _folders = [];

    public bool Qwen => ModelType != "mixtral";
    public bool HeadNorm => ModelType == "qwen3_moe";
    public bool QkvBias => ModelType == "qwen2_moe";
    public string Module => Qwen ? "mlp" : "block_sparse_moe";
    public (string Gate, string Up, string Down) ExpertNames => Qwen ? ("gate_proj", "up_proj", "down_proj") : ("w1", "w3", "w2");
    public bool IsSparse(int layer) => !MlpOnlyLayers.Contains(layer) && (layer + 1) % SparseStep == 0;

    /// <summary>The model folder (written once per test process).</summary>
    public string Folder
    {
        get
        {
            lock (_folders)
                if (!_folders.TryGetValue(Name, out var dir)) _folders[Name] = dir = Write(TempFolder.Create("temper-" + Name));
            return _folders[Name];
        }
    }

    /// <summary>The weights by HF name, flattened row-major (what model.safetensors holds, as float32).</summary>
    public IReadOnlyDictionary<string, double[]> Weights
    {
        get
        {
            lock (_weights)
                if (!_weights.TryGetValue(Name, out var w)) _weights[Name] = w = MakeWeights();
            return _weights[Name];
        }
    }

    /// <summary>The HF shape of every weight.</summary>
    public IEnumerable<(string Name, int[] Shape)> Shapes()
    {
        yield return ("model.embed_tokens.weight", [Vocab, Hidden]);
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            yield return (p + "input_layernorm.weight", [Hidden]);
            yield return (p + "self_attn.q_proj.weight", [Heads * HeadDim, Hidden]);
            yield return (p + "self_attn.k_proj.weight", [KvHeads * HeadDim, Hidden]);
            yield return (p + "self_attn.v_proj.weight", [KvHeads * HeadDim, Hidden]);
            if (QkvBias)
            {
                yield return (p + "self_attn.q_proj.bias", [Heads * HeadDim]);
                yield return (p + "self_attn.k_proj.bias", [KvHeads * HeadDim]);
                yield return (p + "self_attn.v_proj.bias", [KvHeads * HeadDim]);
            }
            yield return (p + "self_attn.o_proj.weight", [Hidden, Heads * HeadDim]);
            if (HeadNorm)
            {
                yield return (p + "self_attn.q_norm.weight", [HeadDim]);
                yield return (p + "self_attn.k_norm.weight", [HeadDim]);
            }
            yield return (p + "post_attention_layernorm.weight", [Hidden]);
            if (IsSparse(l))
            {
                string m = p + Module + ".";
                yield return (m + "gate.weight", [Experts, Hidden]);
                for (int e = 0; e < Experts; e++)
                {
                    yield return ($"{m}experts.{e}.{ExpertNames.Gate}.weight", [ExpertFfn, Hidden]);
                    yield return ($"{m}experts.{e}.{ExpertNames.Up}.weight", [ExpertFfn, Hidden]);
                    yield return ($"{m}experts.{e}.{ExpertNames.Down}.weight", [Hidden, ExpertFfn]);
                }
                if (SharedFfn > 0)
                {
                    yield return (m + "shared_expert.gate_proj.weight", [SharedFfn, Hidden]);
                    yield return (m + "shared_expert.up_proj.weight", [SharedFfn, Hidden]);
                    yield return (m + "shared_expert.down_proj.weight", [Hidden, SharedFfn]);
                    yield return (m + "shared_expert_gate.weight", [1, Hidden]);
                }
            }
            else
            {
                yield return (p + "mlp.gate_proj.weight", [DenseFfn, Hidden]);
                yield return (p + "mlp.up_proj.weight", [DenseFfn, Hidden]);
                yield return (p + "mlp.down_proj.weight", [Hidden, DenseFfn]);
            }
        }
        yield return ("model.norm.weight", [Hidden]);
        if (!Tied) yield return ("lm_head.weight", [Vocab, Hidden]);
    }

    private Dictionary<string, double[]> MakeWeights()
    {
        var rng = new Random(Seed);
        var w = new Dictionary<string, double[]>(StringComparer.Ordinal);
        foreach (var (name, shape) in Shapes())
        {
            var v = new double[shape.Aggregate(1, (a, b) => a * b)];
            bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal);
            double std = name.Contains("embed", StringComparison.Ordinal) ? 0.5
                : name.EndsWith(".gate.weight", StringComparison.Ordinal) ? 2 / Math.Sqrt(shape[^1]) : 1 / Math.Sqrt(shape[^1]);
            for (int i = 0; i < v.Length; i++)
            {
                double u = rng.NextDouble() * 2 - 1;
                v[i] = (double)(float)(norm ? 1 + 0.6 * u : std * Math.Sqrt(3) * u); // exactly the float32 that is written
            }
            w[name] = v;
        }
        return w;
    }

    /// <summary>config.json's text.</summary>
    public string ConfigJson() => ModelType == "qwen2_moe"
        ? $$"""
            {"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "attention_dropout": 0.0,
             "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "hidden_size": {{Hidden}},
             "intermediate_size": {{DenseFfn}}, "moe_intermediate_size": {{ExpertFfn}}, "shared_expert_intermediate_size": {{SharedFfn}},
             "num_experts": {{Experts}}, "num_experts_per_tok": {{TopK}}, "norm_topk_prob": {{(NormTopKProb ? "true" : "false")}},
             "decoder_sparse_step": {{SparseStep}}, "mlp_only_layers": [{{string.Join(", ", MlpOnlyLayers)}}],
             "output_router_logits": false, "router_aux_loss_coef": 0.001,
             "num_hidden_layers": {{Layers}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}},
             "max_position_embeddings": 256, "max_window_layers": {{Layers}}, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
             "sliding_window": 4096, "use_sliding_window": false, "tie_word_embeddings": {{(Tied ? "true" : "false")}}, "torch_dtype": "float32",
             "vocab_size": {{Vocab}}, "transformers_version": "4.51.0"}
            """
        : Qwen
        ? $$"""
            {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "attention_bias": false, "attention_dropout": 0.0,
             "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "hidden_size": {{Hidden}},
             "intermediate_size": {{DenseFfn}}, "moe_intermediate_size": {{ExpertFfn}}, "num_experts": {{Experts}}, "num_experts_per_tok": {{TopK}},
             "norm_topk_prob": {{(NormTopKProb ? "true" : "false")}}, "decoder_sparse_step": {{SparseStep}}, "mlp_only_layers": [{{string.Join(", ", MlpOnlyLayers)}}],
             "output_router_logits": false, "router_aux_loss_coef": 0.001,
             "num_hidden_layers": {{Layers}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}}, "head_dim": {{HeadDim}},
             "max_position_embeddings": 256, "max_window_layers": {{Layers}}, "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000.0,
             "sliding_window": null, "use_sliding_window": false, "tie_word_embeddings": {{(Tied ? "true" : "false")}}, "torch_dtype": "float32",
             "vocab_size": {{Vocab}}, "transformers_version": "4.51.0"}
            """
        : $$"""
            {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "attention_dropout": 0.0,
             "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "hidden_size": {{Hidden}},
             "intermediate_size": {{ExpertFfn}}, "num_local_experts": {{Experts}}, "num_experts_per_tok": {{TopK}},
             "output_router_logits": false, "router_aux_loss_coef": 0.02, "router_jitter_noise": 0.0,
             "num_hidden_layers": {{Layers}}, "num_attention_heads": {{Heads}}, "num_key_value_heads": {{KvHeads}},
             "max_position_embeddings": 256, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": null,
             "tie_word_embeddings": {{(Tied ? "true" : "false")}}, "torch_dtype": "float32", "vocab_size": {{Vocab}}, "transformers_version": "4.46.0"}
            """;

    /// <summary>Writes the model folder into dir (created) and returns dir; edit (optional) changes the tensors written
    /// (name, shape, values) first, e.g. to drop or reshape one.</summary>
    public string Write(string dir, Func<IEnumerable<(string Name, int[] Shape, float[] Values)>, IEnumerable<(string Name, int[] Shape, float[] Values)>>? edit = null)
    {
        Directory.CreateDirectory(dir);
        var tensors = Shapes().Select(s => (s.Name, s.Shape, Weights[s.Name].Select(x => (float)x).ToArray()));
        if (edit != null) tensors = edit(tensors);
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"),
            tensors.Select(t => new KeyValuePair<string, Tensor>(t.Item1, Tensor.FromFloats(new Shape(t.Item2), t.Item3, t.Item1))).ToList(),
            new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(dir, "config.json"), ConfigJson());
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "chat_template.jinja" })
            File.Copy(Path.Combine(Fixtures.Hf("qwen2-tiny"), f), Path.Combine(dir, f), overwrite: true);
        return dir;
    }

    /// <summary>Logits [T, V] of one sequence by the float64 reference forward (of <paramref name="weights"/>, by HF name, when given).</summary>
    public double[][] Logits(int[] ids, IReadOnlyDictionary<string, double[]>? weights = null) => Logits(ids, weights, null);

    // routerLogits (when given) collects every sparse layer's router logits [E] of every token, layer by layer.
    private double[][] Logits(int[] ids, IReadOnlyDictionary<string, double[]>? weights, List<double[]>? routerLogits)
    {
        var w = weights ?? Weights;
        var invFreq = Enumerable.Range(0, HeadDim / 2).Select(i => 1 / Math.Pow(Theta, 2.0 * i / HeadDim)).ToArray();
        int t = ids.Length, qd = Heads * HeadDim, kvd = KvHeads * HeadDim;
        var x = ids.Select(id => w["model.embed_tokens.weight"].AsSpan(id * Hidden, Hidden).ToArray()).ToArray();
        for (int l = 0; l < Layers; l++)
        {
            string p = $"model.layers.{l}.";
            var hn = x.Select(r => RmsNorm(r, w[p + "input_layernorm.weight"])).ToArray();
            double[] Proj(string module, double[] r, int rows)
            {
                var y = MatVec(w[p + module + ".weight"], r, rows);
                if (QkvBias) for (int j = 0; j < rows; j++) y[j] += w[p + module + ".bias"][j];
                return y;
            }
            var q = hn.Select(r => Proj("self_attn.q_proj", r, qd)).ToArray();
            var k = hn.Select(r => Proj("self_attn.k_proj", r, kvd)).ToArray();
            var v = hn.Select(r => Proj("self_attn.v_proj", r, kvd)).ToArray();
            for (int i = 0; i < t; i++)
            {
                if (HeadNorm)
                {
                    q[i] = HeadNorms(q[i], w[p + "self_attn.q_norm.weight"]);
                    k[i] = HeadNorms(k[i], w[p + "self_attn.k_norm.weight"]);
                }
                Rope(q[i], i, invFreq);
                Rope(k[i], i, invFreq);
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
                var o = MatVec(w[p + "self_attn.o_proj.weight"], attn, Hidden);
                for (int c = 0; c < Hidden; c++) x[i][c] += o[c];
                var h2 = RmsNorm(x[i], w[p + "post_attention_layernorm.weight"]);
                var mlp = IsSparse(l) ? SparseMlp(w, p + Module + ".", h2, $"layer {l} token {i}", routerLogits) : Mlp(w, p + "mlp.", ("gate_proj", "up_proj", "down_proj"), h2, DenseFfn);
                for (int c = 0; c < Hidden; c++) x[i][c] += mlp[c];
            }
        }
        var head = w[Tied ? "model.embed_tokens.weight" : "lm_head.weight"];
        return x.Select(r => MatVec(head, RmsNorm(r, w["model.norm.weight"]), Vocab)).ToArray();
    }

    // modeling_mixtral's MixtralSparseMoeBlock / modeling_qwen3_moe's Qwen3MoeSparseMoeBlock for one token.
    private double[] SparseMlp(IReadOnlyDictionary<string, double[]> w, string m, double[] h, string where, List<double[]>? routerLogits)
    {
        var logits = MatVec(w[m + "gate.weight"], h, Experts);
        routerLogits?.Add(logits);
        double max = logits.Max(), sum = logits.Sum(z => Math.Exp(z - max));
        var prob = logits.Select(z => Math.Exp(z - max) / sum).ToArray();
        var order = Enumerable.Range(0, Experts).OrderByDescending(e => prob[e]).ThenBy(e => e).ToArray(); // stable: ties to the lower index
        if (TopK < Experts && prob[order[TopK - 1]] - prob[order[TopK]] < 1e-6)
            throw new InvalidOperationException($"{Name}: routing near-tie at {where} (experts {order[TopK - 1]} and {order[TopK]}); pick another seed");
        var top = order.Take(TopK).ToArray();
        double norm = NormTopKProb ? top.Sum(e => prob[e]) : 1;
        var y = new double[Hidden];
        foreach (int e in top)
        {
            var ye = Mlp(w, $"{m}experts.{e}.", ExpertNames, h, ExpertFfn);
            for (int c = 0; c < Hidden; c++) y[c] += prob[e] / norm * ye[c];
        }
        if (SharedFfn > 0)
        {
            double g = 1 / (1 + Math.Exp(-MatVec(w[m + "shared_expert_gate.weight"], h, 1)[0]));
            var ys = Mlp(w, m + "shared_expert.", ("gate_proj", "up_proj", "down_proj"), h, SharedFfn);
            for (int c = 0; c < Hidden; c++) y[c] += g * ys[c];
        }
        return y;
    }

    private static double[] Mlp(IReadOnlyDictionary<string, double[]> w, string m, (string Gate, string Up, string Down) names, double[] h, int f)
    {
        var gate = MatVec(w[m + names.Gate + ".weight"], h, f);
        var up = MatVec(w[m + names.Up + ".weight"], h, f);
        var act = gate.Select((z, i) => z / (1 + Math.Exp(-z)) * up[i]).ToArray();
        return MatVec(w[m + names.Down + ".weight"], act, Hidden);
    }

    /// <summary>Mean cross-entropy of one sequence (labels as transformers: labels[t+1] is the target of position t, -100 skipped).</summary>
    public double Loss(int[] ids, int[] labels, IReadOnlyDictionary<string, double[]>? weights = null)
    {
        return Float64CrossEntropy.Mean(Logits(ids, weights), labels);
    }

    /// <summary>
    /// The float64 training objective of a batch of unpadded sequences: cross-entropy summed over every label token of all
    /// of them divided by their count, plus coef x RouterAuxLoss of their real tokens (padding excluded, as transformers
    /// excludes it given the attention mask); also returns the aux loss alone.
    /// </summary>
    public (double Total, double Aux) LossWithRouterAux(int[][] ids, int[][] labels, double coef, IReadOnlyDictionary<string, double[]>? weights = null)
    {
        var router = new List<double[]>();
        double sum = 0;
        int count = 0;
        for (int s = 0; s < ids.Length; s++)
        {
            var (rowSum, rowCount) = Float64CrossEntropy.Sum(Logits(ids[s], weights, router), labels[s]);
            sum += rowSum;
            count += rowCount;
        }
        double aux = RouterAuxLoss(router);
        return (sum / count + coef * aux, aux);
    }

    // load_balancing_loss_func: p = softmax(z) per (layer, token) pair; its top k (ties to the lower index) counted per expert
    private double RouterAuxLoss(List<double[]> routerLogits)
    {
        var chosen = new double[Experts];
        var prob = new double[Experts];
        foreach (var z in routerLogits)
        {
            double max = z.Max(), sum = z.Sum(v => Math.Exp(v - max));
            var p = z.Select(v => Math.Exp(v - max) / sum).ToArray();
            foreach (int e in Enumerable.Range(0, Experts).OrderByDescending(e => p[e]).ThenBy(e => e).Take(TopK)) chosen[e]++;
            for (int e = 0; e < Experts; e++) prob[e] += p[e];
        }
        int pairs = routerLogits.Count;
        return Experts * Enumerable.Range(0, Experts).Sum(e => chosen[e] / pairs * (prob[e] / pairs));
    }

    /// <summary>The weights with LoRA merged: W [Out,In] += s B [Out,r] A [r,In] for each module (by name, without .weight).</summary>
    public Dictionary<string, double[]> WithLora(IReadOnlyDictionary<string, (double[] A, double[] B)> lora, int rank, double scale, IReadOnlyDictionary<string, double[]>? weights = null)
    {
        var w = (weights ?? Weights).ToDictionary(kv => kv.Key, kv => kv.Value);
        foreach (var (module, (a, b)) in lora)
        {
            var merged = w[module + ".weight"].ToArray();
            int inputs = a.Length / rank, outputs = b.Length / rank;
            for (int o = 0; o < outputs; o++)
                for (int i = 0; i < inputs; i++)
                    for (int r = 0; r < rank; r++) merged[o * inputs + i] += scale * b[o * rank + r] * a[r * inputs + i];
            w[module + ".weight"] = merged;
        }
        return w;
    }

    private static double[] MatVec(double[] m, double[] x, int rows)
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

    // HF rotate_half RoPE of every head in place: pairs (i, i + D/2) turn by pos / theta^(2i/D).
    private static void Rope(double[] x, int pos, double[] invFreq)
    {
        int half = HeadDim / 2;
        for (int h = 0; h < x.Length / HeadDim; h++)
            for (int i = 0; i < half; i++)
            {
                double a = pos * invFreq[i], c = Math.Cos(a), s = Math.Sin(a);
                int lo = h * HeadDim + i, hi = lo + half;
                (x[lo], x[hi]) = (x[lo] * c - x[hi] * s, x[hi] * c + x[lo] * s);
            }
    }
}
