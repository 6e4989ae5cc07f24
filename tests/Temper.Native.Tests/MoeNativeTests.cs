// A mixture-of-experts model through the C ABI, called in-process: MoeTiny's Qwen2-MoE (routed experts, the gated shared
// expert, a dense layer) loads with temper_model_load on the CPU, its temper_model_logits are LanguageModel.Logits' and
// temper_model_generate gives the .NET Generator's tokens, greedy and sampled; temper_trainer_init/step train a LoRA over
// it whose loss falls; TEMPER_DEVICE_CUDA (the decode graph, refused before any device is opened) is TEMPER_E_UNSUPPORTED
// in one line. MoeTiny's Mixtral with config.json's output_router_logits trains SFT and DPO through temper_trainer_init/step,
// its first loss the plain model's + router_aux_loss_coef x the aux loss the .NET DecoderBackprop reports for the same
// batches (SFT: the sum over its micro-batches; DPO: the policy pass over the chosen and rejected rows), as the CLI adds it.
using System.Runtime.InteropServices;
using System.Text;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Native;
using Temper.Native.Exports;
using Temper.Training.Data;

namespace Temper.Tests;

public sealed unsafe class MoeNativeTests : IDisposable
{
    private static readonly int[] Prompt = [5, 17, 99, 260, 31, 7, 400];

    private readonly string _dir = MoeTiny.Qwen2Moe.Folder;
    private readonly nint _model;
    private readonly LanguageModel _lm;

    public MoeNativeTests()
    {
        _lm = LanguageModel.Load(_dir, new CpuBackend(1));
        Assert.True(Load(TemperDevice.Cpu, out _model) == 0, LastError());
    }

    public void Dispose()
    {
        Assert.Equal(0, ((delegate* unmanaged<nint, int>)&ModelExports.ModelFree)(_model));
        _lm.Dispose();
    }

    private static string LastError() => NativeFixture.LastError();

    private static byte[] Utf8Z(string s) => NativeFixture.Utf8Z(s);

    private int Load(TemperDevice device, out nint model) => Load(_dir, device, out model);

    private static int Load(string folder, TemperDevice device, out nint model)
    {
        var o = ModelExports.Defaults;
        o.Threads = 1;
        o.Device = (int)device;
        nint m = 0;
        int rc;
        fixed (byte* dir = Utf8Z(folder))
            rc = ((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(dir, &o, &m);
        model = m;
        return rc;
    }

    private static TemperGenerateOptions Options(bool greedy)
    {
        var o = GenerateExports.Defaults;
        o.MaxNewTokens = 12;
        o.IgnoreEos = 1;
        o.Greedy = greedy ? 1 : 0;
        o.Temperature = 0.9f;
        o.Seed = 11;
        return o;
    }

    private int[] Generate(TemperGenerateOptions o)
    {
        var ids = new int[o.MaxNewTokens];
        TemperGenerateResult r;
        int rc;
        fixed (int* p = Prompt)
        fixed (int* outIds = ids)
            rc = ((delegate* unmanaged<nint, int*, int, TemperGenerateOptions*, delegate* unmanaged[Cdecl]<int, byte*, void*, int>, void*, int*, int, TemperGenerateResult*, int>)&GenerateExports.ModelGenerate)(
                _model, p, Prompt.Length, &o, null, null, outIds, ids.Length, &r);
        Assert.True(rc == 0, LastError());
        Assert.Equal(o.MaxNewTokens, r.Generated);
        return ids;
    }

    // The .NET Generator's run of the same prompt and options (what `temper generate` runs).
    private int[] Reference(TemperGenerateOptions o) =>
        [.. new Generator(_lm.Decoder).Generate([Prompt], new GenerationOptions
        {
            MaxNewTokens = o.MaxNewTokens,
            IgnoreEos = true,
            Sampling = new SamplingOptions { Greedy = o.Greedy != 0, Temperature = o.Temperature, Seed = o.Seed },
        })[0].GeneratedIds];

    [Fact]
    public void Logits_and_generation_are_the_libraries_greedy_and_sampled()
    {
        int v = _lm.Config.VocabSize;
        var output = new float[Prompt.Length * v];
        fixed (int* i = Prompt)
        fixed (float* p = output)
            Assert.True(((delegate* unmanaged<nint, int*, int*, int, int, float*, nuint, int>)&ModelExports.ModelLogits)(_model, i, null, 1, Prompt.Length, p, (nuint)output.Length) == 0, LastError());
        using (var expected = _lm.Logits(Prompt, 1))
            Assert.Equal(expected.ToFloatArray(), output);

        var greedy = Generate(Options(greedy: true));
        Assert.Equal(Reference(Options(greedy: true)), greedy);
        var sampled = Generate(Options(greedy: false));
        Assert.Equal(Reference(Options(greedy: false)), sampled);
        Assert.NotEqual(greedy, sampled); // the sampled run is not the greedy one by accident
    }

    [Fact]
    public void Cuda_is_unsupported_in_one_line_and_leaves_the_model_as_it_was()
    {
        Assert.Equal((int)TemperStatus.Unsupported, Load(TemperDevice.Cuda, out var cuda));
        Assert.Equal(0, cuda);
        string error = LastError();
        Assert.DoesNotContain('\n', error);
        Assert.StartsWith("temper_model_load: ", error);
        Assert.Contains("config.json: model_type 'qwen2_moe' is a mixture-of-experts model", error);
        Assert.Contains("the CUDA graph decoder", error);
        // The model is as it was: no adapter on it, the library's tokens still.
        Assert.All(Handles.Get<NativeModel>(_model, "model").Lm.Weights.Projections, p => Assert.Null(p.Lora));
        Assert.Equal(Reference(Options(greedy: true)), Generate(Options(greedy: true)));
    }

    [Fact]
    public void A_lora_trains_through_the_c_abi_and_its_loss_falls()
    {
        Assert.SkipUnless(NativeTrainer.Available, "libtemper built without training");
        var o = TrainerExports.Defaults;
        o.LoraRank = 4;
        o.LoraAlpha = 8;
        o.LearningRate = 1e-2f;
        o.BatchSize = 8;
        o.Scheduler = (int)TemperLrSchedule.Constant;
        o.Seed = 1;
        nint trainer = 0;
        fixed (byte* d = Utf8Z(Path.Combine(Fixtures.Hf("llama-tiny"), "trainer", "sft.jsonl")))
            Assert.True(((delegate* unmanaged<nint, TemperTrainerOptions*, byte*, nint*, int>)&TrainerExports.TrainerInit)(_model, &o, d, &trainer) == 0, LastError());
        var losses = new float[3];
        for (int i = 0; i < losses.Length; i++)
            fixed (float* l = &losses[i])
                Assert.True(((delegate* unmanaged<nint, float*, int>)&TrainerExports.TrainerStep)(trainer, l) == 0, LastError());
        Assert.True(((delegate* unmanaged<nint, int>)&TrainerExports.TrainerFree)(trainer) == 0, LastError());
        Assert.All(losses, l => Assert.True(float.IsFinite(l)));
        Assert.True(losses[2] < losses[0], $"losses {string.Join(", ", losses)} did not fall");
    }

    private static readonly string Data = Path.Combine(Fixtures.Hf("llama-tiny"), "trainer");

    /// <summary>MoeTiny's Mixtral with config.json's output_router_logits true and router_aux_loss_coef coef.</summary>
    private static string AuxFolder(double coef)
    {
        var root = System.Text.Json.Nodes.JsonNode.Parse(MoeTiny.Mixtral.ConfigJson())!.AsObject();
        root["output_router_logits"] = true;
        root["router_aux_loss_coef"] = coef;
        string dir = MoeTiny.Mixtral.Write(TempFolder.Create("temper-native-moe-aux"));
        File.WriteAllText(Path.Combine(dir, "config.json"), root.ToJsonString());
        return dir;
    }

    /// <summary>The first step's loss of a trainer made by temper_trainer_init over the folder loaded by temper_model_load.</summary>
    private static float FirstLoss(string folder, TemperTrainerOptions o, string data)
    {
        Assert.True(Load(folder, TemperDevice.Cpu, out var model) == 0, LastError());
        try
        {
            nint trainer = 0;
            fixed (byte* d = Utf8Z(data))
                Assert.True(((delegate* unmanaged<nint, TemperTrainerOptions*, byte*, nint*, int>)&TrainerExports.TrainerInit)(model, &o, d, &trainer) == 0, LastError());
            float loss;
            Assert.True(((delegate* unmanaged<nint, float*, int>)&TrainerExports.TrainerStep)(trainer, &loss) == 0, LastError());
            Assert.True(((delegate* unmanaged<nint, int>)&TrainerExports.TrainerFree)(trainer) == 0, LastError());
            return loss;
        }
        finally
        {
            Assert.Equal(0, ((delegate* unmanaged<nint, int>)&ModelExports.ModelFree)(model));
        }
    }

    [Fact]
    public void An_output_router_logits_model_trains_sft_and_dpo_adding_coef_times_the_router_aux_loss()
    {
        Assert.SkipUnless(NativeTrainer.Available, "libtemper built without training");
        const double coef = 0.05;
        string aux = AuxFolder(coef), plain = MoeTiny.Mixtral.Folder;
        var o = TrainerExports.Defaults;
        o.LoraRank = 2;
        o.LoraAlpha = 4;
        o.LoraTargets = null;
        o.Scheduler = (int)TemperLrSchedule.Constant;
        o.Seed = 3;
        o.BatchSize = 3;
        o.GradAccum = 2;
        string sft = Path.Combine(Data, "sft.jsonl"), dpoData = Path.Combine(Data, "dpo.jsonl");
        float sftAux = FirstLoss(aux, o, sft), sftPlain = FirstLoss(plain, o, sft);
        var dpo = o;
        dpo.Method = (int)TemperTrainMethod.Dpo;
        dpo.BatchSize = 4;
        dpo.GradAccum = 1;
        float dpoAux = FirstLoss(aux, dpo, dpoData), dpoPlain = FirstLoss(plain, dpo, dpoData);

        // The .NET DecoderBackprop's aux loss of the same batches (the trainer's seeded order): SFT's two micro-batches, and
        // DPO's policy pass over the pairs' chosen then rejected rows.
        using var lm = LanguageModel.Load(aux, new CpuBackend(1));
        var tok = lm.RequireTokenizer();
        int pad = lm.Config.PadTokenId ?? tok.PadId ?? 0;
        var bp = new DecoderBackprop(lm.Decoder) { RouterAuxLossCoef = 0 };   // 0: the loss computed, no gradient
        double AuxOf(SftBatch b)
        {
            bp.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, null);
            return bp.RouterAuxLoss;
        }
        var examples = SftDataset.Load(sft, tok, lm.Template, new SftDataOptions(MaxLength: o.MaxLength, Truncation: Truncation.Right)).Examples;
        var sftBatches = new SftBatcher(examples.ToArray(), o.BatchSize, pad, (ulong)o.Seed);
        double sftAuxSum = AuxOf(sftBatches.Batch(0, 0)) + AuxOf(sftBatches.Batch(0, 1));
        var pairs = PreferenceDataset.Load(dpoData, tok, lm.Template, unpaired: false, dpo.MaxLength).Pairs;
        var idx = new SftBatcher(pairs.Select(x => x.Chosen).ToArray(), dpo.BatchSize, pad, (ulong)dpo.Seed).Batch(0, 0).ExampleIndices;
        double dpoAuxLoss = AuxOf(SftBatcher.Pad([.. idx.Select(i => pairs[i].Chosen), .. idx.Select(i => pairs[i].Rejected)], pad));
        foreach (double a in new[] { sftAuxSum / 2, dpoAuxLoss })
            Assert.True(a > 0.5 && a <= MoeTiny.Mixtral.Experts, $"aux loss {a}");   // E sum f P: k when balanced, at most E

        // The same weights at step 1: the plain loss + coef x (SFT: the sum of the micro-batches' aux losses; DPO: the pass's).
        Assert.Equal(sftPlain + coef * sftAuxSum, sftAux, 2e-5);
        Assert.Equal(dpoPlain + coef * dpoAuxLoss, dpoAux, 2e-5);
        Assert.Equal(Math.Log(2), dpoPlain, 1e-5);   // the reference is the adapter off: the policy at step 1
    }
}
