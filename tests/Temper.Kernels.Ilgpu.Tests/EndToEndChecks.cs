// End to end on an ILGPU device: the decoder of engine/Temper.Models on both fixture models, against
// transformers + PEFT (reference.safetensors): `temper logits`' computation (plain, padded, LoRA
// unmerged) within 1e-4 x max|ref|, KV-cache greedy generation reproducing the reference ids, and the
// hand-written training backward (DecoderBackprop, every backward op) giving the reference loss and
// every gradient within 1e-3 relative L2 (the fixtures' f32 bounds). Instantiated for ILGPU's CPU
// accelerator (CI) and CUDA (skipped without a device). The bf16 LoRA gradient bound is Bf16LoraBoundChecks.
// DoRA views on the device give the CPU backend's logits, loss and magnitude/A/B gradients; a prompt-tuning
// adapter's virtual tokens its logits, greedy tokens and prompt gradient; a prefix-tuning adapter's rows too; a
// bitsandbytes 4-bit checkpoint its logits and greedy tokens.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Models;
using Temper.Tests;

namespace Temper.Kernels.Ilgpu.Tests;

public abstract class EndToEndChecks(DeviceFixture device)
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    private IlgpuBackend B => device.Backend;

    private float[] Down(Tensor t)
    {
        Assert.Same(B, t.Storage.Device);
        using var h = B.ToHost(t);
        return h.ToFloatArray();
    }

    internal static double RelativeL2(ReadOnlySpan<float> reference, ReadOnlySpan<float> actual)
    {
        double num = 0, den = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            num += (reference[i] - actual[i]) * (double)(reference[i] - actual[i]);
            den += reference[i] * (double)reference[i];
        }
        return Math.Sqrt(num / Math.Max(den, 1e-30));
    }

    [Theory, MemberData(nameof(Models))]
    public void Disposing_a_model_gives_its_device_weights_back(string name)
    {
        _ = B; // skips where the device is missing
        using var own = IlgpuBackend.Create(device.Kind); // the shared backend's counters move with other tests
        var meter = (IMemoryMeter)own;
        long before = meter.LiveBytes;
        var lm = LanguageModel.Load(Fixtures.Hf(name), own);
        long loaded = meter.LiveBytes - before;
        long weights = lm.Weights.Projections.Sum(p => p.Weight.ByteCount) + lm.Weights.Embed.ByteCount;
        Assert.True(loaded >= weights, $"{loaded} live bytes after loading, the projections and embedding alone are {weights}");
        lm.Dispose();
        Assert.Equal(before, meter.LiveBytes);
    }

    [Theory, MemberData(nameof(Models))]
    public void Logits_match_transformers(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, B);
        Assert.Same(B, lm.Weights.Embed.Storage.Device);
        var (ids, b, _) = LogitParity.Ids(r, "input_ids");
        using var logits = lm.Logits(ids, b);
        LogitParity.AssertClose(r.Get("logits").Floats, Down(logits));
        // The same ids with the padding mask: compare the real positions only.
        var mask = r.Get("attention_mask").ToFloatArray().Select(x => (int)x).ToArray();
        using var masked = lm.Logits(ids, b, mask);
        int v = lm.Config.VocabSize;
        LogitParity.AssertClose(r.Get("masked_logits").Floats, Down(masked), i => mask[i / v] == 1);
    }

    /// <summary>
    /// The model stored in bf16 (as hub checkpoints are): the device's bf16 kernels (weights widened
    /// in-kernel, f32 accumulation) match the CPU backend on the same bf16 weights within 1e-4, and
    /// transformers' f32 logits within the bf16 bound of 2e-2 x max|ref|.
    /// </summary>
    [Theory, MemberData(nameof(Models))]
    public void Bf16_weights_give_the_cpu_logits_and_stay_within_the_bf16_bound(string name)
    {
        string src = Fixtures.Hf(name);
        string dir = Directory.CreateTempSubdirectory("temper-bf16-").FullName;
        try
        {
            foreach (var f in Directory.GetFiles(src).Where(f => Path.GetFileName(f) is not ("model.safetensors" or "reference.safetensors")))
                File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
            using (var m = SafetensorsFile.Open(Path.Combine(src, "model.safetensors")))
            {
                var bf16 = m.Entries.Select(e =>
                {
                    var t = m.Get(e.Name);
                    var b = Tensor.Zeros(t.Shape, DType.BF16, e.Name);
                    BFloat16.FromSingle(t.ToFloatArray(), b.Span<ushort>());
                    return KeyValuePair.Create(e.Name, b);
                }).ToList();
                SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), bf16);
            }
            using var r = SafetensorsFile.Open(Path.Combine(src, "reference.safetensors"));
            var (ids, b, _) = LogitParity.Ids(r, "input_ids");
            using var lm = LanguageModel.Load(dir, B);
            Assert.Equal(DType.BF16, lm.Weights.Layers[0].Q.Weight.DType);
            using var cpuLm = LanguageModel.Load(dir, new Temper.Kernels.Cpu.CpuBackend());
            using var cpuLogits = cpuLm.Logits(ids, b);
            // Exact kernels: the CPU's logits. Tensor cores (CUDA only, TF32): the bf16 bound against
            // transformers' f32 logits.
            bool defaultTensorCores = B.TensorCores;
            foreach (bool tensorCores in new[] { false, true })
            {
                B.TensorCores = tensorCores;
                if (B.TensorCores != tensorCores) continue; // no tensor cores on this device
                using var logits = lm.Logits(ids, b);
                var device = Down(logits);
                if (!tensorCores) LogitParity.AssertClose(cpuLogits.Floats, device);
                LogitParity.AssertClose(r.Get("logits").Floats, device, rel: 2e-2);
            }
            B.TensorCores = defaultTensorCores;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory, MemberData(nameof(Models))]
    public void Lora_logits_match_peft(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, B, Path.Combine(dir, "adapter"));
        var (ids, b, _) = LogitParity.Ids(r, "input_ids");
        using var logits = lm.Logits(ids, b);
        LogitParity.AssertClose(r.Get("lora.logits").Floats, Down(logits));
    }

    [Theory, MemberData(nameof(Models))]
    public void Greedy_generation_with_the_kv_cache_matches(string name)
    {
        string dir = Fixtures.Hf(name);
        var g = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!["greedy"]!;
        var prompt = g["prompt_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        var output = g["output_ids"]!.AsArray().Select(x => x!.GetValue<int>()).ToArray();
        using var lm = LanguageModel.Load(dir, B);
        var gen = new Generator(lm.Decoder).Generate([prompt], new GenerationOptions { MaxNewTokens = output.Length - prompt.Length, IgnoreEos = true, EosIds = lm.EosIds() })[0];
        Assert.Equal(output[prompt.Length..], gen.GeneratedIds.ToArray());
    }

    [Theory, MemberData(nameof(Models))]
    public void Training_backward_gives_the_reference_loss_and_gradients(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var refJson = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!;
        using var lm = LanguageModel.Load(dir, B);
        var w = lm.Weights;
        var ps = BaseParameters(w);
        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (_, param) in ps) grads.TryAdd(param, B.Zeros(param.Shape));
        try
        {
            var (loss, _) = Backprop(lm, r, p => grads.TryGetValue(p, out var gr) ? gr : null);
            Assert.Equal(refJson["loss"]!.GetValue<double>(), loss, 1e-4 * Math.Abs(loss));
            foreach (var (pname, param) in ps)
            {
                double err = RelativeL2(r.Get("grad." + pname).Floats, Down(grads[param]));
                Assert.True(err < 1e-3, $"grad.{pname}: relative L2 error {err:G3}");
            }
            Assert.Equal(r.Entries.Count(e => e.Name.StartsWith("grad.", StringComparison.Ordinal)), ps.Count);
        }
        finally
        {
            foreach (var gr in grads.Values) gr.Dispose();
        }
    }

    // Every base weight by HF name (the tied LM head is the embedding, named once).
    private static List<(string Name, Tensor Param)> BaseParameters(ModelWeights w)
    {
        var ps = new List<(string Name, Tensor Param)> { ("model.embed_tokens.weight", w.Embed) };
        for (int i = 0; i < w.Layers.Length; i++)
        {
            foreach (var (norm, t) in w.Layers[i].Norms) ps.Add(($"model.layers.{i}.{norm}", t));
            foreach (var p in w.Layers[i].Projections)
            {
                ps.Add((p.Name + ".weight", p.Weight));
                if (p.Bias != null) ps.Add((p.Name + ".bias", p.Bias));
            }
        }
        ps.Add(("model.norm.weight", w.FinalNorm));
        if (!ReferenceEquals(w.LmHead.Weight, w.Embed)) ps.Add(("lm_head.weight", w.LmHead.Weight));
        return ps;
    }

    // YaRN RoPE scaling (Qwen3Tiny.YarnFolder): the device's cos/sin tables carry the attention factor, so the
    // logits are the CPU backend's and the float64 forward's, and greedy generation through the device's KV
    // cache gives the CPU backend's tokens.
    [Fact]
    public void Yarn_scaled_rope_gives_the_cpu_and_float64_logits_and_tokens()
    {
        int[] ids = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150];
        using var lm = LanguageModel.Load(Qwen3Tiny.YarnFolder, B);
        using var cpu = LanguageModel.Load(Qwen3Tiny.YarnFolder, new Temper.Kernels.Cpu.CpuBackend());
        Assert.Equal("yarn", lm.Config.Rope.Type);
        using var logits = lm.Logits(ids, 1);
        using var cpuLogits = cpu.Logits(ids, 1);
        var device = Down(logits);
        LogitParity.AssertClose(cpuLogits.Floats, device);
        LogitParity.AssertClose(Qwen3Tiny.Logits(ids, yarn: true).SelectMany(x => x).Select(x => (float)x).ToArray(), device);
        var options = new GenerationOptions { MaxNewTokens = 6, IgnoreEos = true };
        Assert.Equal(new Generator(cpu.Decoder).Generate([ids], options)[0].GeneratedIds, new Generator(lm.Decoder).Generate([ids], options)[0].GeneratedIds);
    }

    // Qwen3's head norms (no transformers fixture yet): logits against the float64 forward written from
    // modeling_qwen3, and every gradient of the hand-written backward against the CPU backend's (which
    // Temper.Training.Tests holds to central differences of that forward).
    [Fact]
    public void Qwen3_head_norms_give_the_float64_logits_and_the_cpu_gradients()
    {
        int[] ids = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150], labels = [-100, -100, 99, 260, 31, 7, 400, 3, 88, 150];
        using var lm = LanguageModel.Load(Qwen3Tiny.Folder, B);
        using (var logits = lm.Logits(ids, 1))
        {
            var reference = Qwen3Tiny.Logits(ids);
            LogitParity.AssertClose(reference.SelectMany(x => x).Select(x => (float)x).ToArray(), Down(logits));
        }
        using var cpu = LanguageModel.Load(Qwen3Tiny.Folder, new Temper.Kernels.Cpu.CpuBackend());
        var cpuGrads = BaseParameters(cpu.Weights).ToDictionary(p => p.Name, p => Tensor.Zeros(p.Param.Shape));
        var cpuByParam = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (pname, param) in BaseParameters(cpu.Weights)) cpuByParam[param] = cpuGrads[pname];
        new DecoderBackprop(cpu.Decoder).Run(ids, labels, [], 1, 0.125f, p => cpuByParam.GetValueOrDefault(p));
        var ps = BaseParameters(lm.Weights);
        Assert.Contains(ps, p => p.Name == "model.layers.1.self_attn.q_norm.weight");
        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (_, param) in ps) grads[param] = B.Zeros(param.Shape);
        try
        {
            new DecoderBackprop(lm.Decoder).Run(ids, labels, [], 1, 0.125f, p => grads.GetValueOrDefault(p));
            foreach (var (pname, param) in ps)
            {
                double err = RelativeL2(cpuGrads[pname].Floats, Down(grads[param]));
                Assert.True(err < 1e-4, $"{pname}: relative L2 error {err:G3} against the CPU backend");
            }
        }
        finally
        {
            foreach (var gr in grads.Values) gr.Dispose();
            foreach (var gr in cpuGrads.Values) gr.Dispose();
        }
    }

    // DoRA (a magnitude per output row over W + s B A, its norm a constant in backward) on every projection
    // of the tiny Qwen3: the device's logits (the inference path, its cached norm), loss and every magnitude,
    // A and B gradient against the CPU backend's (which Temper.Training.Tests holds to central differences).
    // A bitsandbytes 4-bit checkpoint (Bnb4BitExport of the fixture): its NF4 projections, mapped from the file and
    // uploaded as they are, give the CPU backend's logits and greedy tokens on the device.
    [Fact]
    public void A_bitsandbytes_checkpoint_gives_the_cpu_logits_and_tokens()
    {
        string dir = Directory.CreateTempSubdirectory("temper-ilgpu-bnb-").FullName;
        try
        {
            Bnb4BitExport.Save(Fixtures.Hf("qwen2-tiny"), dir, doubleQuant: true, []);
            int[] ids = [1, 40, 41, 42, 43, 50, 1, 60, 61, 62, 63, 64];
            using var cpu = LanguageModel.Load(dir, new Temper.Kernels.Cpu.CpuBackend());
            using var lm = LanguageModel.Load(dir, B);
            Assert.All(lm.Weights.Projections, p => Assert.Same(B, p.Nf4!.Codes.Storage.Device));
            using (var cl = cpu.Logits(ids, 2))
            using (var dl = lm.Logits(ids, 2))
                LogitParity.AssertClose(cl.Floats, Down(dl));
            var o = new GenerationOptions { MaxNewTokens = 6, IgnoreEos = true };
            Assert.Equal(new Generator(cpu.Decoder).Generate([ids[..4]], o)[0].GeneratedIds, new Generator(lm.Decoder).Generate([ids[..4]], o)[0].GeneratedIds);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Prompt_tuning_gives_the_cpu_logits_tokens_and_prompt_gradient()
    {
        int[] ids = [1, 40, 41, 42, 43, 50, 1, 60, 61, 62, 63, 64], labels = [-100, -100, 41, 42, 43, 50, -100, -100, 61, 62, 63, 64];
        using var cpu = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new Temper.Kernels.Cpu.CpuBackend());
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), B);
        var rng = new Random(5);
        var prompt = Enumerable.Range(0, 3 * cpu.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        cpu.AttachPrompt(Tensor.FromFloats(new Shape(3, cpu.Config.HiddenSize), prompt));
        lm.AttachPrompt(Tensor.FromFloats(new Shape(3, cpu.Config.HiddenSize), prompt));
        using (var cl = cpu.Logits(ids, 2))
        using (var dl = lm.Logits(ids, 2))
            LogitParity.AssertClose(cl.Floats, Down(dl));
        var o = new GenerationOptions { MaxNewTokens = 6, IgnoreEos = true };
        Assert.Equal(new Generator(cpu.Decoder).Generate([ids[..4]], o)[0].GeneratedIds, new Generator(lm.Decoder).Generate([ids[..4]], o)[0].GeneratedIds);
        using var cpuGrad = Tensor.Zeros(cpu.Weights.PromptEmbeddings!.Shape);
        using var grad = B.Zeros(cpuGrad.Shape);
        var cpuLoss = new DecoderBackprop(cpu.Decoder).Run(ids, labels, [], 2, 0.1f, p => ReferenceEquals(p, cpu.Weights.PromptEmbeddings) ? cpuGrad : null).Sum();
        var loss = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], 2, 0.1f, p => ReferenceEquals(p, lm.Weights.PromptEmbeddings) ? grad : null).Sum();
        Assert.Equal(cpuLoss, loss, 1e-5 * Math.Abs(cpuLoss));
        Assert.Contains(cpuGrad.Floats.ToArray(), g => g != 0);
        double err = RelativeL2(cpuGrad.Floats, Down(grad));
        Assert.True(err < 1e-4, $"prompt gradient: relative L2 error {err:G3} against the CPU backend");
    }

    [Fact]
    public void Prefix_tuning_gives_the_cpu_logits_tokens_and_prefix_gradients()
    {
        int[] ids = [1, 40, 41, 42, 43, 50, 1, 60, 61, 62, 63, 64], labels = [-100, -100, 41, 42, 43, 50, -100, -100, 61, 62, 63, 64];
        using var cpu = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new Temper.Kernels.Cpu.CpuBackend());
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), B);
        var rng = new Random(9);
        int width = cpu.Config.NumKvHeads * cpu.Config.HeadDim, layers = cpu.Config.NumLayers;
        var values = Enumerable.Range(0, 3 * layers * 2 * width).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        cpu.AttachPrefix(PrefixKv.FromPeft(values, 3, layers, width));
        lm.AttachPrefix(PrefixKv.FromPeft(values, 3, layers, width));
        using (var cl = cpu.Logits(ids, 2))
        using (var dl = lm.Logits(ids, 2))
            LogitParity.AssertClose(cl.Floats, Down(dl));
        var o = new GenerationOptions { MaxNewTokens = 6, IgnoreEos = true };
        Assert.Equal(new Generator(cpu.Decoder).Generate([ids[..4]], o)[0].GeneratedIds, new Generator(lm.Decoder).Generate([ids[..4]], o)[0].GeneratedIds);
        var cpuParams = cpu.Weights.Prefix!.Named().Select(x => x.Value).ToArray();
        var devParams = lm.Weights.Prefix!.Named().Select(x => x.Value).ToArray();
        var cpuGrads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var t in cpuParams) cpuGrads[t] = Tensor.Zeros(t.Shape);
        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var t in devParams) grads[t] = B.Zeros(t.Shape);
        try
        {
            var cpuLoss = new DecoderBackprop(cpu.Decoder).Run(ids, labels, [], 2, 0.1f, p => cpuGrads.GetValueOrDefault(p)).Sum();
            var loss = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], 2, 0.1f, p => grads.GetValueOrDefault(p)).Sum();
            Assert.Equal(cpuLoss, loss, 1e-5 * Math.Abs(cpuLoss));
            foreach (var (ct, dt) in cpuParams.Zip(devParams))
            {
                Assert.Contains(cpuGrads[ct].Floats.ToArray(), g => g != 0);
                double err = RelativeL2(cpuGrads[ct].Floats, Down(grads[dt]));
                Assert.True(err < 1e-4, $"prefix gradient: relative L2 error {err:G3} against the CPU backend");
            }
        }
        finally
        {
            foreach (var g in grads.Values) g.Dispose();
        }
    }

    [Fact]
    public void Dora_views_give_the_cpu_logits_and_gradients()
    {
        int[] ids = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150], labels = [-100, -100, 99, 260, 31, 7, 400, 3, 88, 150];
        using var cpu = LanguageModel.Load(Qwen3Tiny.Folder, new Temper.Kernels.Cpu.CpuBackend());
        using var lm = LanguageModel.Load(Qwen3Tiny.Folder, B);
        const int r = 4;
        var rng = new Random(31);
        var cpuViews = new List<LoraView>();
        var views = new List<LoraView>();
        foreach (var (cp, p) in cpu.Weights.Projections.Zip(lm.Weights.Projections))
        {
            var a = Enumerable.Range(0, r * p.In).Select(_ => (float)((rng.NextDouble() * 2 - 1) / Math.Sqrt(p.In))).ToArray();
            var b = Enumerable.Range(0, p.Out * r).Select(_ => (float)(0.1 * (rng.NextDouble() * 2 - 1))).ToArray();
            var m = new float[p.Out];
            cp.Lora = new LoraView(Tensor.FromFloats(new Shape(r, p.In), a), Tensor.FromFloats(new Shape(p.Out, r), b), 2f, Tensor.FromFloats(new Shape(p.Out), m));
            cp.DoraNorm(cpu.Decoder.Backend, cp.Lora.Magnitude!);
            for (int j = 0; j < p.Out; j++) m[j] = cp.Lora.Magnitude!.Floats[j] * (float)(1 + 0.3 * (rng.NextDouble() * 2 - 1));
            cp.Lora = new LoraView(cp.Lora.A, cp.Lora.B, 2f, Tensor.FromFloats(new Shape(p.Out), m));
            p.Lora = new LoraView(B.FromHost(cp.Lora.A), B.FromHost(cp.Lora.B), 2f, B.FromHost(cp.Lora.Magnitude!));
            cpuViews.Add(cp.Lora);
            views.Add(p.Lora);
        }
        using (var cl = cpu.Logits(ids, 1))
        using (var dl = lm.Logits(ids, 1))
            LogitParity.AssertClose(cl.Floats, Down(dl));
        Tensor[] Params(List<LoraView> vs) => vs.SelectMany(v => new[] { v.A, v.B, v.Magnitude! }).ToArray();
        var cpuGrads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var t in Params(cpuViews)) cpuGrads[t] = Tensor.Zeros(t.Shape);
        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var t in Params(views)) grads[t] = B.Zeros(t.Shape);
        try
        {
            var cpuLoss = new DecoderBackprop(cpu.Decoder).Run(ids, labels, [], 1, 0.125f, p => cpuGrads.GetValueOrDefault(p)).Sum();
            var loss = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], 1, 0.125f, p => grads.GetValueOrDefault(p)).Sum();
            Assert.Equal(cpuLoss, loss, 1e-5 * Math.Abs(cpuLoss));
            foreach (var (ct, dt) in Params(cpuViews).Zip(Params(views)))
            {
                double err = RelativeL2(cpuGrads[ct].Floats, Down(grads[dt]));
                Assert.True(err < 1e-4, $"DoRA gradient {ct.Shape}: relative L2 error {err:G3} against the CPU backend");
            }
        }
        finally
        {
            foreach (var gr in grads.Values) gr.Dispose();
        }
    }

    [Theory, MemberData(nameof(Models))]
    public void Lora_training_backward_gives_the_reference_gradients(string name)
    {
        string dir = Fixtures.Hf(name);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var refJson = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "reference.json")))!;
        using var lm = LanguageModel.Load(dir, B, Path.Combine(dir, "adapter"));
        var ps = new List<(string Name, Tensor Param)>();
        foreach (var p in lm.Weights.Projections)
            if (p.Lora is { } l)
            {
                ps.Add((p.Name + ".lora_A.default.weight", l.A));
                ps.Add((p.Name + ".lora_B.default.weight", l.B));
            }
        Assert.Equal(28, ps.Count);
        var grads = new Dictionary<Tensor, Tensor>(ReferenceEqualityComparer.Instance);
        foreach (var (_, param) in ps) grads.TryAdd(param, B.Zeros(param.Shape));
        try
        {
            var (loss, _) = Backprop(lm, r, p => grads.TryGetValue(p, out var gr) ? gr : null);
            Assert.Equal(refJson["lora_loss"]!.GetValue<double>(), loss, 1e-4 * Math.Abs(loss));
            foreach (var (pname, param) in ps)
            {
                double err = RelativeL2(r.Get("lora.grad." + pname).Floats, Down(grads[param]));
                Assert.True(err < 1e-3, $"lora.grad.{pname}: relative L2 error {err:G3}");
            }
        }
        finally
        {
            foreach (var gr in grads.Values) gr.Dispose();
        }
    }

    /// <summary>Mean cross-entropy over the labelled positions of input_ids, and its gradients into gradOf's tensors.</summary>
    internal static (double Loss, int Count) Backprop(LanguageModel lm, SafetensorsFile r, Func<Tensor, Tensor?> gradOf)
    {
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int b = r.Get("input_ids").Shape[0], t = ids.Length / b;
        int count = Enumerable.Range(0, ids.Length).Count(i => i % t != 0 && labels[i] != -100);
        var losses = new DecoderBackprop(lm.Decoder).Run(ids, labels, [], b, 1f / count, gradOf);
        return (losses.Sum() / count, count);
    }
}

public sealed class CpuAcceleratorEndToEnd(CpuAcceleratorFixture device) : EndToEndChecks(device), IClassFixture<CpuAcceleratorFixture>;

public sealed class CudaEndToEnd(CudaFixture device) : EndToEndChecks(device), IClassFixture<CudaFixture>;
