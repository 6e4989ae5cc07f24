// temper_generate_options' penalties and stop strings, called in-process through function pointers as C calls
// them, on the llama-tiny fixture: frequency and presence penalties give the token ids of the .NET Generator
// with the same SamplingOptions (and other ids than without them), stop strings end the generation as
// `temper generate --stop` does (Generator with StopStrings: the same ids, TEMPER_FINISH_STOP_STRING, the
// streamed text holding the stop string), json_object and json_schema give JSON that parses and validates,
// min_new_tokens (0.5.0) gives the Generator's ids with MinNewTokens (a stop string completed earlier ends the run
// only at that token; EOS is not picked before it), 0.2.0- and 0.4.0-sized structs are taken without the newer
// fields, and every bad value, including a struct_size the library does
// not know, is refused with a message naming the field or struct.
using System.Runtime.InteropServices;
using System.Text;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Native;
using Temper.Native.Exports;
using static Temper.Tests.NativeFixture;

namespace Temper.Tests;

public sealed unsafe class GenerateOptionsTests : IDisposable
{
    private readonly nint _model = LoadModel();
    private readonly LanguageModel _lm = LanguageModel.Load(ModelDir, new CpuBackend(1));

    public void Dispose()
    {
        FreeModel(_model);
        _lm.Dispose();
    }

    private sealed record Run(int Status, int[] Ids, TemperGenerateResult Result, string Text);

    [UnmanagedCallersOnly]
    private static int CollectPiece(int token, byte* piece, void* user)
    {
        ((StringBuilder)GCHandle.FromIntPtr((nint)user).Target!).Append(Marshal.PtrToStringUTF8((nint)piece));
        return 0;
    }

    /// <summary>temper_model_generate with o, the stop strings (if any) passed as a const char* const* array.</summary>
    private Run Generate(TemperGenerateOptions o, params string?[] stops)
    {
        var text = new StringBuilder();
        var handle = GCHandle.Alloc(text);
        var pinned = stops.Select(s => s == null ? (GCHandle?)null : GCHandle.Alloc(Utf8Z(s), GCHandleType.Pinned)).ToArray();
        var pointers = pinned.Select(h => h?.AddrOfPinnedObject() ?? 0).ToArray();
        try
        {
            var ids = new int[Math.Max(o.MaxNewTokens, 1)];
            TemperGenerateResult r;
            int rc;
            fixed (nint* stop = pointers)
            fixed (int* p = Prompt)
            fixed (int* outIds = ids)
            {
                if (stops.Length > 0)
                {
                    o.Stop = (byte**)stop;
                    o.StopCount = stops.Length;
                }
                rc = ((delegate* unmanaged<nint, int*, int, TemperGenerateOptions*, delegate* unmanaged[Cdecl]<int, byte*, void*, int>, void*, int*, int, TemperGenerateResult*, int>)&GenerateExports.ModelGenerate)(
                    _model, p, Prompt.Length, &o, (delegate* unmanaged[Cdecl]<int, byte*, void*, int>)(delegate* unmanaged<int, byte*, void*, int>)&CollectPiece,
                    (void*)GCHandle.ToIntPtr(handle), outIds, ids.Length, &r);
            }
            return new Run(rc, ids[..Math.Min(r.Generated, ids.Length)], r, text.ToString());
        }
        finally
        {
            handle.Free();
            foreach (var h in pinned) h?.Free();
        }
    }

    private Run Generated(TemperGenerateOptions o, params string?[] stops)
    {
        var run = Generate(o, stops);
        Assert.True(run.Status == 0, LastError());
        return run;
    }

    private static TemperGenerateOptions Options(int maxNewTokens, bool greedy = true)
    {
        var o = GenerateExports.Defaults;
        o.MaxNewTokens = maxNewTokens;
        o.IgnoreEos = 1;
        o.Greedy = greedy ? 1 : 0;
        o.Temperature = 0.8f;
        o.Seed = 7;
        return o;
    }

    /// <summary>The .NET Generator's run of the same prompt (what `temper generate` runs).</summary>
    private GenerationResult Reference(TemperGenerateOptions o, params string[] stops) =>
        new Generator(_lm.Decoder, ids => _lm.Tokenizer!.Decode(ids, skipSpecialTokens: true)).Generate([Prompt], new GenerationOptions
        {
            MaxNewTokens = o.MaxNewTokens,
            MinNewTokens = o.MinNewTokens,
            IgnoreEos = o.IgnoreEos != 0,
            EosIds = _lm.EosIds(),
            StopStrings = stops,
            Sampling = new SamplingOptions
            {
                Greedy = o.Greedy != 0,
                Temperature = o.Temperature,
                Seed = o.Seed,
                FrequencyPenalty = o.FrequencyPenalty,
                PresencePenalty = o.PresencePenalty,
            },
        })[0];

    [Theory]
    [InlineData(1.5f, 0f, true)]
    [InlineData(0f, 1.5f, true)]
    [InlineData(-1f, 0f, false)]
    [InlineData(0.8f, -0.6f, false)]
    public void Frequency_and_presence_penalties_give_the_generators_tokens(float frequency, float presence, bool greedy)
    {
        var plain = Options(24, greedy);
        var o = plain;
        o.FrequencyPenalty = frequency;
        o.PresencePenalty = presence;
        var got = Generated(o);
        Assert.Equal(Reference(o).GeneratedIds, got.Ids);
        Assert.Equal(24, got.Result.Generated);
        Assert.Equal((int)TemperFinishReason.Length, got.Result.Finish);
        Assert.NotEqual(Generated(plain).Ids, got.Ids);   // the penalty changed something
    }

    [Fact]
    public void A_stop_string_ends_the_generation_as_temper_generate_stop_does()
    {
        var o = Options(24, greedy: false);   // the fixture's greedy text repeats one token
        var full = Generated(o);
        var tok = _lm.Tokenizer!;
        // A stop string completed by token k >= 6: the end of the text of k tokens that the text of k - 1 lacks.
        string? stop = null;
        int k = 6;
        for (; k < full.Ids.Length && stop == null; k++)
        {
            string before = tok.Decode(full.Ids[..(k - 1)], skipSpecialTokens: true), text = tok.Decode(full.Ids[..k], skipSpecialTokens: true);
            for (int n = 2; n <= text.Length && stop == null; n++)
                if (!before.Contains(text[^n..], StringComparison.Ordinal) && text[^n..].Trim().Length >= 2) stop = text[^n..];
        }
        k--;
        Assert.NotNull(stop);
        TestContext.Current.SendDiagnosticMessage($"stop string \"{stop}\" completed by token {k}");

        var want = Reference(o, stop);
        Assert.Equal(FinishReason.StopString, want.Finish);
        Assert.Equal(k, want.GeneratedIds.Count);

        var got = Generated(o, stop);
        Assert.Equal((int)TemperFinishReason.StopString, got.Result.Finish);
        Assert.Equal(k, got.Result.Generated);
        Assert.Equal(want.GeneratedIds, got.Ids);
        Assert.Equal(full.Ids[..k], got.Ids);
        Assert.Equal(tok.Decode(got.Ids, skipSpecialTokens: true), got.Text);   // streamed, stop string included
        Assert.EndsWith(stop, got.Text, StringComparison.Ordinal);

        // Any of several ends it; one that never comes leaves the generation to max_new_tokens.
        var either = Generated(o, "never in this text \u00a7", stop);
        Assert.Equal((k, (int)TemperFinishReason.StopString), (either.Result.Generated, either.Result.Finish));
        var none = Generated(o, "never in this text \u00a7");
        Assert.Equal((24, (int)TemperFinishReason.Length), (none.Result.Generated, none.Result.Finish));
        Assert.Equal(full.Ids, none.Ids);
    }

    [Fact]
    public void Min_new_tokens_gives_the_generators_tokens_and_holds_back_stop_strings_and_eos()
    {
        var o = Options(24, greedy: false);
        var full = Generated(o);
        var tok = _lm.Tokenizer!;
        // A stop string completed by some token k < 20: the last two characters of the text of k tokens that the text of k - 1 lacks.
        int k = Enumerable.Range(2, 18).First(i => !tok.Decode(full.Ids[..(i - 1)], skipSpecialTokens: true).Contains(tok.Decode(full.Ids[..i], skipSpecialTokens: true)[^2..], StringComparison.Ordinal));
        string stop = tok.Decode(full.Ids[..k], skipSpecialTokens: true)[^2..];
        Assert.Equal((k, (int)TemperFinishReason.StopString), (Generated(o, stop).Result.Generated, Generated(o, stop).Result.Finish));

        o.MinNewTokens = k + 3;   // the text holds the stop string from token k on; it ends the run at token k + 3
        var want = Reference(o, stop);
        var got = Generated(o, stop);
        Assert.Equal((k + 3, (int)TemperFinishReason.StopString), (got.Result.Generated, got.Result.Finish));
        Assert.Equal(want.GeneratedIds, got.Ids);
        Assert.Equal(full.Ids[..(k + 3)], got.Ids);

        // With EOS on: the Generator's ids with MinNewTokens (EOS masked), and no EOS among the first min_new_tokens.
        o.IgnoreEos = 0;
        o.MinNewTokens = 20;
        o.Temperature = 1.5f;
        var eosOn = Generated(o);
        Assert.Equal(Reference(o).GeneratedIds, eosOn.Ids);
        Assert.True(eosOn.Result.Generated >= 20, $"{eosOn.Result.Generated} tokens");
        Assert.DoesNotContain(eosOn.Ids[..20], _lm.EosIds().Contains);

        o.MinNewTokens = -1;
        Assert.Equal((int)TemperStatus.InvalidArgument, Generate(o).Status);
        Assert.Equal("temper_model_generate: min_new_tokens must be >= 0 (0 = off; got -1)", LastError());

        // A host built against 0.4.0's temper.h: struct_size 80, and whatever lies past its fields (min_new_tokens) is not read.
        var old = Options(12);
        old.StructSize = 80;
        old.MinNewTokens = -5;
        Assert.Equal(Generated(Options(12)).Ids, Generated(old).Ids);
        Assert.Equal(88, sizeof(TemperGenerateOptions));
        Assert.Equal(80, (int)Marshal.OffsetOf<TemperGenerateOptions>(nameof(TemperGenerateOptions.MinNewTokens)));
    }

    [Fact]
    public void Penalties_at_the_ends_of_their_range_and_an_empty_stop_list_are_taken()
    {
        var o = Options(4);
        o.FrequencyPenalty = 2;
        o.PresencePenalty = -2;
        o.Stop = (byte**)0x10;   // stop_count 0: stop is not read
        o.StopCount = 0;
        var opts = GenerateExports.ToOptions(o, _lm);
        Assert.Equal((2f, -2f), (opts.Sampling.FrequencyPenalty, opts.Sampling.PresencePenalty));
        Assert.Empty(opts.StopStrings);
    }

    public static TheoryData<string, float, float, int, string> BadFields => new()
    {
        { "frequency 2.5", 2.5f, 0f, (int)TemperStatus.InvalidArgument, "temper_model_generate: frequency_penalty must be in [-2, 2] (got 2.5)" },
        { "frequency -2.01", -2.01f, 0f, (int)TemperStatus.InvalidArgument, "temper_model_generate: frequency_penalty must be in [-2, 2] (got -2.01)" },
        { "frequency NaN", float.NaN, 0f, (int)TemperStatus.InvalidArgument, "temper_model_generate: frequency_penalty must be in [-2, 2] (got NaN)" },
        { "presence 3", 0f, 3f, (int)TemperStatus.InvalidArgument, "temper_model_generate: presence_penalty must be in [-2, 2] (got 3)" },
        { "presence -inf", 0f, float.NegativeInfinity, (int)TemperStatus.InvalidArgument, "temper_model_generate: presence_penalty must be in [-2, 2] (got -Infinity)" },
    };

    [Theory]
    [MemberData(nameof(BadFields))]
    public void Penalties_out_of_range_are_refused_with_the_fields_name(string what, float frequency, float presence, int status, string message)
    {
        var o = Options(4);
        o.FrequencyPenalty = frequency;
        o.PresencePenalty = presence;
        Assert.True(Generate(o).Status == status, what);
        Assert.Equal(message, LastError());
    }

    [Fact]
    public void Bad_stop_strings_are_refused_with_the_fields_name()
    {
        var o = Options(4);
        void Refused(int status, string message, TemperGenerateOptions options, params string?[] stops)
        {
            Assert.Equal(status, Generate(options, stops).Status);
            Assert.Equal(message, LastError());
        }
        Refused((int)TemperStatus.InvalidArgument, "temper_model_generate: options->stop[1] is NULL", o, "ok", null);
        Refused((int)TemperStatus.InvalidArgument, "temper_model_generate: options->stop[0] is empty (it would end the generation at its first token)", o, "");

        var noArray = o;
        noArray.StopCount = 2;
        Refused((int)TemperStatus.InvalidArgument, "temper_model_generate: options->stop is NULL but stop_count is 2", noArray);
        var negative = o;
        negative.StopCount = -1;
        Refused((int)TemperStatus.InvalidArgument, "temper_model_generate: stop_count must be >= 0 (got -1)", negative);

        byte[] bad = [0x61, 0xc3, 0x28, 0];
        fixed (byte* b = bad)
        {
            var badUtf8 = o;
            badUtf8.Stop = &b;
            badUtf8.StopCount = 1;
            Refused((int)TemperStatus.InvalidUtf8, "temper_model_generate: options->stop[0] is not valid UTF-8 (at byte 1)", badUtf8);
        }
    }

    [Fact]
    public void Stop_strings_need_a_tokenizer()
    {
        string dir = Directory.CreateTempSubdirectory("temper-no-tokenizer-").FullName;
        try
        {
            foreach (var f in new[] { "config.json", "model.safetensors" }) File.Copy(Path.Combine(ModelDir, f), Path.Combine(dir, f));
            nint m;
            fixed (byte* d = Utf8Z(dir))
                Assert.Equal(0, ((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(d, null, &m));
            try
            {
                var o = Options(4);
                fixed (byte* s = "x\0"u8)
                fixed (int* p = Prompt)
                {
                    o.Stop = &s;
                    o.StopCount = 1;
                    int rc = ((delegate* unmanaged<nint, int*, int, TemperGenerateOptions*, delegate* unmanaged[Cdecl]<int, byte*, void*, int>, void*, int*, int, TemperGenerateResult*, int>)&GenerateExports.ModelGenerate)(
                        m, p, Prompt.Length, &o, null, null, null, 0, null);
                    Assert.Equal((int)TemperStatus.InvalidData, rc);
                }
                Assert.Equal($"temper_model_generate: stop strings need the model's tokenizer, and {dir} has no tokenizer.json", LastError());
            }
            finally
            {
                Assert.Equal(0, ((delegate* unmanaged<nint, int>)&ModelExports.ModelFree)(m));
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // A schema the random model can only finish (bounded string, a boolean, no extra properties), so the output ends at EOS.
    private const string Schema = """{"type": "object", "properties": {"answer": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"}}, "required": ["answer", "ok"], "additionalProperties": false}""";

    private Run GenerateJson(TemperGenerateOptions o, string? schema)
    {
        var pinned = schema == null ? (GCHandle?)null : GCHandle.Alloc(Utf8Z(schema), GCHandleType.Pinned);
        try
        {
            o.JsonSchema = (byte*)(pinned?.AddrOfPinnedObject() ?? 0);
            return Generate(o);
        }
        finally { pinned?.Free(); }
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(true, true)]
    [InlineData(false, false)]
    public void Json_object_and_json_schema_give_json_that_parses_and_validates(bool schema, bool sampled)
    {
        var o = Options(96, greedy: !sampled);
        o.IgnoreEos = 0;
        o.JsonObject = schema ? 0 : 1;
        var run = GenerateJson(o, schema ? Schema : null);
        Assert.True(run.Status == 0, LastError());
        Assert.StartsWith("{", run.Text.TrimStart()); // JSON may open with whitespace (at most 12 bytes)
        if (!schema && run.Result.Finish == (int)TemperFinishReason.Length) return; // any object: the random model may not close it in time
        Assert.Equal((int)TemperFinishReason.Eos, run.Result.Finish);
        var node = System.Text.Json.Nodes.JsonNode.Parse(run.Text)!.AsObject();
        if (schema)
        {
            Assert.Equal(["answer", "ok"], node.Select(kv => kv.Key).ToArray());
            Assert.True(((string)node["answer"]!).Length <= 6);
            Assert.Contains(node["ok"]!.GetValueKind(), new[] { System.Text.Json.JsonValueKind.True, System.Text.Json.JsonValueKind.False });
        }
        // unconstrained, the same prompt does not give JSON
        var plain = Options(24);
        Assert.ThrowsAny<System.Text.Json.JsonException>(() => System.Text.Json.Nodes.JsonNode.Parse(Generated(plain).Text));
    }

    [Fact]
    public void Json_options_are_checked_and_a_020_struct_is_taken_without_them()
    {
        var o = Options(8);
        o.IgnoreEos = 0;
        o.JsonObject = 1;
        Assert.Equal((int)TemperStatus.InvalidArgument, GenerateJson(o, Schema).Status);
        Assert.Equal("temper_model_generate: set json_object or json_schema, not both", LastError());
        o.JsonObject = 0;
        Assert.Equal((int)TemperStatus.InvalidArgument, GenerateJson(o, """{"type": "string", "pattern": "a+"}""").Status);
        Assert.StartsWith("temper_model_generate: options->json_schema: ", LastError());
        Assert.Contains("pattern", LastError());
        o.IgnoreEos = 1;
        o.JsonObject = 1;
        Assert.Equal((int)TemperStatus.InvalidArgument, Generate(o).Status);
        Assert.Equal("temper_model_generate: ignore_eos with json_object or json_schema (the output ends when the JSON is complete)", LastError());

        // A host built against 0.2.0's temper.h: struct_size 72, and whatever lies past its fields is not read.
        var old = Options(12);
        old.StructSize = 72;
        old.JsonObject = 1;   // the padding a 0.2.0 host may leave unset
        Assert.Equal(Generated(Options(12)).Ids, Generated(old).Ids);
    }

    [Fact]
    public void A_struct_size_the_library_does_not_know_is_refused_naming_the_struct()
    {
        var o = Options(4);
        o.StructSize = 0;
        Assert.Equal((int)TemperStatus.InvalidArgument, Generate(o).Status);
        Assert.Equal($"temper_model_generate: options->struct_size is 0, not the {sizeof(TemperGenerateOptions)} bytes of libtemper {LibraryExports.Version}'s temper_generate_options (start from temper_generate_options_default(), not {{0}} or memset)", LastError());
        foreach (uint size in new[] { 40u, (uint)sizeof(TemperGenerateOptions) + 8 })   // 0.1.0's struct; a later, longer one
        {
            o.StructSize = size;
            Assert.Equal((int)TemperStatus.InvalidArgument, Generate(o).Status);
            Assert.Equal($"temper_model_generate: options->struct_size is {size}, not the {sizeof(TemperGenerateOptions)} bytes of libtemper {LibraryExports.Version}'s temper_generate_options; the host was compiled against another temper.h (this library's is TEMPER_VERSION {LibraryExports.Version})", LastError());
        }

        var mo = ModelExports.Defaults;
        mo.StructSize = 8;
        nint m = 0;
        fixed (byte* dir = Utf8Z(ModelDir))
            Assert.Equal((int)TemperStatus.InvalidArgument, ((delegate* unmanaged<byte*, TemperModelOptions*, nint*, int>)&ModelExports.ModelLoad)(dir, &mo, &m));
        Assert.Equal(0, m);
        Assert.StartsWith("temper_model_load: options->struct_size is 8, not the 12 bytes of libtemper", LastError());
        Assert.Contains("temper_model_options;", LastError());

        var to = TrainerExports.Defaults;
        to.StructSize = 4;
        nint t = 0;
        Assert.Equal((int)TemperStatus.InvalidArgument, ((delegate* unmanaged<nint, TemperTrainerOptions*, byte*, nint*, int>)&TrainerExports.TrainerInit)(_model, &to, null, &t));
        Assert.Equal(0, t);
        Assert.Contains("options->struct_size is 4", LastError());
        Assert.Contains("'s temper_trainer_options;", LastError());
    }
}
