// `temper dpo`, `temper kto`, `temper orpo` and `temper cpo`: the preference trainers on TRL's data forms
// (prompt/chosen/rejected; prompt/completion/label for KTO). --beta is DPO/KTO/CPO's beta and ORPO's
// lambda (TRL's naming). The reference is the base with the adapter off unless --ref-adapter
// (base + that frozen adapter, which the policy starts from) or --ref-model is given; ORPO and CPO have
// none. Defaults are TRL's (CPOConfig: beta 0.1, sigmoid, cpo_alpha 1, simpo_gamma 0.5, lr 1e-6).
using System.CommandLine;
using Temper.Training.Losses;
using Temper.Training.Preference;

namespace Temper.Cli.Commands;

internal static class PreferenceCommand
{
    public static Command Create(string method)
    {
        var flags = new TrainingFlags(method switch { "orpo" => 8e-6f, "cpo" => 1e-6f, _ => 5e-6f });
        var beta = new Option<double>("--beta") { Description = method == "orpo" ? "ORPO's lambda (TRL calls it beta)" : "Preference temperature", DefaultValueFactory = _ => 0.1 };
        var lossType = new Option<string>("--loss", "--loss-type") { Description = "TRL's loss_type: sigmoid, ipo, robust, hinge, exo_pair, nca_pair, bco_pair, sppo_hard, apo_zero, apo_down, discopop or sigmoid_norm", DefaultValueFactory = _ => "sigmoid" };
        var smoothing = new Option<double>("--label-smoothing") { Description = method == "cpo" ? "Label smoothing of the sigmoid and simpo losses" : "Conservative DPO label smoothing", DefaultValueFactory = _ => 0 };
        var rpoAlpha = new Option<double?>("--rpo-alpha") { Description = "RPO: add this times the NLL of the chosen completions (TRL's rpo_alpha; the paper uses 1)" };
        var cpoLoss = new Option<string>("--loss", "--loss-type") { Description = "TRL's CPO loss_type: sigmoid, hinge, ipo or simpo", DefaultValueFactory = _ => "sigmoid" };
        var simpoGamma = new Option<double?>("--simpo-gamma") { Description = "SimPO's target reward margin (default 0.5; with --loss-type simpo only)" };
        var cpoAlpha = new Option<double>("--cpo-alpha") { Description = "Weight of the chosen completions' NLL (TRL's cpo_alpha)", DefaultValueFactory = _ => 1 };
        var refAdapter = new Option<string?>("--ref-adapter") { Description = "Reference = base + this frozen adapter (the policy starts from a copy)" };
        var refModel = new Option<string?>("--ref-model") { Description = "Reference = a separate model folder" };
        var precompute = new Option<bool>("--precompute-ref") { Description = "Compute reference log-probs once, cached beside the run" };
        var ktoLoss = new Option<string>("--loss", "--loss-type") { Description = "TRL's KTO loss_type: kto, or apo_zero_unpaired (no KL estimate)", DefaultValueFactory = _ => "kto" };
        var wUp = new Option<double>("--desirable-weight") { Description = "KTO weight of desirable examples", DefaultValueFactory = _ => 1 };
        var wDown = new Option<double>("--undesirable-weight") { Description = "KTO weight of undesirable examples", DefaultValueFactory = _ => 1 };
        var description = method switch
        {
            "dpo" => "Direct Preference Optimization on prompt/chosen/rejected data",
            "kto" => "KTO on unpaired prompt/completion/label data",
            "cpo" => "CPO / SimPO (no reference model) on prompt/chosen/rejected data",
            _ => "ORPO (no reference model) on prompt/chosen/rejected data",
        };
        bool referenceFree = method is "orpo" or "cpo";
        var cmd = new Command(method, description) { beta };
        flags.AddTo(cmd);
        if (method == "dpo") { cmd.Add(lossType); cmd.Add(smoothing); cmd.Add(rpoAlpha); }
        if (method == "kto") { cmd.Add(ktoLoss); cmd.Add(wUp); cmd.Add(wDown); }
        if (method == "cpo") { cmd.Add(cpoLoss); cmd.Add(smoothing); cmd.Add(simpoGamma); cmd.Add(cpoAlpha); }
        if (!referenceFree) { cmd.Add(refAdapter); cmd.Add(refModel); cmd.Add(precompute); }
        cmd.SetGuardedAction(p =>
        {
            var o = flags.Read(p);
            var po = new PreferenceOptions
            {
                Beta = p.GetValue(beta),
                LossType = method == "dpo" ? DpoLoss.Parse(p.GetValue(lossType)!) : DpoLossType.Sigmoid,
                LabelSmoothing = method is "dpo" or "cpo" ? p.GetValue(smoothing) : 0,
                RpoAlpha = method == "dpo" ? p.GetValue(rpoAlpha) : null,
                CpoLossType = method == "cpo" ? CpoLoss.Parse(p.GetValue(cpoLoss)!) : CpoLossType.Sigmoid,
                SimpoGamma = method == "cpo" ? p.GetValue(simpoGamma) : null,
                CpoAlpha = method == "cpo" ? p.GetValue(cpoAlpha) : 1,
                KtoLossType = method == "kto" ? p.GetValue(ktoLoss)! : "kto",
                DesirableWeight = p.GetValue(wUp),
                UndesirableWeight = p.GetValue(wDown),
                RefAdapter = referenceFree ? null : p.GetValue(refAdapter),
                RefModel = referenceFree ? null : p.GetValue(refModel),
                PrecomputeRef = !referenceFree && p.GetValue(precompute),
            };
            var be = CliOptions.Backend(p, o.Threads);
            if (method == "kto")
            {
                var kto = new KtoTrainer(o, po, be);
                return Cli.TrainingFlags.RunWithProgress(method, o.OutDir, (s, w) => { kto.OnStep = s; kto.OnWarning = w; }, kto.Run);
            }
            var dpo = new DpoTrainer(o, po, be, method switch { "orpo" => PreferenceMethod.Orpo, "cpo" => PreferenceMethod.Cpo, _ => PreferenceMethod.Dpo });
            return Cli.TrainingFlags.RunWithProgress(method, o.OutDir, (s, w) => { dpo.OnStep = s; dpo.OnWarning = w; }, dpo.Run);
        });
        return cmd;
    }
}
