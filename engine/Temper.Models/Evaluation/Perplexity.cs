// Perplexity of a causal LM over one long token sequence ids [L], in strided windows as transformers' guide
// "Perplexity of fixed-length models" runs them: window k holds tokens [begin, end) with begin = k S,
// end = min(begin + ctx, L); its targets x[j] (those after the previous window's, up to end) are scored from
// the logits at j-1, the earlier tokens of the window being context only; the run stops at the window that
// scores x[L-1]. With stride = ctx (disjoint windows) a window's last position also scores the next window's
// first token (the guide drops that token, scoring L - windows tokens), so every token but the first is
// scored exactly once, from one window: L - 1 NLLs in all.
// Each window is a forward-only DecoderBackprop pass [B, T] (B windows of one length side by side; the
// last, shorter window runs in its own batch) with checkpointing on, so only each layer's input [B*T,C] is
// held, and the fused LM head + cross-entropy (CrossEntropyHead, chunked over the vocabulary): the [B*T,V]
// logits are never held. NLL_j = logsumexp(logits_{j-1}) - logits_{j-1}[x_j] (f32 from the kernel, summed
// in float64). ppl = exp(mean NLL); the +/- is llama.cpp's: the standard error of the mean NLL,
// sqrt(var / (n - 1)) with var the population variance, times ppl.
using Temper.Core;

namespace Temper.Models.Evaluation;

/// <summary>One window: tokens [Begin, End) run through the model; targets x[j], j in [FirstTarget, EndTarget), scored from position j - 1.</summary>
public readonly record struct PerplexityWindow(int Begin, int End, int FirstTarget, int EndTarget)
{
    public int Length => End - Begin;
    public int Scored => EndTarget - FirstTarget;
}

/// <summary>Where a run stands: windows done of all, tokens scored so far and the perplexity over them.</summary>
public readonly record struct PerplexityProgress(int WindowsDone, int Windows, int TokensScored, double RunningPpl);

/// <summary>
/// Tokens scored, windows run, mean NLL (nats), ppl = exp(Nll), llama.cpp's +/- on ppl (null with one token
/// scored), the window length and stride, and TokenNlls [L]: the NLL of x[j] at j (NaN at 0, never scored).
/// </summary>
public sealed record PerplexityResult(int Tokens, int Windows, double Nll, double Ppl, double? PplStderr, int Ctx, int Stride, double[] TokenNlls);

public static class Perplexity
{
    /// <summary>ctx when none is given: the model's max positions, at most 2048 (llama.cpp's and the HF guide's usual window).</summary>
    public static int DefaultCtx(ModelConfig cfg) => Math.Min(cfg.MaxPositions, 2048);

    /// <summary>The windows over a text of <paramref name="length"/> tokens (see the file header).</summary>
    public static IReadOnlyList<PerplexityWindow> Windows(int length, int ctx, int stride)
    {
        if (length < 2) throw new TemperException($"the text has {length} token{(length == 1 ? "" : "s")}; perplexity needs at least 2");
        if (ctx < 2) throw new TemperException($"--ctx {ctx}: a window needs at least 2 tokens");
        if (stride < 1 || stride > ctx) throw new TemperException($"--stride {stride} must be in 1..ctx ({ctx})");
        var windows = new List<PerplexityWindow>();
        for (int begin = 0, nextTarget = 1; ; begin += stride)
        {
            int end = Math.Min(begin + ctx, length);
            int endTarget = Math.Min(stride == ctx ? end + 1 : end, length);
            windows.Add(new PerplexityWindow(begin, end, nextTarget, endTarget));
            nextTarget = endTarget;
            if (endTarget == length) return windows;
        }
    }

    /// <summary>
    /// The perplexity of ids [L] under the decoder (its attached adapter included) in windows of ctx tokens
    /// every stride tokens, batchSize windows per pass. progress is called after each pass.
    /// </summary>
    public static PerplexityResult Evaluate(Decoder decoder, ReadOnlySpan<int> ids, int ctx, int stride, int batchSize,
        Action<PerplexityProgress>? progress = null, CancellationToken cancel = default)
    {
        var cfg = decoder.Config;
        int virtualTokens = decoder.Weights.VirtualTokenCount;
        if (ctx > cfg.MaxPositions - virtualTokens)
            throw new TemperException(virtualTokens == 0
                ? $"--ctx {ctx} exceeds the model's max_position_embeddings ({cfg.MaxPositions})"
                : $"--ctx {ctx} plus the adapter's {virtualTokens} virtual tokens exceeds the model's max_position_embeddings ({cfg.MaxPositions})");
        if (batchSize < 1) throw new TemperException($"--batch-size {batchSize} must be at least 1");
        decoder.Weights.LmHead.FusedHeadWeight(); // refused here, before any window runs
        foreach (int id in ids)
            if ((uint)id >= (uint)cfg.VocabSize) throw new TemperException($"token id {id} is outside the model's vocabulary (size {cfg.VocabSize})");
        var windows = Windows(ids.Length, ctx, stride);

        var nlls = new double[ids.Length];
        nlls[0] = double.NaN;
        var backprop = new DecoderBackprop(decoder) { GradientCheckpointing = true };
        double sum = 0;
        int scored = 0;
        for (int w = 0; w < windows.Count;)
        {
            cancel.ThrowIfCancellationRequested();
            // consecutive windows of one length, at most batchSize of them (only the last window can be shorter)
            int t = windows[w].Length, b = 1;
            while (b < batchSize && w + b < windows.Count && windows[w + b].Length == t) b++;
            var batchIds = new int[b * t];
            var targets = new int[b * t];
            Array.Fill(targets, -100);
            for (int r = 0; r < b; r++)
            {
                var win = windows[w + r];
                ids.Slice(win.Begin, t).CopyTo(batchIds.AsSpan(r * t));
                for (int j = win.FirstTarget; j < win.EndTarget; j++) targets[r * t + j - 1 - win.Begin] = ids[j];
            }
            var losses = backprop.Run(batchIds, default, b, new CrossEntropyHead(targets, 1f), gradOf: null);
            for (int r = 0; r < b; r++)
            {
                var win = windows[w + r];
                for (int j = win.FirstTarget; j < win.EndTarget; j++)
                {
                    nlls[j] = losses[r * t + j - 1 - win.Begin];
                    sum += nlls[j];
                }
                scored += win.Scored;
            }
            w += b;
            progress?.Invoke(new PerplexityProgress(w, windows.Count, scored, Math.Exp(sum / scored)));
        }
        var (mean, ppl, stderr) = Summarise(nlls.AsSpan(1));
        return new PerplexityResult(scored, windows.Count, mean, ppl, stderr, ctx, stride, nlls);
    }

    /// <summary>Mean NLL, exp of it, and llama.cpp's +/- on the perplexity (null for fewer than 2 values), in float64.</summary>
    public static (double Nll, double Ppl, double? PplStderr) Summarise(ReadOnlySpan<double> nlls)
    {
        if (nlls.IsEmpty) throw new ArgumentException("no NLLs to summarise", nameof(nlls));
        double mean = 0;
        foreach (double x in nlls) mean += x;
        mean /= nlls.Length;
        double ppl = Math.Exp(mean);
        if (nlls.Length < 2) return (mean, ppl, null);
        double squares = 0;
        foreach (double x in nlls) squares += (x - mean) * (x - mean);
        double variance = squares / nlls.Length;
        return (mean, ppl, Math.Sqrt(variance / (nlls.Length - 1)) * ppl);
    }
}
