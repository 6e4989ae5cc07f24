// The speculative decoding flags `generate`, `chat` and `bench decode` share: --speculative ngram|draft
// (draft when only --draft-model is given), --draft-model DIR, --num-speculative-tokens K (1..16, default 4),
// --ngram-max / --ngram-min (prompt lookup's suffix lengths, default 4 and 2). Checked before any model
// loads; the draft is loaded on the target's backend and weight dtype and refused when its vocabulary differs.
using System.CommandLine;
using Temper.Core;
using Temper.Models;
using Temper.Models.Speculative;

namespace Temper.Cli.Commands;

internal sealed class SpeculativeFlags
{
    public readonly Option<string?> Method = new("--speculative") { Description = "Speculative decoding: ngram (prompt lookup: propose what followed the latest earlier occurrence of the last n tokens) or draft (a smaller model of the same tokenizer, --draft-model); one prompt, not with --graph; --json/--json-schema with ngram only" };
    public readonly Option<string?> DraftModel = new("--draft-model") { Description = "Draft model folder for --speculative draft (implies it): same tokenizer and vocabulary as --model" };
    public readonly Option<int?> NumTokens = new("--num-speculative-tokens") { Description = "Tokens proposed per verify step (1..16, default 4)" };
    public readonly Option<int?> NgramMax = new("--ngram-max") { Description = "Prompt lookup: the longest suffix n-gram tried (default 4, at most 16)" };
    public readonly Option<int?> NgramMin = new("--ngram-min") { Description = "Prompt lookup: the shortest suffix n-gram tried (default 2)" };

    public void AddTo(Command c)
    {
        foreach (Option o in new Option[] { Method, DraftModel, NumTokens, NgramMax, NgramMin }) c.Add(o);
    }

    /// <summary>"ngram", "draft" or null (off), after checking the flags' combination and numbers in one line each.</summary>
    public string? Check(ParseResult p)
    {
        string? method = p.GetValue(Method);
        string? draft = p.GetValue(DraftModel);
        if (method != null && method is not ("ngram" or "draft")) throw new TemperException($"--speculative must be ngram or draft, not '{method}'");
        if (method == "ngram" && draft != null) throw new TemperException("--draft-model is for --speculative draft, not ngram");
        if (method == "draft" && draft == null) throw new TemperException("--speculative draft needs --draft-model DIR");
        method ??= draft != null ? "draft" : null;
        if (method == null)
        {
            foreach (var (o, name) in new (Option<int?>, string)[] { (NumTokens, "--num-speculative-tokens"), (NgramMax, "--ngram-max"), (NgramMin, "--ngram-min") })
                if (p.GetValue(o) != null) throw new TemperException($"{name} is for speculative decoding: add --speculative ngram or --draft-model DIR");
            return null;
        }
        if (method == "draft" && (p.GetValue(NgramMax) != null || p.GetValue(NgramMin) != null))
            throw new TemperException("--ngram-max and --ngram-min are for --speculative ngram, not draft");
        Numbers(p).Validate();
        return method;
    }

    private SpeculativeOptions Numbers(ParseResult p)
    {
        var d = new SpeculativeOptions();
        return d with
        {
            NumTokens = p.GetValue(NumTokens) ?? d.NumTokens,
            NgramMax = p.GetValue(NgramMax) ?? Math.Max(d.NgramMax, p.GetValue(NgramMin) ?? 0),
            NgramMin = p.GetValue(NgramMin) ?? Math.Min(d.NgramMin, p.GetValue(NgramMax) ?? int.MaxValue),
        };
    }

    /// <summary>The n-gram options for the checked flags (null when off) where only prompt lookup is served (serve, bench serve); a draft model is refused in one line.</summary>
    public SpeculativeOptions? ReadNgram(ParseResult p, string verb)
    {
        if (p.GetValue(Method) == "draft") throw new TemperException($"{verb}: --speculative draft (a draft model) is not served; use --speculative ngram");
        return Check(p) == null ? null : Numbers(p);
    }

    /// <summary>The options for the checked flags (null when off) and the draft model loaded on the target's backend
    /// (the caller disposes it), refused in one line when its vocabulary is not the target's.</summary>
    public (SpeculativeOptions? Options, LanguageModel? Draft) Read(ParseResult p, LanguageModel target) =>
        Read(p, target.Decoder, target.Tokenizer, target.Directory);

    /// <summary>As above for a bare decoder (a bench's random model, named by <paramref name="what"/>).</summary>
    public (SpeculativeOptions? Options, LanguageModel? Draft) Read(ParseResult p, Decoder target, Temper.Models.Text.HfTokenizer? tokenizer, string what)
    {
        string? method = Check(p);
        if (method == null) return (null, null);
        if (method == "ngram") return (Numbers(p), null);
        var draft = LanguageModel.Load(p.GetValue(DraftModel)!, target.Backend, weightDType: CliOptions.WeightDType(p));
        try
        {
            SpeculativeOptions.CheckDraftVocabulary(target.Config, tokenizer, what, draft);
        }
        catch
        {
            draft.Dispose();
            throw;
        }
        return (Numbers(p) with { Draft = draft.Decoder }, draft);
    }
}
