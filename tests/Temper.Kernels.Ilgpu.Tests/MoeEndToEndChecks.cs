// Mixture-of-experts models (MoeTiny's Mixtral, Qwen2-MoE and Qwen3-MoE folders) on an ILGPU device: the decoder's routed
// experts (router product on the device, [N,E] logits read back for softmax/top-k, rows gathered, ScaleRows and
// the scatter-add on the device) give the CPU backend's logits for a padded batch (and the float64 forward's),
// the same greedy tokens through the KV cache, the same LoRA gradients (expert, router, attention) and embedding
// gradient from one training backward, keep every expert weight on the device and give it all back on
// dispose; in NF4 (--qlora: routers, experts, the shared expert and its gate quantised) the experts' codes live on the
// device and the logits are the CPU backend's NF4 ones. Instantiated for ILGPU's CPU accelerator (CI) and CUDA (skipped without a device).
using Temper.Core;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Tests;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class MoeEndToEndChecks(DeviceFixture device)
{
    private static readonly int[] A = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501], Bseq = [300, 12, 9, 77, 123];

    // Launches are not free on the CPU accelerator: two variants for logits (all-sparse Mixtral; Qwen2-MoE with a dense
    // layer, norm_topk_prob false and the gated shared expert), Qwen3-MoE for generation, few tokens.
    public static TheoryData<string> Variants => new() { MoeTiny.Mixtral.Name, MoeTiny.Qwen2Moe.Name };

    private static MoeTiny Variant(string name) => MoeTiny.All.Single(m => m.Name == name);

    private IlgpuBackend B => device.Backend;

    private float[] Down(Tensor t)
    {
        Assert.Same(B, t.Storage.Device);
        using var h = B.ToHost(t);
        return h.ToFloatArray();
    }

    [Theory, MemberData(nameof(Variants))]
    public void Logits_of_a_padded_batch_give_the_cpu_backends_and_the_float64_forwards(string name)
    {
        var m = Variant(name);
        int t = A.Length;
        var ids = A.Concat(Bseq).Concat(Enumerable.Repeat(0, t - Bseq.Length)).ToArray();
        var mask = Enumerable.Repeat(1, t + Bseq.Length).Concat(Enumerable.Repeat(0, t - Bseq.Length)).ToArray();
        using var lm = LanguageModel.Load(m.Folder, B);
        using var logits = lm.Logits(ids, 2, mask);
        var device = Down(logits);
        using var cpuLm = LanguageModel.Load(m.Folder, new CpuBackend());
        using var cpu = cpuLm.Logits(ids, 2, mask);
        int v = MoeTiny.Vocab;
        var real = Enumerable.Range(0, ids.Length).Where(i => mask[i] == 1).ToArray();
        LogitParity.AssertClose(real.SelectMany(i => cpu.Floats.Slice(i * v, v).ToArray()).ToArray(), real.SelectMany(i => device.AsSpan(i * v, v).ToArray()).ToArray(), rel: 1e-5);
        var reference = m.Logits(A).SelectMany(r => r.Select(x => (float)x)).ToArray();
        LogitParity.AssertClose(reference, device.AsSpan(0, t * v), rel: 1e-4);
    }

    [Fact]
    public void Nf4_experts_live_on_the_device_and_give_the_cpu_backends_nf4_logits()
    {
        var m = MoeTiny.Qwen2Moe;
        string dir = m.Write(TempFolder.Create("temper-ilgpu-moe-nf4"));
        using var cpuLm = LanguageModel.Load(dir, new CpuBackend(), qlora: true); // quantises once, saved in dir
        using var lm = LanguageModel.Load(dir, B, qlora: true);
        var moe = lm.Weights.Layers.Where(l => l.Moe != null).SelectMany(l => l.Moe!.Projections).ToList();
        Assert.Equal(1 + 4 * 3 + 3 + 1, moe.Count);
        Assert.All(moe, p => Assert.Same(B, p.Nf4!.Codes.Storage.Device));
        using var logits = lm.Logits(Bseq, 1);
        using var cpu = cpuLm.Logits(Bseq, 1);
        LogitParity.AssertClose(cpu.Floats, Down(logits), rel: 1e-5);
    }

    [Fact]
    public void Greedy_generation_through_the_cache_gives_the_cpu_backends_tokens()
    {
        var m = MoeTiny.Qwen3Moe;
        var options = new GenerationOptions { MaxNewTokens = 4, IgnoreEos = true };
        using var lm = LanguageModel.Load(m.Folder, B);
        var device = new Generator(lm.Decoder).Generate([A, Bseq], options).Select(r => r.GeneratedIds.ToArray()).ToArray();
        using var cpuLm = LanguageModel.Load(m.Folder, new CpuBackend());
        var cpu = new Generator(cpuLm.Decoder).Generate([A, Bseq], options).Select(r => r.GeneratedIds.ToArray()).ToArray();
        Assert.Equal(cpu, device);
    }

    // LoRA on layer 0's q_proj, layer 1's experts' w1/w2/w3 and both routers, B drawn non-zero (the same values on both backends), and the
    // embedding trained too: every gradient of one backward pass (DecoderBackprop's MoE backward).
    private static Dictionary<string, float[]> LoraGradients(IBackend be)
    {
        using var lm = LanguageModel.Load(MoeTiny.Mixtral.Folder, be);
        var rng = new Random(3);
        var grads = new Dictionary<Tensor, (string Name, Tensor Grad)>(ReferenceEqualityComparer.Instance);
        foreach (var p in lm.Weights.Projections.Where(p => p.Name.EndsWith("0.self_attn.q_proj", StringComparison.Ordinal) || p.Name.Contains("1.block_sparse_moe.experts.", StringComparison.Ordinal) || p.Name.EndsWith(".gate", StringComparison.Ordinal)))
        {
            float[] Draw(int count, float scale) => Enumerable.Range(0, count).Select(_ => (float)(rng.NextDouble() - 0.5) * scale).ToArray();
            p.Lora = new LoraView(be.FromHost(Tensor.FromFloats(new Shape(2, p.In), Draw(2 * p.In, 0.3f))), be.FromHost(Tensor.FromFloats(new Shape(p.Out, 2), Draw(2 * p.Out, 0.3f))), 2f);
            grads[p.Lora.A] = (p.Name + ".lora_A", be.Zeros(p.Lora.A.Shape));
            grads[p.Lora.B] = (p.Name + ".lora_B", be.Zeros(p.Lora.B.Shape));
        }
        grads[lm.Weights.Embed] = ("embed", be.Zeros(lm.Weights.Embed.Shape));
        int[] labels = [-100, .. A[1..]];
        new DecoderBackprop(lm.Decoder).Run(A, labels, [], 1, 0.1f, t => grads.TryGetValue(t, out var g) ? g.Grad : null);
        var result = new Dictionary<string, float[]>();
        foreach (var (name, g) in grads.Values)
        {
            using var host = g.IsHost ? null : be.ToHost(g);
            result[name] = (host ?? g).ToFloatArray();
            g.Dispose();
        }
        return result;
    }

    [Fact]
    public void Lora_gradients_through_the_experts_and_router_give_the_cpu_backends()
    {
        var device = LoraGradients(B);
        var cpu = LoraGradients(new CpuBackend());
        Assert.Equal(cpu.Keys.Order(), device.Keys.Order());
        foreach (var (name, g) in cpu)
            if (g.Any(x => x != 0)) LogitParity.AssertClose(g, device[name], rel: 1e-4);
            else Assert.All(device[name], x => Assert.Equal(0f, x)); // an expert no token went to
    }

    [Fact]
    public void Expert_weights_live_on_the_device_and_go_back_on_dispose()
    {
        _ = B; // skips where the device is missing
        using var own = IlgpuBackend.Create(device.Kind);
        var meter = (IMemoryMeter)own;
        long before = meter.LiveBytes;
        var lm = LanguageModel.Load(MoeTiny.Mixtral.Folder, own);
        var experts = lm.Weights.Layers.SelectMany(l => l.Moe!.Projections).ToList();
        Assert.Equal(2 * (1 + 4 * 3), experts.Count);
        Assert.All(experts, p => Assert.Same(own, p.Weight.Storage.Device));
        long weights = lm.Weights.Projections.Sum(p => p.Weight.ByteCount) + lm.Weights.Embed.ByteCount;
        Assert.True(meter.LiveBytes - before >= weights, $"{meter.LiveBytes - before} live bytes after loading, the projections and embedding alone are {weights}");
        lm.Dispose();
        Assert.Equal(before, meter.LiveBytes);
    }
}

public sealed class CpuAcceleratorMoeEndToEnd(CpuAcceleratorFixture device) : MoeEndToEndChecks(device), IClassFixture<CpuAcceleratorFixture>;

public sealed class CudaMoeEndToEnd(CudaFixture device) : MoeEndToEndChecks(device), IClassFixture<CudaFixture>;
