// The exports called in-process through unmanaged function pointers, as C calls them: error codes and
// messages for misuse (NULL and freed handles, invalid UTF-8, missing folders, a busy model), the
// buffer-size protocol, and a run against the llama-tiny fixture. The same ABI is driven from real C
// by samples/c-host under ctest (bindings/build-native.sh); these run in `bash test.sh` without cmake.
using System.Runtime.InteropServices;
using System.Text;
using Temper.Native;
using Temper.Native.Exports;

namespace Temper.Tests;

public sealed unsafe class ExportTests
{
    private static readonly string Model = Fixtures.Hf("llama-tiny");

    private static string LastError() => NativeFixture.LastError();

    private static byte[] Utf8Z(string s) => NativeFixture.Utf8Z(s);

    private static int Load(string dir, out nint model)
    {
        nint m = 0;
        fixed (byte* p = Utf8Z(dir))
        {
            int rc = ((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(p, null, &m);
            model = m;
            return rc;
        }
    }

    private static int Free(nint model) => ((delegate* unmanaged<nint, int>)&ModelExports.ModelFree)(model);

    private static int VocabSize(nint model) => ((delegate* unmanaged<nint, int>)&ModelExports.ModelVocabSize)(model);

    private static int Tokenize(nint model, byte[] text, int[]? ids)
    {
        fixed (byte* t = text)
        fixed (int* i = ids)
            return ((delegate* unmanaged<nint, byte*, int*, int, int>)&ModelExports.ModelTokenize)(model, t, i, ids?.Length ?? 0);
    }

    private static int Logits(nint model, int[] ids, int batch, float[] output)
    {
        fixed (int* i = ids)
        fixed (float* o = output)
            return ((delegate* unmanaged<nint, int*, int*, int, int, float*, nuint, int>)&ModelExports.ModelLogits)(model, i, null, batch, ids.Length / batch, o, (nuint)output.Length);
    }

    [Fact]
    public void Missing_folder_NULL_arguments_and_bad_UTF8_are_error_codes_with_messages()
    {
        Assert.Equal((int)TemperStatus.NotFound, Load("/nonexistent/temper-model", out var m));
        Assert.Equal(0, m);
        Assert.Contains("model folder not found", LastError());

        nint dummy;
        Assert.Equal((int)TemperStatus.InvalidArgument, ((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(null, null, &dummy));
        Assert.Contains("dir is NULL", LastError());

        fixed (byte* bad = new byte[] { 0x2f, 0xc3, 0x28, 0 })
            Assert.Equal((int)TemperStatus.InvalidUtf8, ((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(bad, null, &dummy));
        Assert.Contains("not valid UTF-8 (at byte 1)", LastError());

        Assert.Equal((int)TemperStatus.InvalidHandle, VocabSize(0));
        Assert.Equal("model is NULL", LastError());
        Assert.Equal((int)TemperStatus.InvalidHandle, VocabSize(0x1234));
        Assert.Contains("not a live handle", LastError());
        Assert.Equal(0, Free(0));
        Assert.Equal("", LastError());
    }

    [Fact]
    public void Fixture_model_tokenizes_with_the_size_protocol_and_freed_handles_are_refused()
    {
        Assert.Equal(0, Load(Model, out var m));
        try
        {
            Assert.Equal(512, VocabSize(m));
            var text = Utf8Z("Return the absolute value of the argument.");
            int need = Tokenize(m, text, null);
            Assert.Equal(15, need);
            var small = new int[3];
            Assert.Equal(need, Tokenize(m, text, small));
            Assert.All(small, x => Assert.Equal(0, x));
            var ids = new int[need];
            Assert.Equal(need, Tokenize(m, text, ids));
            Assert.Equal([508, 267, 263, 68, 85, 81, 78, 87, 270, 452, 511, 320, 267, 408, 16], ids);
            Assert.Equal((int)TemperStatus.InvalidUtf8, Tokenize(m, [0x61, 0xff, 0], null));
        }
        finally
        {
            Assert.Equal(0, Free(m));
        }
        Assert.Equal((int)TemperStatus.InvalidHandle, VocabSize(m));
        Assert.Equal((int)TemperStatus.InvalidHandle, Free(m));
    }

    [ThreadStatic] private static int t_probe;
    private static nint s_model;
    private static int s_fromCallback, s_fromThread;

    [UnmanagedCallersOnly]
    private static int ProbeDuringGenerate(int token, byte* piece, void* user)
    {
        if (t_probe++ > 0) return 1;
        var output = new float[512];
        s_fromCallback = Logits(s_model, [1], 1, output);
        var t = new Thread(() => s_fromThread = Logits(s_model, [1], 1, output));
        t.Start();
        t.Join();
        return 0;
    }

    [Fact]
    public void A_model_running_generate_answers_busy_to_its_callback_and_to_other_threads()
    {
        Assert.Equal(0, Load(Model, out var m));
        try
        {
            s_model = m;
            t_probe = 0;
            var o = GenerateExports.Defaults;
            o.MaxNewTokens = 4;
            int[] prompt = [508, 267];
            TemperGenerateResult r;
            int rc;
            fixed (int* p = prompt)
                rc = ((delegate* unmanaged<nint, int*, int, TemperGenerateOptions*, delegate* unmanaged[Cdecl]<int, byte*, void*, int>, void*, int*, int, TemperGenerateResult*, int>)&GenerateExports.ModelGenerate)(
                    m, p, 2, &o, (delegate* unmanaged[Cdecl]<int, byte*, void*, int>)(delegate* unmanaged<int, byte*, void*, int>)&ProbeDuringGenerate, null, null, 0, &r);
            Assert.Equal(0, rc);
            Assert.Equal((int)TemperStatus.Busy, s_fromCallback);
            Assert.Equal((int)TemperStatus.Busy, s_fromThread);
            Assert.Equal((int)TemperFinishReason.Stopped, r.Finish);
            Assert.Equal(2, r.Generated);
            Assert.Equal(0, Logits(m, [1], 1, new float[512]));   // free again afterwards
        }
        finally
        {
            Assert.Equal(0, Free(m));
        }
    }

    [Fact]
    public void Dpo_trainer_takes_pushed_pairs_or_is_unsupported_without_training()
    {
        Assert.Equal(0, Load(Model, out var m));
        nint t = 0;
        try
        {
            var o = TrainerExports.Defaults;
            o.Method = (int)TemperTrainMethod.Dpo;
            int rc = ((delegate* unmanaged<nint, TemperTrainerOptions*, byte*, nint*, int>)&TrainerExports.TrainerInit)(m, &o, null, &t);
            bool available = NativeTrainer.Available;   // a const of the build; a local keeps both branches compiled
            if (!available)
            {
                Assert.Equal((int)TemperStatus.Unsupported, rc);
                Assert.Contains("without training", LastError());
                return;
            }
            Assert.Equal(0, rc);
            var step = (delegate* unmanaged<nint, float*, int>)&TrainerExports.TrainerStep;
            float loss;
            Assert.Equal((int)TemperStatus.InvalidArgument, step(t, &loss));   // no pairs yet
            Assert.Contains("no examples", LastError());
            var push = (delegate* unmanaged<nint, byte*, int>)&TrainerExports.TrainerPush;
            fixed (byte* pair = "{\"prompt\": \"2+2=\", \"chosen\": \"4\", \"rejected\": \"five\"}\0"u8)
                Assert.Equal(0, push(t, pair));
            fixed (byte* same = "{\"prompt\": \"2+2=\", \"chosen\": \"4\", \"rejected\": \"4\"}\0"u8)
                Assert.Equal((int)TemperStatus.InvalidData, push(t, same));
            Assert.Equal(0, step(t, &loss));
            Assert.Equal(MathF.Log(2), loss, 1e-5f);   // a fresh LoRA (B = 0) is the reference itself
        }
        finally
        {
            if (t != 0) Assert.Equal(0, ((delegate* unmanaged<nint, int>)&TrainerExports.TrainerFree)(t));
            Assert.Equal(0, Free(m));
        }
    }

    [Fact]
    public void Status_names_and_version_are_static_strings()
    {
        var name = (delegate* unmanaged<int, byte*>)&LibraryExports.TemperStatusName;
        Assert.Equal("TEMPER_E_BUSY", Marshal.PtrToStringUTF8((nint)name(-7)));
        Assert.Equal("TEMPER_OK", Marshal.PtrToStringUTF8((nint)name(0)));
        Assert.Equal("TEMPER_E_UNKNOWN", Marshal.PtrToStringUTF8((nint)name(-55)));
        Assert.Equal(LibraryExports.Version, Marshal.PtrToStringUTF8((nint)((delegate* unmanaged<byte*>)&LibraryExports.TemperVersion)()));
    }
}
