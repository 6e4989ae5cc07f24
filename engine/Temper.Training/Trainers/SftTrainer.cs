// Supervised fine-tuning and continued pre-training: a thin recipe over TrainingRun. Data -> batches
// (gradient accumulation over micro-batches) -> DecoderBackprop. The loss of a step is the sum of
// cross-entropy over all label tokens of the step divided by their count, across micro-batches, so
// gradient accumulation does not change it. --eval-data is scored for loss and perplexity.
// A mixture-of-experts model whose config.json sets output_router_logits adds router_aux_loss_coef x each micro-batch's
// router load-balancing loss, as a TRL SFT step over the same micro-batches does (transformers adds it to each forward's loss,
// and the Trainer, its loss normalised by the step's label tokens, sums the micro-batches' losses undivided): the step's
// loss is CE / count + coef x sum over micro-batches of aux, and metrics.jsonl's aux_loss is their mean (TRL's metric),
// logged with router_aux_loss_coef 0 too (transformers still reports aux_loss then).
// The eval loss stays the cross-entropy alone.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Data;
using Temper.Training.Runs;

namespace Temper.Training.Trainers;

public sealed record StepReport(int Step, int TotalSteps, double Loss, double GradNorm, float Lr, double TokensPerSecond, bool Skipped);

public sealed record SftResult(int Steps, bool Interrupted, string OutDir, IReadOnlyList<StepReport> Reports)
{
    /// <summary>The plan's prediction beside the run's measured peak.</summary>
    public MemoryReport? Memory { get; init; }
}

public sealed class SftTrainer(SftOptions o, IBackend backend)
{
    public Action<StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    public SftResult Run(CancellationToken cancel = default)
    {
        using var run = TrainingRun.Open(o, backend, setsDropoutSeed: true, baseMayChange: true, routerAuxLoss: true);
        run.OnStep = OnStep;
        run.OnWarning = OnWarning;
        var tok = run.Model.RequireTokenizer();
        var dataOptions = new SftDataOptions(o.MaxLength, o.Truncation, o.SkipBadLines, AssistantOnlyLoss: o.AssistantOnlyLoss, CompletionOnlyLoss: o.CompletionOnlyLoss);
        var data = SftDataset.Load(o.DataPath, tok, run.Model.Template, dataOptions with { Packing = o.Packing });
        if (data.Examples.Count == 0) throw new TemperException($"{o.DataPath}: no training examples");
        if (data.TruncatedCount > 0) OnWarning?.Invoke($"{data.TruncatedCount} example(s) longer than {o.MaxLength} tokens were truncated ({o.Truncation.ToString().ToLowerInvariant()})");
        if (data.DroppedCount > 0) OnWarning?.Invoke($"{data.DroppedCount} example(s) were dropped (too long, or no label left)");
        if (data.SkippedBadLines > 0) OnWarning?.Invoke($"{data.SkippedBadLines} bad line(s) skipped");
        var eval = o.EvalData == null ? null : SftDataset.Load(o.EvalData, tok, run.Model.Template, dataOptions with { SkipBadLines = false });

        var batcher = new SftBatcher(data.Examples, o.BatchSize, run.PadId, (ulong)o.Seed);
        int total = batcher.TotalSteps(o.MaxSteps, o.Epochs, o.GradAccum);
        var info = new JsonObject
        {
            ["path"] = Path.GetFullPath(o.DataPath), ["sha256"] = data.Sha256, ["lines"] = data.LineCount, ["examples"] = data.Examples.Count,
            ["truncated"] = data.TruncatedCount, ["dropped"] = data.DroppedCount, ["skipped_bad_lines"] = data.SkippedBadLines,
        };

        StepOutput Step(BatchCursor cursor)
        {
            var micro = batcher.StepBatches(ref cursor, o.GradAccum);
            var (loss, aux) = StepLoss(run.Backprop, micro, run.Params.GradOf, b => run.Backprop.DropoutSeed = DropoutSeed(o.Seed, b.Epoch, b.Index));
            var extra = aux is { } a ? new JsonObject { ["aux_loss"] = MetricsLog.Round(a) } : null;
            return new StepOutput(loss, micro.Sum(b => (long)b.Ids.Length), cursor, extra) { LargestMicroBatch = micro.MaxBy(b => b.Ids.Length) is { } big ? (big.Batch, big.Length) : null };
        }

        void AfterStep(int step, JsonObject line)
        {
            bool due = step == total || (o.EvalEvery > 0 && step % o.EvalEvery == 0);
            if (eval == null || !due) return;
            double evalLoss = Evaluate(run.Backprop, eval, run.PadId);
            line["eval_loss"] = MetricsLog.Round(evalLoss);
            line["eval_ppl"] = MetricsLog.Round(Math.Exp(evalLoss));
        }

        return run.Run(o.Full ? "sft-full" : run.PromptTuning != null ? "sft-prompt-tuning" : run.Model.Weights.Prefix != null ? "sft-prefix-tuning" : "sft-lora", total, data.Sha256, info, Step, AfterStep, cancel);
    }

    /// <summary>
    /// One step's gradient passes over its micro-batches (before runs ahead of each: the dropout seed). Returns the step's
    /// loss, the cross-entropy over its label tokens / their count + coef x the sum of the micro-batches' router aux losses
    /// (coef: backprop.RouterAuxLossCoef, null taken as 0), and the micro-batches' mean aux loss, or null when config.json
    /// does not set output_router_logits (with router_aux_loss_coef 0 the pass still computes it, and it is still reported).
    /// The C ABI's trainer (libtemper) takes its SFT steps through this too.
    /// </summary>
    public static (double Loss, double? AuxLoss) StepLoss(DecoderBackprop backprop, IReadOnlyList<SftBatch> micro, Func<Tensor, Tensor?> gradOf, Action<SftBatch>? before = null)
    {
        double auxCoef = backprop.RouterAuxLossCoef ?? 0;
        bool aux = backprop.Decoder.Config.RouterAuxLossCoef != null;
        int count = Math.Max(1, micro.Sum(b => b.LabelTokens));
        double lossSum = 0, auxSum = 0;
        foreach (var b in micro)
        {
            before?.Invoke(b);
            lossSum += backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f / count, gradOf, default, b.Positions, b.SegmentIds).Sum(x => (double)x);
            if (aux) auxSum += backprop.RouterAuxLoss;
        }
        return (lossSum / count + auxCoef * auxSum, aux ? auxSum / micro.Count : null);
    }

    /// <summary>LoRA dropout masks of a micro-batch: from the run's seed and the batch's data position alone, so a resumed run draws the same.</summary>
    public static ulong DropoutSeed(int seed, int epoch, int index) =>
        SplitMix64.Mix((ulong)(uint)seed) ^ SplitMix64.Mix(((ulong)(uint)epoch << 32 | (uint)index) + 1);

    /// <summary>Token-level mean cross-entropy of a data set (no gradients).</summary>
    public static double Evaluate(DecoderBackprop backprop, SftDataset eval, int pad, int batchSize = 8)
    {
        var batcher = new SftBatcher(eval.Examples, batchSize, pad, seed: 0, shuffle: false);
        double sum = 0;
        long count = 0;
        for (int i = 0; i < batcher.BatchesPerEpoch; i++)
        {
            var b = batcher.Batch(0, i);
            sum += backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f, null).Sum(x => (double)x);
            count += b.LabelTokens;
        }
        return sum / Math.Max(1, count);
    }
}
