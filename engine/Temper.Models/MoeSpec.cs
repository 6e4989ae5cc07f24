// The mixture-of-experts fields of a Mixtral (model_type mixtral), Qwen3-MoE (qwen3_moe) or Qwen2-MoE (qwen2_moe)
// config.json, as transformers reads them: E experts (num_local_experts / num_experts), top-k (num_experts_per_tok),
// each expert's width F (Mixtral: intermediate_size; Qwen: moe_intermediate_size), whether the k routing weights
// are renormalised to sum 1 (Mixtral always; Qwen norm_topk_prob, false when absent), which layers are sparse
// (Mixtral all; Qwen layer i unless i is in mlp_only_layers or (i + 1) % decoder_sparse_step != 0; the others keep
// a dense MLP of intermediate_size), and Qwen2-MoE's shared expert (shared_expert_intermediate_size, gated per token
// by sigmoid(shared_expert_gate h)); output_router_logits and router_aux_loss_coef (transformers' router load-balancing loss,
// added to the training loss when output_router_logits; the coefficient defaults to 0.001, the Mixtral/Qwen2-MoE/Qwen3-MoE
// config classes' default). Bad values are refused here, one line naming config.json and the field.
using System.Text.Json.Nodes;
using Temper.Core;

namespace Temper.Models;

public sealed record MoeSpec
{
    public required int Experts { get; init; }               // E
    public required int TopK { get; init; }                  // k
    public required int ExpertIntermediateSize { get; init; } // F of each expert
    public required bool NormTopKProb { get; init; }
    /// <summary>Per layer: true for a mixture-of-experts MLP, false for a dense one.</summary>
    public required IReadOnlyList<bool> SparseLayers { get; init; }
    /// <summary>The HF module under each layer (block_sparse_moe or mlp) and its experts' projection names (w1/w3/w2 or gate_proj/up_proj/down_proj).</summary>
    public required string Module { get; init; }
    public required (string Gate, string Up, string Down) ExpertNames { get; init; }
    /// <summary>Qwen2-MoE: the shared expert's width (0: no shared expert).</summary>
    public int SharedExpertIntermediateSize { get; init; }
    /// <summary>config.json's output_router_logits: transformers then adds router_aux_loss_coef x the load-balancing loss to the training loss.</summary>
    public bool OutputRouterLogits { get; init; }
    /// <summary>config.json's router_aux_loss_coef (>= 0; 0.001 when absent, as the config classes default).</summary>
    public double RouterAuxLossCoef { get; init; } = 0.001;
    /// <summary>The config key the expert count was read from (for messages).</summary>
    public required string ExpertsField { get; init; }

    public bool IsSparse(int layer) => SparseLayers[layer];

    internal static bool IsMoeType(string modelType) => modelType is "mixtral" or "qwen3_moe" or "qwen2_moe";

    internal static MoeSpec Parse(JsonObject root, ConfigReader r, string path, string modelType, int layers)
    {
        bool mixtral = modelType == "mixtral";
        // Qwen-MoE checkpoints name the count num_experts; transformers 5 saves it as num_local_experts, as Mixtral's.
        string expertsField = mixtral || r.OptInt("num_experts") == null && r.OptInt("num_local_experts") != null ? "num_local_experts" : "num_experts";
        int experts = r.Int(expertsField);
        if (experts < 1) throw new TemperException($"{path}: field '{expertsField}' must be >= 1 (got {experts})");
        int topK = r.Int("num_experts_per_tok");
        if (topK < 1 || topK > experts)
            throw new TemperException($"{path}: field 'num_experts_per_tok' must be between 1 and {expertsField} {experts} (got {topK})");
        int width = r.Int(mixtral ? "intermediate_size" : "moe_intermediate_size");
        if (width < 1) throw new TemperException($"{path}: field '{(mixtral ? "intermediate_size" : "moe_intermediate_size")}' must be >= 1 (got {width})");
        var sparse = new bool[layers];
        if (mixtral) Array.Fill(sparse, true);
        else
        {
            int step = r.OptInt("decoder_sparse_step") ?? 1;
            if (step < 1) throw new TemperException($"{path}: field 'decoder_sparse_step' must be >= 1 (got {step})");
            var dense = r.IntOrList("mlp_only_layers");
            foreach (int l in dense)
                if (l < 0 || l >= layers) throw new TemperException($"{path}: field 'mlp_only_layers' names layer {l}, outside the model's {layers} layers");
            for (int l = 0; l < layers; l++) sparse[l] = !dense.Contains(l) && (l + 1) % step == 0;
        }
        int shared = 0;
        if (modelType == "qwen2_moe")
        {
            shared = r.Int("shared_expert_intermediate_size");
            if (shared < 1) throw new TemperException($"{path}: field 'shared_expert_intermediate_size' must be >= 1 (got {shared})");
        }
        double auxCoef = r.OptDouble("router_aux_loss_coef") ?? 0.001;
        if (!(auxCoef >= 0) || double.IsInfinity(auxCoef)) throw new TemperException($"{path}: field 'router_aux_loss_coef' must be a finite number >= 0 (got {auxCoef})");
        return new MoeSpec
        {
            Experts = experts,
            TopK = topK,
            ExpertIntermediateSize = width,
            NormTopKProb = mixtral || (r.OptBool("norm_topk_prob") ?? false),
            SparseLayers = sparse,
            Module = mixtral ? "block_sparse_moe" : "mlp",
            ExpertNames = mixtral ? ("w1", "w3", "w2") : ("gate_proj", "up_proj", "down_proj"),
            ExpertsField = expertsField,
            SharedExpertIntermediateSize = shared,
            OutputRouterLogits = r.OptBool("output_router_logits") ?? false,
            RouterAuxLossCoef = auxCoef,
        };
    }
}
