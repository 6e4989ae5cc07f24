// The method knobs of the preference trainers (the rest of a run's settings are SftOptions'):
// beta (DPO/KTO/CPO temperature; ORPO's lambda, as TRL names it), DPO loss type, label smoothing and
// RPO's alpha, KTO's loss type and desirable/undesirable weights, CPO's loss type, SimPO gamma and
// BC weight, and where the reference comes from. Check refuses values TRL would misread or ignore.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Training.Losses;

namespace Temper.Training.Preference;

/// <summary>Which paired preference recipe DpoTrainer runs: DPO (with a reference), or reference-free ORPO or CPO.</summary>
public enum PreferenceMethod { Dpo, Orpo, Cpo }

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
    /// <summary>TRL's DPO rpo_alpha: alpha times the chosen completions' NLL added to the DPO loss; null = off.</summary>
    public double? RpoAlpha { get; init; }
    /// <summary>TRL's CPO loss_type: sigmoid, hinge, ipo or simpo.</summary>
    public CpoLossType CpoLossType { get; init; } = CpoLossType.Sigmoid;
    /// <summary>TRL's simpo_gamma (target reward margin; the loss subtracts gamma/beta from the log-ratio); null = 0.5, only with simpo.</summary>
    public double? SimpoGamma { get; init; }
    /// <summary>TRL's cpo_alpha: weight of the chosen completions' NLL (the BC regulariser).</summary>
    public double CpoAlpha { get; init; } = 1;

    public const double DefaultSimpoGamma = 0.5;

    /// <summary>Refuses, in one line naming the flag, values the method cannot take. TRL accepts negative
    /// alphas and gamma, any label smoothing, and ignores simpo_gamma without simpo and label smoothing with hinge/ipo;
    /// Temper refuses them (label smoothing must lie in [0, 0.5), where it still favours the chosen completion).</summary>
    public void Check(PreferenceMethod method)
    {
        if (!(Beta > 0)) throw new TemperException($"--beta must be > 0 (got {Beta})");
        if (RpoAlpha is { } rpo && (method != PreferenceMethod.Dpo || !(rpo >= 0)))
            throw new TemperException(method != PreferenceMethod.Dpo ? "--rpo-alpha is a dpo option" : $"--rpo-alpha must be >= 0 (got {rpo})");
        if (method != PreferenceMethod.Cpo) return;
        if (!(CpoAlpha >= 0)) throw new TemperException($"--cpo-alpha must be >= 0 (got {CpoAlpha})");
        if (SimpoGamma is { } g)
        {
            if (CpoLossType != CpoLossType.Simpo) throw new TemperException($"--simpo-gamma needs --loss-type simpo (got {CpoLoss.Name(CpoLossType)})");
            if (!(g >= 0)) throw new TemperException($"--simpo-gamma must be >= 0 (got {g})");
        }
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 0.5)) throw new TemperException($"--label-smoothing must be in [0, 0.5) (got {LabelSmoothing})");
        if (LabelSmoothing > 0 && CpoLossType is CpoLossType.Hinge or CpoLossType.Ipo)
            throw new TemperException($"--label-smoothing applies to the sigmoid and simpo losses, not {CpoLoss.Name(CpoLossType)}");
    }

    public JsonObject ToJson(PreferenceMethod method = PreferenceMethod.Dpo)
    {
        var json = new JsonObject
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
            ["rpo_alpha"] = RpoAlpha,
        };
        if (method == PreferenceMethod.Cpo)
        {
            json["cpo_loss_type"] = CpoLoss.Name(CpoLossType);
            json["simpo_gamma"] = CpoLossType == CpoLossType.Simpo ? SimpoGamma ?? DefaultSimpoGamma : null;
            json["cpo_alpha"] = CpoAlpha;
        }
        return json;
    }
}
