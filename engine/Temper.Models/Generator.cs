// Autoregressive generation with a KV cache for a batch of prompts. Prompts of different lengths are
// left-padded (mask 0, positions counted over real tokens only, as transformers does), prefilled in
// one forward pass, then decoded one token per row per step. A row stops at an EOS id (unless
// IgnoreEos), at a stop string, or at MaxNewTokens (neither EOS nor a stop string before MinNewTokens);
// finished rows keep feeding padding. With Speculative
// set, one prompt is decoded speculatively instead (Speculative/SpeculativeDecoding.cs).
using System.Runtime.InteropServices;
using Temper.Core;
using Temper.Models.Speculative;

namespace Temper.Models;

public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 64;
    public SamplingOptions Sampling { get; init; } = new();
    public IReadOnlyList<int> EosIds { get; init; } = [];
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    public bool IgnoreEos { get; init; }
    /// <summary>transformers' min_new_tokens: EOS ids cannot be picked, and stop strings do not stop, before this many new tokens.</summary>
    public int MinNewTokens { get; init; }
    /// <summary>Speculative decoding (one prompt; a JSON constraint with prompt lookup only); null = off.</summary>
    public SpeculativeOptions? Speculative { get; init; }
}

public enum FinishReason { Length, Eos, StopString }

public sealed record GenerationResult(IReadOnlyList<int> PromptIds, IReadOnlyList<int> GeneratedIds, FinishReason Finish)
{
    /// <summary>What speculative decoding proposed and accepted; null when it was off.</summary>
    public SpeculationStats? Speculation { get; init; }
}

public sealed class Generator(Decoder decoder, Func<IReadOnlyList<int>, string>? decode = null)
{
    public Decoder Decoder { get; } = decoder;

    /// <summary>Generates for each prompt; onToken(row, id) is called as each token is chosen (for streaming).</summary>
    public IReadOnlyList<GenerationResult> Generate(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions o, Action<int, int>? onToken = null, CancellationToken cancel = default)
    {
        if (prompts.Count == 0) return [];
        if (o.MaxNewTokens < 0) throw new TemperException($"--max-new-tokens must be >= 0 (got {o.MaxNewTokens})");
        if (o.StopStrings.Count > 0 && decode == null) throw new ArgumentException("stop strings need a decode function");
        o.Sampling.Validate();
        if (o.Sampling.Constraint != null && o.IgnoreEos) throw new TemperException("a JSON constraint ends the output with EOS: it cannot be combined with --ignore-eos");
        if (o.MinNewTokens < 0) throw new TemperException($"--min-new-tokens must be >= 0 (got {o.MinNewTokens})");
        if (o.MinNewTokens > 0 && o.Speculative != null) throw new TemperException("--min-new-tokens cannot be combined with --speculative");
        var sampling = o.MinNewTokens > 0 ? o.Sampling with { MinTokens = o.MinNewTokens, EndIds = o.IgnoreEos ? [] : o.EosIds } : o.Sampling;
        var cfg = Decoder.Config;
        int batch = prompts.Count;
        int promptLen = prompts.Max(p => p.Count);
        if (promptLen == 0) throw new TemperException("a prompt is empty: give at least one token");
        int capacity = promptLen + o.MaxNewTokens;
        if (cfg.SlidingWindow is int w && capacity > w)
            throw new TemperException($"prompt + new tokens ({capacity}) exceed the model's sliding window ({w}), which Temper does not implement yet");
        if (o.Speculative is { } spec)
        {
            CheckSpeculation(spec, o, batch, capacity);
            return [SpeculativeDecoding.Generate(Decoder, prompts[0], o, spec, decode, onToken, cancel)];
        }
        int pad = cfg.PadTokenId ?? 0;

        var ids = new int[batch * promptLen];
        var mask = new int[batch * promptLen];
        var pos = new int[batch * promptLen];
        var nextPos = new int[batch];
        for (int b = 0; b < batch; b++)
        {
            int off = promptLen - prompts[b].Count;
            for (int t = 0; t < promptLen; t++)
            {
                bool real = t >= off;
                ids[b * promptLen + t] = real ? prompts[b][t - off] : pad;
                mask[b * promptLen + t] = real ? 1 : 0;
                pos[b * promptLen + t] = real ? t - off : 1;
            }
            nextPos[b] = prompts[b].Count;
        }

        var samplers = Enumerable.Range(0, batch).Select(b => new Sampler(sampling with { Seed = sampling.Seed + (ulong)b })).ToArray();
        var history = prompts.Select(p => new List<int>(p)).ToArray();
        var generated = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var finish = new FinishReason?[batch];
        if (o.MaxNewTokens == 0) return Results(prompts, generated, finish);

        using var cache = new KvCache(cfg, Decoder.Backend, batch, capacity + Decoder.Weights.VirtualTokenCount);
        var logits = Decoder.Forward(ids, pos, mask, batch, cache, allPositions: false);
        var stepIds = new int[batch];
        var stepMask = new int[batch];
        var stepPos = new int[batch];
        for (int step = 0; step < o.MaxNewTokens; step++)
        {
            cancel.ThrowIfCancellationRequested();
            using var hostLogits = logits.IsHost ? null : Decoder.Backend.ToHost(logits);
            Draw(hostLogits ?? logits, samplers, history, prompts, finish, stepIds, cfg.VocabSize);
            for (int b = 0; b < batch; b++)
            {
                stepMask[b] = finish[b] == null ? 1 : 0;
                stepPos[b] = nextPos[b]++;
                if (finish[b] != null) { stepIds[b] = pad; continue; }
                int id = stepIds[b];
                history[b].Add(id);
                generated[b].Add(id);
                onToken?.Invoke(b, id);
                if (!o.IgnoreEos && o.EosIds.Contains(id)) finish[b] = FinishReason.Eos;
                else if (o.StopStrings.Count > 0 && generated[b].Count >= o.MinNewTokens && o.StopStrings.Any(decode!(generated[b]).Contains)) finish[b] = FinishReason.StopString;
            }
            logits.Dispose();
            if (step == o.MaxNewTokens - 1 || finish.All(f => f != null)) break;
            logits = Decoder.Forward(stepIds, stepPos, stepMask, batch, cache, allPositions: false);
        }
        return Results(prompts, generated, finish);
    }

    // Refuses what speculation cannot do exactly, in one line each.
    private void CheckSpeculation(SpeculativeOptions spec, GenerationOptions o, int batch, int capacity)
    {
        spec.Validate();
        if (batch != 1) throw new TemperException($"speculative decoding runs one prompt at a time (got {batch})");
        if (spec.Draft is not Decoder draft) return;
        if (o.Sampling.Constraint != null)
            throw new TemperException("a draft model cannot propose under a JSON constraint (--json/--json-schema); prompt lookup (--speculative ngram) can");
        if (draft.Config.VocabSize != Decoder.Config.VocabSize)
            throw new TemperException($"the draft model's vocabulary ({draft.Config.VocabSize} tokens) differs from the target model's ({Decoder.Config.VocabSize})");
        if (draft.Config.SlidingWindow is int w && capacity > w)
            throw new TemperException($"prompt + new tokens ({capacity}) exceed the draft model's sliding window ({w}), which Temper does not implement yet");
    }

    // Each unfinished row's next token into ids[row] (history = the row's prompt, then what it generated). A
    // row has its own sampler and history, so a large batch draws its rows in parallel with the same draws as
    // one by one (the GRPO rollouts sample 128 rows a step).
    internal static void Draw(Tensor logits, Sampler[] samplers, List<int>[] history, IReadOnlyList<IReadOnlyList<int>> prompts, FinishReason?[] finish, int[] ids, int vocab)
    {
        void Row(int b)
        {
            if (finish[b] == null) ids[b] = samplers[b].Next(logits.Floats.Slice(b * vocab, vocab), CollectionsMarshal.AsSpan(history[b]), prompts[b].Count);
        }
        if ((long)samplers.Length * vocab >= 1 << 14 && samplers.Length > 1) Parallel.For(0, samplers.Length, Row);
        else for (int b = 0; b < samplers.Length; b++) Row(b);
    }

    private static GenerationResult[] Results(IReadOnlyList<IReadOnlyList<int>> prompts, List<int>[] gen, FinishReason?[] finish) =>
        Enumerable.Range(0, prompts.Count).Select(b => new GenerationResult(prompts[b], gen[b], finish[b] ?? FinishReason.Length)).ToArray();
}
