// The method knobs of the preference trainers (the rest of a run's settings are SftOptions'):
// beta (DPO/KTO temperature; ORPO's lambda, as TRL names it), DPO loss type and label smoothing,
// KTO's loss type and desirable/undesirable weights, and where the reference comes from.
using System.Text.Json.Nodes;
using Temper.Training.Losses;

namespace Temper.Training.Preference;

public sealed record PreferenceOptions
{
    public double Beta { get; init; } = 0.1;
    public DpoLossType LossType { get; init; } = DpoLossType.Sigmoid;
    public double LabelSmoothing { get; init; }
    /// <summary>TRL's KTO loss_type: kto, or apo_zero_unpaired (no KL estimate: desirable 1 - s(beta r), undesirable s(beta r)).</summary>
    public string KtoLossType { get; init; } = "kto";
    public double DesirableWeight { get; init; } = 1;
    public double UndesirableWeight { get; init; } = 1;
    /// <summary>Reference = base + this frozen adapter; the policy starts as a trainable copy of it.</summary>
    public string? RefAdapter { get; init; }
    /// <summary>Reference = a separate model folder.</summary>
    public string? RefModel { get; init; }
    /// <summary>Compute reference log-probs once, cached in OUT/ref_logps.json.</summary>
    public bool PrecomputeRef { get; init; }

    public JsonObject ToJson() => new()
    {
        ["beta"] = Beta,
        ["loss_type"] = DpoLoss.Name(LossType),
        ["label_smoothing"] = LabelSmoothing,
        ["kto_loss_type"] = KtoLossType,
        ["desirable_weight"] = DesirableWeight,
        ["undesirable_weight"] = UndesirableWeight,
        ["ref_adapter"] = RefAdapter,
        ["ref_model"] = RefModel,
        ["precompute_ref"] = PrecomputeRef,
    };
}
