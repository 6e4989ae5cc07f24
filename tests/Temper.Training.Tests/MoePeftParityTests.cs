// Mixture-of-experts LoRA parity with transformers + PEFT (tests/reference/make_moe_lora_reference.py; owed, so skipped until a
// machine with torch writes its fixture): PEFT's LoRA (r 4, alpha 8) over q_proj, v_proj, every expert projection, the
// router (and Qwen2-MoE's shared expert and its gate) on Mixtral and Qwen2-MoE, the fixture's config.json setting
// output_router_logits with router_aux_loss_coef 0.02. One right-padded batch input_ids/attention_mask/labels [2,24] through
// DecoderBackprop with that coefficient: the cross-entropy and transformers' load_balancing_loss_func (aux_loss) each within
// 1e-5 relative, the loss = ce + coef x aux within 1e-5 relative of model(..., labels=...).loss, and every lora_A [r,In] /
// lora_B [Out,r] gradient within 1e-4 relative L2 of PEFT's, with exactly the fixture's parameters trained.
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

public sealed class MoePeftParityTests
{
    public static TheoryData<string> Folders => ["mixtral-tiny-lora", "qwen2-moe-tiny-lora"];

    private static void AssertRelative(string what, double expected, double actual, double tolerance) =>
        Assert.True(Math.Abs(actual - expected) <= tolerance * Math.Abs(expected), $"{what}: {actual:R}, transformers {expected:R}");

    [Theory, MemberData(nameof(Folders))]
    public void Loss_aux_loss_and_lora_gradients_match_transformers_and_peft(string name) => AssertMatches(Fixtures.Hf(name));

    /// <summary>Checks the model in DIR with DIR/adapter against DIR/reference.safetensors (the script's layout).</summary>
    internal static void AssertMatches(string dir)
    {
        string name = Path.GetFileName(dir);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, new CpuBackend(), Path.Combine(dir, "adapter"));
        var moe = lm.Config.Moe;
        Assert.NotNull(moe);
        Assert.True(moe.OutputRouterLogits, $"{name}/config.json: output_router_logits should be true");
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var mask = r.Get("attention_mask").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0], t = ids.Length / b;
        Assert.Contains(0, mask); // the padded row, whose padding neither the loss nor the aux loss may count
        int count = Enumerable.Range(0, ids.Length).Count(i => i % t != 0 && labels[i] != -100);

        using var ps = TrainableParameters.Lora(lm.Weights, lm.Decoder.Backend);
        var bp = new DecoderBackprop(lm.Decoder) { RouterAuxLossCoef = moe.RouterAuxLossCoef };
        double ce = bp.Run(ids, labels, mask, b, 1f / count, ps.GradOf).Sum(x => (double)x) / count;
        double aux = bp.RouterAuxLoss;
        AssertRelative("ce_loss", r.Get("ce_loss").Floats[0], ce, 1e-5);
        AssertRelative("aux_loss", r.Get("aux_loss").Floats[0], aux, 1e-5);
        AssertRelative("loss", r.Get("loss").Floats[0], ce + moe.RouterAuxLossCoef * aux, 1e-5);

        int experts = 0, routers = 0;
        foreach (var p in ps.All)
        {
            string key = "grad." + p.Name;
            Assert.True(r.Contains(key), $"{key}: Temper trains it, PEFT's adapter has no such tensor");
            double err = GradientParityTests.RelativeL2(r.Get(key).ToFloatArray(), p.Grad.Floats);
            Assert.True(err < 1e-4, $"{key}: relative L2 error {err:G3}");
            if (p.Name.Contains(".experts.", StringComparison.Ordinal)) experts++;
            if (p.Name.Contains($"{moe.Module}.gate.lora_", StringComparison.Ordinal)) routers++;
        }
        Assert.Equal(r.Entries.Count(e => e.Name.StartsWith("grad.", StringComparison.Ordinal)), ps.All.Count);
        Assert.True(experts > 0 && routers > 0, $"{experts} expert and {routers} router LoRA tensors compared");
    }
}
