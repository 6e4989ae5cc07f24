// transformers' router load-balancing loss in the preference recipes, as TRL's DPO, KTO, ORPO and CPO trainers add it
// (trl 0.24: aux_loss_enabled = config.output_router_logits, aux_loss_coef = config.router_aux_loss_coef, which the
// Mixtral/Qwen-MoE config classes default to 0.001): the aux loss of the policy's gradient forward (DPO, ORPO, CPO: the
// concatenated [chosen...; rejected...] rows; KTO: the completion rows, not the KL estimate's mismatched ones) over its
// real tokens, and coef x aux added to the micro-batch's mean loss. The Trainer then averages the micro-batches (their
// compute_loss takes no num_items_in_batch: each loss / gradient_accumulation_steps); Temper weights each micro-batch by
// its share of the step's examples (1 / --grad-accum for equal micro-batches), so the pass's router gradient is
// coef x share x d aux and the step's loss gains coef x sum share x aux.
using Temper.Models;

namespace Temper.Training.Preference;

public static class RouterAuxPass
{
    /// <summary>
    /// Runs pass (one gradient pass of backprop over the policy's rows) with coef x share x the load-balancing loss's gradient,
    /// and returns that pass's aux loss; with coef null (the config asks for no such loss) just runs it and returns 0.
    /// backprop.RouterAuxLossCoef is restored after.
    /// </summary>
    public static double Run(DecoderBackprop backprop, double? coef, double share, Action pass)
    {
        if (coef == null)
        {
            pass();
            return 0;
        }
        var saved = backprop.RouterAuxLossCoef;
        backprop.RouterAuxLossCoef = coef * share;
        try
        {
            pass();
            return backprop.RouterAuxLoss;
        }
        finally
        {
            backprop.RouterAuxLossCoef = saved;
        }
    }

    /// <summary>
    /// The coefficient a preference recipe adds (config.json's router_aux_loss_coef when it sets output_router_logits), or
    /// null when the model's config does not ask for the loss. Leaves the run's no-gradient passes (policy and reference
    /// log-probs) without it: backprop.RouterAuxLossCoef becomes null, so only passes through Run add it.
    /// </summary>
    public static double? Take(DecoderBackprop backprop, ModelConfig config)
    {
        backprop.RouterAuxLossCoef = null;
        return config.RouterAuxLossCoef;
    }
}
