// Mixture-of-experts models in 4 bits (MoeTiny's Mixtral, Qwen3-MoE and Qwen2-MoE): --qlora quantises every layer
// projection, the routers, experts, Qwen2-MoE's shared expert and its gate included (transformers' bitsandbytes default:
// every nn.Linear but lm_head), and its logits equal those of the plain model built from the dequantised weights (as
// QLoraParityTests holds the dense models' loss and gradients), also when read back from temper-nf4.safetensors;
// `temper quantize` (Bnb4BitExport) writes each expert's Params4bit/QuantState tensors under its HF name and the
// checkpoint loads in NF4 with --qlora's logits; modules it skips (the routers, the shared expert's gate, one expert)
// stay dense with the file's values while the rest is NF4, the logits those of the dequantised-with-dense-kept model; a
// dense (dequantize) load of it gives the same logits; experts fused into 3-D tensors are refused by quantize; and the
// perplexity of an NF4 MoE model (strided windows, two a pass, through the fused LM-head pass) scores each token with
// the NLL of the window's own logits.
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Evaluation;

namespace Temper.Tests;

public class MoeNf4Tests
{
    private static readonly int[] A = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501], B = [300, 12, 9, 77, 123];

    public static TheoryData<string> Variants => [.. MoeTiny.All.Select(m => m.Name)];

    private static MoeTiny Variant(string name) => MoeTiny.All.Single(m => m.Name == name);

    // A padded batch of A and B (mask 0 on B's padding).
    private static float[] Logits(LanguageModel lm)
    {
        int t = A.Length;
        var ids = A.Concat(B).Concat(Enumerable.Repeat(0, t - B.Length)).ToArray();
        var mask = Enumerable.Repeat(1, t + B.Length).Concat(Enumerable.Repeat(0, t - B.Length)).ToArray();
        using var logits = lm.Logits(ids, 2, mask);
        return logits.ToFloatArray();
    }

    // The HF weight names of every router, shared expert gate and expert projection of the model.
    private static string[] MoeWeightNames(LanguageModel lm) =>
        [.. lm.Weights.Layers.Where(l => l.Moe != null).SelectMany(l => l.Moe!.Projections).Select(p => p.Name + ".weight")];

    [Theory, MemberData(nameof(Variants))]
    public void Qlora_quantises_routers_and_experts_and_gives_the_logits_of_the_dequantised_model(string name)
    {
        var m = Variant(name);
        string dir = m.Write(TempFolder.Create("temper-moe-nf4"));
        var be = new CpuBackend();
        float[] nf4Logits;
        string plain;
        using (var lm = LanguageModel.Load(dir, be, qlora: true))
        {
            Assert.All(lm.Weights.Projections, p => Assert.NotNull(p.Nf4));
            var moe = lm.Weights.Layers.First(l => l.Moe != null).Moe!;
            Assert.Equal((m.Experts, MoeTiny.Hidden), (moe.Router.Nf4!.Shape[0], moe.Router.Nf4.Shape[1]));
            if (m.SharedFfn > 0) Assert.Equal(new Shape(1, MoeTiny.Hidden), moe.SharedExpertGate!.Nf4!.Shape);
            nf4Logits = Logits(lm);
            plain = DequantizedModel.Copy(dir, lm);
        }
        using (var dense = LanguageModel.Load(plain, be))
        {
            Assert.All(dense.Weights.Projections, p => Assert.Null(p.Nf4));
            LogitParity.AssertClose(Logits(dense), nf4Logits);
        }
        // The quantisation was saved with every expert's tensors, and the second load reads it back to the same logits.
        using (var f = SafetensorsFile.Open(Path.Combine(dir, Nf4ModelFile.FileName)))
        using (var again = LanguageModel.Load(dir, be, qlora: true))
        {
            Assert.All(MoeWeightNames(again), n => Assert.True(f.Contains(n + ".nf4"), n));
            Assert.Equal(nf4Logits, Logits(again));
        }
    }

    [Theory]
    [InlineData("mixtral-tiny")]
    [InlineData("qwen2-moe-tiny")]
    public void Quantize_writes_every_expert_as_bitsandbytes_and_loads_with_the_qlora_logits(string name)
    {
        var m = Variant(name);
        string copy = m.Write(TempFolder.Create("temper-moe-src")), dir = TempFolder.Create("temper-moe-bnb");
        var s = Bnb4BitExport.Save(m.Folder, dir, doubleQuant: true, []);
        var be = new CpuBackend();
        using var qlora = LanguageModel.Load(copy, be, qlora: true);
        using var bnb = LanguageModel.Load(dir, be);
        Assert.Equal(qlora.Weights.Projections.Count(), s.Quantized);
        Assert.All(bnb.Weights.Projections, p => Assert.NotNull(p.Nf4));
        using (var f = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors")))
            foreach (var w in MoeWeightNames(bnb))
            {
                Assert.Equal(DType.U8, f.Entry(w).DType);
                Assert.True(f.Contains(w + Bnb4BitWeights.QuantStateSuffix), w);
                Assert.True(f.Contains(w + ".nested_absmax"), w);
            }
        Assert.Equal(Logits(qlora), Logits(bnb));
    }

    [Fact]
    public void Skipped_modules_stay_dense_and_the_rest_is_the_dequantised_models()
    {
        var m = MoeTiny.Qwen2Moe;
        string dir = TempFolder.Create("temper-moe-bnb-skip");
        // The routers (mlp.gate, not the dense layer's mlp.gate_proj), the shared experts' gates and expert 1 of every layer.
        Bnb4BitExport.Save(m.Folder, dir, doubleQuant: true, ["mlp.gate", "shared_expert_gate", "experts.1"]);
        var be = new CpuBackend();
        using var original = SafetensorsFile.Open(Path.Combine(m.Folder, "model.safetensors"));
        float[] bnbLogits;
        string plain;
        using (var lm = LanguageModel.Load(dir, be))
        {
            Assert.Equal(["mlp.gate", "shared_expert_gate", "experts.1"], lm.Config.Bnb4Bit!.SkipModules);
            int dense = 0;
            foreach (var p in lm.Weights.Projections)
            {
                bool skipped = p.Name.EndsWith("mlp.gate", StringComparison.Ordinal) || p.Name.EndsWith("shared_expert_gate", StringComparison.Ordinal)
                    || p.Name.Contains(".experts.1.", StringComparison.Ordinal);
                if (!skipped)
                {
                    Assert.NotNull(p.Nf4);
                    continue;
                }
                Assert.Null(p.Nf4);
                Assert.Equal(original.Get(p.Name + ".weight").Floats.ToArray(), p.WeightValues(be));
                dense++;
            }
            Assert.Equal(1 + 1 + 3, dense); // one sparse layer: its router, shared gate and expert 1's three projections
            bnbLogits = Logits(lm);
            plain = DequantizedModel.Copy(m.Folder, lm);
        }
        using (var reference = LanguageModel.Load(plain, be))
            LogitParity.AssertClose(Logits(reference), bnbLogits);
        // Dense (as merging loads it): each quantised expert is nf4[code] * absmax exactly, the same model.
        using (var dequantized = LanguageModel.Load(dir, be, dequantize: true))
        {
            Assert.All(dequantized.Weights.Projections, p => Assert.Null(p.Nf4));
            LogitParity.AssertClose(bnbLogits, Logits(dequantized));
        }
    }

    [Fact]
    public void Quantize_refuses_experts_fused_into_3d_tensors_in_one_line()
    {
        var m = MoeTiny.Mixtral;
        string src = m.Write(TempFolder.Create("temper-moe-fused"), tensors => tensors
            .Where(t => !t.Name.Contains(".experts.", StringComparison.Ordinal))
            .Append(("model.layers.0.block_sparse_moe.experts.gate_up_proj", [4, 48, 32], new float[4 * 48 * 32])));
        var e = Assert.Throws<TemperException>(() => Bnb4BitExport.Save(src, TempFolder.Create("temper-moe-fused-out"), true, []));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains("tensor 'model.layers.0.block_sparse_moe.experts.gate_up_proj' holds the experts fused", e.Message);
    }

    [Fact]
    public void Perplexity_of_an_nf4_model_scores_each_token_from_its_windows_logits()
    {
        string dir = MoeTiny.Mixtral.Write(TempFolder.Create("temper-moe-ppl"));
        using var lm = LanguageModel.Load(dir, new CpuBackend(), qlora: true);
        int[] ids = [.. A, .. B];
        var res = Perplexity.Evaluate(lm.Decoder, ids, ctx: 6, stride: 4, batchSize: 2);
        var windows = Perplexity.Windows(ids.Length, 6, 4);
        Assert.Equal(windows.Count, res.Windows);
        Assert.Equal(ids.Length - 1, res.Tokens);
        foreach (var w in windows)
        {
            using var logits = lm.Logits(ids[w.Begin..w.End], 1);
            var all = logits.ToFloatArray();
            for (int j = w.FirstTarget; j < w.EndTarget; j++)
            {
                var row = all.AsSpan((j - 1 - w.Begin) * MoeTiny.Vocab, MoeTiny.Vocab).ToArray();
                double max = row.Max(), nll = max + Math.Log(row.Sum(z => Math.Exp(z - max))) - row[ids[j]];
                Assert.Equal(nll, res.TokenNlls[j], 1e-4);
            }
        }
        Assert.Equal(Math.Exp(res.TokenNlls.Skip(1).Average()), res.Ppl, 1e-9);
    }
}
