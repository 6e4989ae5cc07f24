// A bf16 model keeping its MLPs' gate and up and its attentions' q, k and v in bf16 during training
// (DecoderBackprop.KeepsBf16Mlp and KeepsBf16Attention: the device backends, or the CPU backend asked to): on the fixture
// models with bf16 weights and their PEFT adapter, one LoRA pass
//   - holds exactly layers x B*T x (4 F + 2 (H + 2 Hkv) D) bytes less at its peak than keeping them in f32 (two [B*T,F] and
//     the q, k, v tensors at 2 bytes instead of 4 in every layer), and the memory plan's activations drop by the same bytes;
//     with gradient checkpointing the recomputed layer briefly holds up's f32 product beside act while it rounds, and its
//     f32 q, k, v beside their copies, so its peak is no higher than with f32 and the plan drops by one layer's q, k, v alone;
//   - gives the f32-kept pass's loss and LoRA gradients within bf16 rounding (loss 1e-3, gradients 2e-2 relative L2) but
//     not its bits (the rounding happened);
//   - is the same, bit for bit, with gradient checkpointing (the recomputed layer rounds as the forward did);
//   - matches ILGPU's CPU accelerator, which keeps them so by default, within 1e-4 (loss and gradients).
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Kernels.Ilgpu;
using Temper.Models;
using Temper.Training;

namespace Temper.Tests;

public class Bf16ActivationTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    private sealed record Pass(float[] Losses, float[][] Grads, long Peak);

    private static Pass Run(string name, IBackend be, bool checkpointing)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0];
        using var lm = LanguageModel.Load(dir, be, Path.Combine(dir, "adapter"), weightDType: DType.BF16);
        Assert.Equal(be.KeepsBf16Activations, DecoderBackprop.KeepsBf16Mlp(be, lm.Weights.Layers[0]));
        Assert.Equal(be.KeepsBf16Activations, DecoderBackprop.KeepsBf16Attention(be, lm.Weights.Layers[0]));
        using var ps = TrainableParameters.Lora(lm.Weights, be);
        var bp = new DecoderBackprop(lm.Decoder) { GradientCheckpointing = checkpointing };
        var losses = bp.Run(ids, labels, [], b, 0.01f, ps.GradOf);
        return new Pass(losses, [.. ps.All.Select(p => { using var h = be.ToHost(p.Grad); return h.ToFloatArray(); })], bp.PeakActivationBytes);
    }

    [Theory, MemberData(nameof(Models))]
    public void Bf16_gate_up_q_k_v_save_their_half_at_the_peak_as_planned_within_bf16_rounding(string name)
    {
        var cfg = ModelConfig.Load(Fixtures.Hf(name));
        using var r = SafetensorsFile.Open(Path.Combine(Fixtures.Hf(name), "reference.safetensors"));
        int b = r.Get("input_ids").Shape[0], t = r.Get("input_ids").Shape[1];
        long qkv = (long)b * t * (cfg.NumHeads + 2 * cfg.NumKvHeads) * cfg.HeadDim; // one layer's q, k, v elements
        long saved = (long)cfg.NumLayers * (b * t * cfg.IntermediateSize * 4L + qkv * 2);

        var f32 = Run(name, new CpuBackend(1), checkpointing: false);
        var bf16 = Run(name, new CpuBackend(1) { KeepsBf16Activations = true }, checkpointing: false);
        Assert.Equal(saved, f32.Peak - bf16.Peak);
        var lora = LoraConfig.Load(Path.Combine(Fixtures.Hf(name), "adapter"));
        MemoryPlan Plan(bool kept, bool checkpointing) => MemoryPlan.For(cfg, new MemoryPlanOptions(b, t, Lora: lora, GradientCheckpointing: checkpointing, MatrixBytes: 2)
            { Bf16MlpActivations = kept, Bf16AttentionInputs = kept });
        Assert.Equal(saved, Plan(false, false).Activations - Plan(true, false).Activations);
        Assert.Equal(qkv * 2, Plan(false, true).Activations - Plan(true, true).Activations);

        Assert.NotEqual(f32.Losses, bf16.Losses);
        double lossF32 = f32.Losses.Sum(), lossBf16 = bf16.Losses.Sum();
        Assert.True(Math.Abs(lossF32 - lossBf16) <= 1e-3 * Math.Abs(lossF32), $"loss {lossBf16} with bf16 activations, {lossF32} with f32");
        for (int i = 0; i < f32.Grads.Length; i++)
        {
            double err = RelativeL2(f32.Grads[i], bf16.Grads[i]);
            Assert.True(err < 2e-2, $"gradient {i}: relative L2 {err:G3} between bf16 and f32 activations");
        }

        var recomputed = Run(name, new CpuBackend(1) { KeepsBf16Activations = true }, checkpointing: true);
        Assert.Equal(bf16.Losses, recomputed.Losses);
        for (int i = 0; i < bf16.Grads.Length; i++) Assert.Equal(bf16.Grads[i], recomputed.Grads[i]);
        long f32Recomputed = Run(name, new CpuBackend(1), checkpointing: true).Peak;
        Assert.True(recomputed.Peak <= f32Recomputed, $"checkpointed peak {recomputed.Peak} with bf16 activations, {f32Recomputed} with f32");

        using var device = IlgpuBackend.Create("ilgpu-cpu");
        var ilgpu = Run(name, device, checkpointing: false);
        Assert.Equal(bf16.Peak, ilgpu.Peak);
        Assert.True(Math.Abs(ilgpu.Losses.Sum() - lossBf16) <= 1e-4 * Math.Abs(lossBf16), $"ILGPU loss {ilgpu.Losses.Sum()} vs the CPU's {lossBf16}");
        for (int i = 0; i < bf16.Grads.Length; i++)
        {
            double err = RelativeL2(bf16.Grads[i], ilgpu.Grads[i]);
            Assert.True(err < 1e-4, $"gradient {i}: relative L2 {err:G3} between ILGPU and the CPU, both with bf16 activations");
        }
    }

    private static double RelativeL2(float[] reference, float[] actual)
    {
        double num = 0, den = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            num += (actual[i] - (double)reference[i]) * (actual[i] - (double)reference[i]);
            den += (double)reference[i] * reference[i];
        }
        return Math.Sqrt(num / Math.Max(den, 1e-30));
    }
}
