// A mixture-of-experts model through the C ABI, called in-process: MoeTiny's Qwen2-MoE (routed experts, the gated shared
// expert, a dense layer) loads with temper_model_load on the CPU, its temper_model_logits are LanguageModel.Logits' and
// temper_model_generate gives the .NET Generator's tokens, greedy and sampled; temper_trainer_init/step train a LoRA over
// it whose loss falls; TEMPER_DEVICE_CUDA (the decode graph, refused before any device is opened) is TEMPER_E_UNSUPPORTED
// in one line.
using System.Runtime.InteropServices;
using System.Text;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Native;
using Temper.Native.Exports;

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

    private static string LastError() => Marshal.PtrToStringUTF8((nint)((delegate* unmanaged<byte*>)&LibraryExports.TemperLastError)())!;

    private static byte[] Utf8Z(string s) => Encoding.UTF8.GetBytes(s + "\0");

    private int Load(TemperDevice device, out nint model)
    {
        var o = ModelExports.Defaults;
        o.Threads = 1;
        o.Device = (int)device;
        nint m = 0;
        int rc;
        fixed (byte* dir = Utf8Z(_dir))
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
}
