// temper_model_generate: greedy or sampled continuation of one prompt, streamed through a callback
// int (*)(int32_t token, const char* piece, void* user) that returns non-zero to stop. piece is the
// text the token adds (special tokens add none; a token that ends inside a UTF-8 character adds none
// until the character completes).
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
        MaxNewTokens = 64,
        IgnoreEos = 0,
        Sampling = new TemperSamplingOptions { Greedy = 1, Temperature = 1f, TopK = 0, TopP = 1f, MinP = 0f, RepetitionPenalty = 1f, Seed = 0 },
    };

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
            var o = options == null ? Defaults : *options;
            var gen = ToOptions(o, lm);

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
                        : new Generator(lm.Decoder).Generate([ids], gen, OnToken, cancel.Token);
                }
                catch (OperationCanceledException) when (stopped) { }
            }
            if (result != null)
            {
                result->Generated = produced.Count;
                result->Finish = stopped ? (int)TemperFinishReason.Stopped
                    : r![0].Finish == FinishReason.Eos ? (int)TemperFinishReason.Eos : (int)TemperFinishReason.Length;
            }
            return 0;
        }
        catch (Exception e) { return Status.Report(e); }
    }

    internal static GenerationOptions ToOptions(in TemperGenerateOptions o, LanguageModel lm)
    {
        if (o.MaxNewTokens < 0) throw Status.Arg($"temper_model_generate: max_new_tokens must be >= 0 (got {o.MaxNewTokens})");
        var s = o.Sampling;
        var sampling = new SamplingOptions
        {
            Greedy = s.Greedy != 0,
            Temperature = s.Temperature,
            TopK = s.TopK,
            TopP = s.TopP,
            MinP = s.MinP,
            RepetitionPenalty = s.RepetitionPenalty,
            Seed = s.Seed,
        };
        // SamplingOptions.Validate words its errors for the CLI (--top-p); here the fields keep their C names.
        if (!sampling.Greedy && !(s.Temperature > 0)) throw Status.Arg($"temper_model_generate: temperature must be > 0 when sampling (got {s.Temperature}); set greedy = 1 for argmax decoding");
        if (s.TopK < 0) throw Status.Arg($"temper_model_generate: top_k must be >= 0 (got {s.TopK})");
        if (!(s.TopP > 0 && s.TopP <= 1)) throw Status.Arg($"temper_model_generate: top_p must be in (0, 1] (got {s.TopP})");
        if (!(s.MinP >= 0 && s.MinP <= 1)) throw Status.Arg($"temper_model_generate: min_p must be in [0, 1] (got {s.MinP})");
        if (!(s.RepetitionPenalty > 0)) throw Status.Arg($"temper_model_generate: repetition_penalty must be > 0 (got {s.RepetitionPenalty})");
        sampling.Validate();
        return new GenerationOptions
        {
            MaxNewTokens = o.MaxNewTokens,
            Sampling = sampling,
            EosIds = lm.EosIds(),
            IgnoreEos = o.IgnoreEos != 0,
        };
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
