// Speculative decoding's settings (GenerationOptions.Speculative) and what a run of it reports. A proposer
// guesses up to NumTokens tokens; the target model checks them all in one forward and keeps the longest
// prefix it agrees with, plus its own next token. Method: prompt lookup (n-gram, vLLM's "ngram", llama.cpp's
// lookup decoding) when Draft is null, else a smaller draft model of the same vocabulary.
using Temper.Core;

namespace Temper.Models.Speculative;

public sealed record SpeculativeOptions
{
    public const int MaxTokens = 16;
    public const int MaxNgram = 16;

    /// <summary>K: tokens proposed per verify step (1..16).</summary>
    public int NumTokens { get; init; } = 4;
    /// <summary>The longest suffix n-gram prompt lookup tries first.</summary>
    public int NgramMax { get; init; } = 4;
    /// <summary>The shortest suffix n-gram prompt lookup falls back to.</summary>
    public int NgramMin { get; init; } = 2;
    /// <summary>The draft model's decoder (same vocabulary as the target); null = prompt lookup.</summary>
    public Decoder? Draft { get; init; }

    public string Method => Draft == null ? "ngram" : "draft";

    /// <summary>Refuses a draft model folder whose vocabulary is not the target's (size from config.json, and the
    /// tokenizers' id-to-piece maps where both have one), in one line naming both (<paramref name="target"/>: a folder,
    /// or what a bench's random model is).</summary>
    public static void CheckDraftVocabulary(ModelConfig targetConfig, Text.HfTokenizer? targetTokenizer, string target, LanguageModel draft)
    {
        bool sameSize = targetConfig.VocabSize == draft.Config.VocabSize;
        bool sameTokens = targetTokenizer == null || draft.Tokenizer == null || targetTokenizer.SameVocabulary(draft.Tokenizer);
        if (sameSize && sameTokens) return;
        string why = sameSize ? "its tokenizer maps ids to other tokens" : $"{draft.Config.VocabSize} tokens against {targetConfig.VocabSize}";
        throw new TemperException($"draft model {draft.Directory} does not share the vocabulary of {target} ({why}): a draft model must use the target's tokenizer");
    }

    /// <summary>Checks the numbers, naming them as the CLI's flags, in one line.</summary>
    public void Validate()
    {
        if (NumTokens < 1 || NumTokens > MaxTokens) throw new TemperException($"--num-speculative-tokens must be in 1..{MaxTokens} (got {NumTokens})");
        if (Draft != null) return;
        if (NgramMin < 1 || NgramMin > MaxNgram) throw new TemperException($"--ngram-min must be in 1..{MaxNgram} (got {NgramMin})");
        if (NgramMax < NgramMin || NgramMax > MaxNgram) throw new TemperException($"--ngram-max must be in --ngram-min ({NgramMin})..{MaxNgram} (got {NgramMax})");
    }
}

/// <summary>
/// What speculation did in one generation: target decode forwards (each adds 1 + its accepted tokens), verify steps
/// (the forwards that checked at least one proposed token), tokens proposed and accepted.
/// </summary>
public sealed record SpeculationStats(int TargetForwards, int VerifySteps, int Proposed, int Accepted)
{
    /// <summary>Accepted / proposed.</summary>
    public double AcceptanceRate => Proposed == 0 ? 0 : (double)Accepted / Proposed;
    /// <summary>Proposed tokens accepted per verify step (the target's own token not counted).</summary>
    public double MeanAccepted => VerifySteps == 0 ? 0 : (double)Accepted / VerifySteps;

    /// <summary>One line for a stats print: "speculative: 12 verify steps, accepted 30/48 proposed (62.5%), 2.50 accepted per verify step".</summary>
    public string Describe(string method) =>
        $"speculative ({method}): {VerifySteps} verify steps of {TargetForwards} target forwards, accepted {Accepted}/{Proposed} proposed ({AcceptanceRate:P1}), mean {MeanAccepted:F2} accepted tokens per verify step";
}
