// temper_model_generate: greedy or sampled continuation of one prompt, streamed through a callback
// int (*)(int32_t token, const char* piece, void* user) that returns non-zero to stop. piece is the
// text the token adds (special tokens add none; a token that ends inside a UTF-8 character adds none
// until the character completes). temper_generate_options maps onto GenerationOptions and SamplingOptions
// (penalties and stop strings with `temper generate`'s semantics; json_object and json_schema as
// `temper generate --json` and `--json-schema`; min_new_tokens as `--min-new-tokens`, transformers'
// min_new_tokens: EOS cannot be picked and stop strings do not stop before it), each field checked under its C name.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Temper.Core;
using Temper.Models;
using Temper.Models.Text;

namespace Temper.Native.Exports;

public static unsafe class GenerateExports
{
    [UnmanagedCallersOnly(EntryPoint = "temper_generate_options_default")]
    public static TemperGenerateOptions GenerateOptionsDefault() => Defaults;

    internal static TemperGenerateOptions Defaults => new()
    {
        StructSize = (uint)sizeof(TemperGenerateOptions),
        MaxNewTokens = 64,
        IgnoreEos = 0,
        Greedy = 1,
        Temperature = 1f,
        TopK = 0,
        TopP = 1f,
        MinP = 0f,
        RepetitionPenalty = 1f,
        FrequencyPenalty = 0f,
        PresencePenalty = 0f,
        Seed = 0,
        Stop = null,
        StopCount = 0,
        JsonObject = 0,
        JsonSchema = null,
        MinNewTokens = 0,
    };

    /// <summary>0.2.0's temper_generate_options: its struct_size and the bytes of its fields (up to json_object).</summary>
    private static readonly (uint, int) V020 = (72, (int)Marshal.OffsetOf<TemperGenerateOptions>(nameof(TemperGenerateOptions.JsonObject)));

    /// <summary>0.3.0's and 0.4.0's temper_generate_options: its struct_size and the bytes of its fields (up to min_new_tokens).</summary>
    private static readonly (uint, int) V040 = (80, (int)Marshal.OffsetOf<TemperGenerateOptions>(nameof(TemperGenerateOptions.MinNewTokens)));

    [UnmanagedCallersOnly(EntryPoint = "temper_model_generate")]
    public static int ModelGenerate(nint model, int* prompt, int promptCount, TemperGenerateOptions* options,
        delegate* unmanaged[Cdecl]<int, byte*, void*, int> onToken, void* user, int* outIds, int outCapacity, TemperGenerateResult* result)
    {
        LastError.Clear();
        try
        {
            if (result != null) *result = default;
            var m = Handles.Get<NativeModel>(model, "model");
            var lm = m.Lm;
            if (promptCount < 1) throw Status.Arg($"temper_model_generate: the prompt needs at least one token (got {promptCount})");
            var ids = ModelExports.ReadIds(prompt, promptCount, lm.Config.VocabSize, "temper_model_generate: prompt");
            ModelExports.CheckBuffer(outIds, outCapacity, "temper_model_generate: out_ids");
            var o = OptionStructs.Read(options, Defaults, "temper_model_generate", "temper_generate_options", V020, V040);
            var gen = ToOptions(o, lm);
            if (o.JsonObject != 0 || o.JsonSchema != null) gen = gen with { Sampling = gen.Sampling with { Constraint = Constraint(m, o) } };
            Func<IReadOnlyList<int>, string>? decode = lm.Tokenizer is { } t ? generated => t.Decode(generated, skipSpecialTokens: true) : null;
            if (gen.MinNewTokens > 0 && m.Cuda != null)
                throw new NativeError(TemperStatus.Unsupported, "temper_model_generate: min_new_tokens is not supported on TEMPER_DEVICE_CUDA (the CUDA graph decoder); set it to 0 there");
            if (gen.StopStrings.Count > 0)
            {
                // As `temper generate --stop`: the generated text, special tokens skipped, is searched after each token.
                if (m.Cuda != null) throw new NativeError(TemperStatus.Unsupported, "temper_model_generate: stop strings are not supported on TEMPER_DEVICE_CUDA (the CUDA graph decoder); end the generation from the token callback instead");
                if (decode == null) throw new NativeError(TemperStatus.InvalidData, $"temper_model_generate: stop strings need the model's tokenizer, and {lm.Directory} has no tokenizer.json");
            }

            var stream = lm.Tokenizer is { } tok ? new StreamingPieces(tok) : null;
            var produced = new List<int>();
            bool stopped = false;
            using var cancel = new CancellationTokenSource();
            void OnToken(int row, int id)
            {
                if (stopped) return;
                if (produced.Count < outCapacity) outIds[produced.Count] = id;
                produced.Add(id);
                if (onToken == null) return;
                var piece = Utf8.Pinned(stream?.Push(id) ?? "");
                int stop = onToken(id, (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(piece)), user);
                if (stop != 0)
                {
                    stopped = true;
                    cancel.Cancel();
                }
            }

            IReadOnlyList<GenerationResult>? r = null;
            using (m.Enter("temper_model_generate"))
            {
                try
                {
                    r = m.Cuda != null
                        ? [new GraphGenerator(m.Graph(ids.Length + gen.MaxNewTokens)).Generate(ids, gen, OnToken, cancel.Token)]
                        : new Generator(lm.Decoder, decode).Generate([ids], gen, OnToken, cancel.Token);
                }
                catch (OperationCanceledException) when (stopped) { }
            }
            if (result != null)
            {
                result->Generated = produced.Count;
                result->Finish = stopped ? (int)TemperFinishReason.Stopped : r![0].Finish switch
                {
                    FinishReason.Eos => (int)TemperFinishReason.Eos,
                    FinishReason.StopString => (int)TemperFinishReason.StopString,
                    _ => (int)TemperFinishReason.Length,
                };
            }
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    internal static GenerationOptions ToOptions(in TemperGenerateOptions o, LanguageModel lm)
    {
        const string f = "temper_model_generate";
        if (o.MaxNewTokens < 0) throw Status.Arg($"{f}: max_new_tokens must be >= 0 (got {o.MaxNewTokens})");
        if (o.MinNewTokens < 0) throw Status.Arg($"{f}: min_new_tokens must be >= 0 (0 = off; got {o.MinNewTokens})");
        var sampling = new SamplingOptions
        {
            Greedy = o.Greedy != 0,
            Temperature = o.Temperature,
            TopK = o.TopK,
            TopP = o.TopP,
            MinP = o.MinP,
            RepetitionPenalty = o.RepetitionPenalty,
            FrequencyPenalty = o.FrequencyPenalty,
            PresencePenalty = o.PresencePenalty,
            Seed = o.Seed,
        };
        // The fields keep their C names in the errors; the temperature's hint is the C one (greedy = 1).
        if (!sampling.Greedy && !(o.Temperature > 0)) throw Status.Arg($"{f}: temperature must be > 0 when sampling (got {o.Temperature}); set greedy = 1 for argmax decoding");
        try
        {
            sampling.Validate(field => $"{f}: {field}");
        }
        catch (TemperException e)
        {
            throw Status.Arg(e.Message);
        }
        return new GenerationOptions
        {
            MaxNewTokens = o.MaxNewTokens,
            Sampling = sampling,
            EosIds = lm.EosIds(),
            StopStrings = ReadStops(o.Stop, o.StopCount, f),
            IgnoreEos = o.IgnoreEos != 0,
            MinNewTokens = o.MinNewTokens,
        };
    }

    // json_object / json_schema: the model's constraint (compiled once per schema text on the model), as `temper generate --json`.
    private static Temper.Models.Constrained.JsonConstraint Constraint(NativeModel m, in TemperGenerateOptions o)
    {
        const string f = "temper_model_generate";
        if (o.JsonObject != 0 && o.JsonSchema != null) throw Status.Arg($"{f}: set json_object or json_schema, not both");
        if (o.IgnoreEos != 0) throw Status.Arg($"{f}: ignore_eos with json_object or json_schema (the output ends when the JSON is complete)");
        if (m.Lm.Tokenizer == null) throw new NativeError(TemperStatus.InvalidData, $"{f}: json_object and json_schema need the model's tokenizer, and {m.Lm.Directory} has no tokenizer.json");
        string? schema = o.JsonSchema != null ? Utf8.Read(o.JsonSchema, $"{f}: options->json_schema") : null;
        try
        {
            return m.JsonConstraint(schema);
        }
        catch (TemperException e)
        {
            throw Status.Arg($"{f}: options->json_schema: {e.Message}");
        }
    }

    // options->stop: stop_count strings, each non-NULL, non-empty (an empty one would end every generation at
    // its first token) and UTF-8. Copied here; the host's array is not read after the call.
    private static string[] ReadStops(byte** stop, int count, string f)
    {
        if (count < 0) throw Status.Arg($"{f}: stop_count must be >= 0 (got {count})");
        if (count == 0) return [];
        if (stop == null) throw Status.Arg($"{f}: options->stop is NULL but stop_count is {count}");
        var stops = new string[count];
        for (int i = 0; i < count; i++)
        {
            stops[i] = Utf8.Read(stop[i], $"{f}: options->stop[{i}]");
            if (stops[i].Length == 0) throw Status.Arg($"{f}: options->stop[{i}] is empty (it would end the generation at its first token)");
        }
        return stops;
    }

    /// <summary>Text deltas of a growing id list: decode all, emit what is new, hold back a partial UTF-8 character.</summary>
    private sealed class StreamingPieces(HfTokenizer tok)
    {
        private readonly List<int> _ids = [];
        private int _emitted;

        public string Push(int id)
        {
            _ids.Add(id);
            string text = tok.Decode(_ids, skipSpecialTokens: true);
            if (text.EndsWith('\uFFFD')) return "";
            string delta = _emitted <= text.Length ? text[_emitted..] : "";
            _emitted = text.Length;
            return delta;
        }
    }
}
