// What the C-ABI adapter and trainer tests share: the llama-tiny fixture loaded through temper_model_load (one
// thread), and thin calls of the exports as a C host makes them (trainer init/step/save/free with its C-string
// fields, logits for the fixed Prompt, adapter load/apply/remove/merge/free), each asserting success with the
// library's last error; plus the comparisons those tests make of logits, losses and saved PEFT folders.
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using Temper.Core.SafeTensors;
using Temper.Native;
using Temper.Native.Exports;

namespace Temper.Tests;

public abstract unsafe class NativeTrainingHarness : IDisposable
{
    protected static readonly string ModelDir = NativeFixture.ModelDir;
    protected static readonly string SftData = Path.Combine(ModelDir, "trainer", "sft.jsonl");

    protected static readonly int[] Prompt = NativeFixture.Prompt;

    protected readonly nint _model = NativeFixture.LoadModel();

    public void Dispose()
    {
        NativeFixture.FreeModel(_model);
        GC.SuppressFinalize(this);
    }

    protected static bool Available => NativeTrainer.Available;

    protected static string LastError() => NativeFixture.LastError();

    protected static byte[] Utf8Z(string s) => NativeFixture.Utf8Z(s);

    /// <summary>Options as a host sets them for a quick run: every step on all six examples (so the losses of two steps
    /// compare), a constant learning rate.</summary>
    protected static TemperTrainerOptions Quick(float lr = 1e-2f)
    {
        var o = TrainerExports.Defaults;
        o.LoraRank = 4;
        o.LoraAlpha = 8;
        o.LearningRate = lr;
        o.BatchSize = 8;
        o.Scheduler = (int)TemperLrSchedule.Constant;
        o.Seed = 1;
        return o;
    }

    /// <summary>temper_trainer_init with the string fields given as C strings (null = NULL).</summary>
    protected int Init(TemperTrainerOptions o, string? data, out nint trainer, string? initAdapter = null, string? targets = null, string? initText = null, string? modules = null)
    {
        nint t = 0;
        fixed (byte* ms = modules == null ? null : Utf8Z(modules))
        fixed (byte* d = data == null ? null : Utf8Z(data))
        fixed (byte* a = initAdapter == null ? null : Utf8Z(initAdapter))
        fixed (byte* g = targets == null ? null : Utf8Z(targets))
        fixed (byte* x = initText == null ? null : Utf8Z(initText))
        {
            o.InitAdapter = a;
            o.LoraTargets = g;
            o.PromptTuningInitText = x;
            o.ModulesToSave = ms;
            int rc = ((delegate* unmanaged<nint, TemperTrainerOptions*, byte*, nint*, int>)&TrainerExports.TrainerInit)(_model, &o, d, &t);
            trainer = t;
            return rc;
        }
    }

    protected static float Step(nint trainer)
    {
        float loss;
        Assert.True(((delegate* unmanaged<nint, float*, int>)&TrainerExports.TrainerStep)(trainer, &loss) == 0, LastError());
        return loss;
    }

    protected static void Free(nint trainer) => Assert.True(((delegate* unmanaged<nint, int>)&TrainerExports.TrainerFree)(trainer) == 0, LastError());

    protected static string Save(nint trainer)
    {
        string dir = TempFolder.Create("temper-native-adapter");
        fixed (byte* d = Utf8Z(dir))
            Assert.True(((delegate* unmanaged<nint, byte*, int>)&TrainerExports.TrainerSaveAdapter)(trainer, d) == 0, LastError());
        return dir;
    }

    protected float[] Logits()
    {
        var output = new float[Prompt.Length * 512];
        fixed (int* i = Prompt)
        fixed (float* o = output)
            Assert.True(((delegate* unmanaged<nint, int*, int*, int, int, float*, nuint, int>)&ModelExports.ModelLogits)(_model, i, null, 1, Prompt.Length, o, (nuint)output.Length) == 0, LastError());
        return output;
    }

    protected static nint LoadAdapter(string dir)
    {
        nint a;
        fixed (byte* d = Utf8Z(dir))
            Assert.True(((delegate* unmanaged<byte*, nint*, int>)&AdapterExports.AdapterLoad)(d, &a) == 0, LastError());
        return a;
    }

    protected int Apply(nint adapter) => ((delegate* unmanaged<nint, nint, int>)&AdapterExports.AdapterApply)(_model, adapter);
    protected int Remove() => ((delegate* unmanaged<nint, int>)&AdapterExports.AdapterRemove)(_model);
    protected int Merge(nint adapter) => ((delegate* unmanaged<nint, nint, int>)&AdapterExports.AdapterMerge)(_model, adapter);
    protected static void FreeAdapter(nint adapter) => Assert.Equal(0, ((delegate* unmanaged<nint, int>)&AdapterExports.AdapterFree)(adapter));

    protected static void Close(float[] expected, float[] actual, string what)
    {
        float scale = expected.Max(MathF.Abs), worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = MathF.Max(worst, MathF.Abs(expected[i] - actual[i]));
        Assert.True(worst <= 1e-4f * scale, $"{what}: logits differ by {worst} (max |logit| {scale})");
    }

    protected static void Differ(float[] a, float[] b, string what) =>
        Assert.True(a.Zip(b).Max(x => MathF.Abs(x.First - x.Second)) > 1e-3f, $"{what}: the logits are the same");

    protected static bool Falling(float[] losses) => losses.All(float.IsFinite) && losses.Zip(losses.Skip(1)).All(x => x.Second < x.First);

    protected static JsonObject Config(string dir) => (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;

    protected static string[] TensorNames(string dir)
    {
        using var st = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
        return [.. st.Entries.Select(e => e.Name)];
    }
}
