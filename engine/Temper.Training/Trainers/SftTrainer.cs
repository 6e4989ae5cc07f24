// Supervised fine-tuning and continued pre-training as one thin recipe over the components:
// data -> batches -> DecoderBackprop (loss + gradients) -> clip -> AdamW -> metrics / checkpoints.
// The loss of a step is the sum of cross-entropy over all label tokens of the step divided by their
// count, across micro-batches, so gradient accumulation does not change it. A NaN/Inf step is skipped
// with a warning; a run of them aborts with the last good checkpoint kept. Cancelling (Ctrl-C) saves
// a checkpoint; Resume continues from the latest one with the same data order.
using System.Diagnostics;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Models;
using Temper.Training.Data;
using Temper.Training.Lora;
using Temper.Training.Optim;
using Temper.Training.Runs;

namespace Temper.Training.Trainers;

public sealed record StepReport(int Step, int TotalSteps, double Loss, double GradNorm, float Lr, double TokensPerSecond, bool Skipped);

public sealed record SftResult(int Steps, bool Interrupted, string OutDir, IReadOnlyList<StepReport> Reports);

public sealed class SftTrainer(SftOptions o, IBackend backend)
{
    /// <summary>Where the data order stands: the next batch is batch Index of epoch Epoch.</summary>
    private readonly record struct BatchCursor(int Epoch, int Index)
    {
        public BatchCursor Next(int perEpoch) => Index + 1 < perEpoch ? this with { Index = Index + 1 } : new BatchCursor(Epoch + 1, 0);
    }

    /// <summary>Called after every optimizer step (progress display).</summary>
    public Action<StepReport>? OnStep { get; set; }
    /// <summary>Warnings (truncation counts, skipped steps) for the caller to show.</summary>
    public Action<string>? OnWarning { get; set; }

    public SftResult Run(CancellationToken cancel = default)
    {
        Validate();
        Directory.CreateDirectory(o.OutDir);
        using var lm = o.FromScratch ? LanguageModel.CreateRandom(o.ModelDir, backend, o.Seed) : LanguageModel.Load(o.ModelDir, backend);
        var tok = lm.RequireTokenizer();
        LoraConfig? lora = null;
        if (!o.Full)
        {
            if (o.InitAdapter != null)
            {
                lora = LoraConfig.Load(o.InitAdapter);
                lm.AttachAdapter(o.InitAdapter, merge: false);
            }
            else
            {
                lora = new LoraConfig(o.LoraRank, o.LoraAlpha, o.UseRsLora, o.LoraTargets, null, o.LoraDropout);
                LoraInit.Attach(lm.Weights, lora, backend, o.Seed);
            }
            if (lora.Dropout > 0) throw new TemperException($"LoRA dropout {lora.Dropout} is not supported by the trainer yet; use 0");
        }
        using var ps = o.Full ? TrainableParameters.Full(lm.Weights, backend) : TrainableParameters.Lora(lm.Weights, backend);

        var dataOptions = new SftDataOptions(o.MaxLength, o.Truncation, o.SkipBadLines);
        var data = SftDataset.Load(o.DataPath, tok, lm.Template, dataOptions);
        if (data.Examples.Count == 0) throw new TemperException($"{o.DataPath}: no training examples");
        if (data.TruncatedCount > 0) OnWarning?.Invoke($"{data.TruncatedCount} example(s) longer than {o.MaxLength} tokens were truncated ({o.Truncation.ToString().ToLowerInvariant()})");
        if (data.DroppedCount > 0) OnWarning?.Invoke($"{data.DroppedCount} example(s) longer than {o.MaxLength} tokens were dropped");
        if (data.SkippedBadLines > 0) OnWarning?.Invoke($"{data.SkippedBadLines} bad line(s) skipped");
        var eval = o.EvalData == null ? null : SftDataset.Load(o.EvalData, tok, lm.Template, dataOptions with { SkipBadLines = false });

        int pad = lm.Config.PadTokenId ?? tok.PadId ?? 0;
        var batcher = new SftBatcher(data.Examples, o.BatchSize, pad, (ulong)o.Seed);
        int stepsPerEpoch = Math.Max(1, (batcher.BatchesPerEpoch + o.GradAccum - 1) / o.GradAccum);
        int total = o.MaxSteps ?? o.Epochs * stepsPerEpoch;
        var schedule = new LrSchedule(o.Scheduler, o.LearningRate, o.WarmupSteps, total);
        using var opt = new AdamW(ps, backend, new AdamWOptions(WeightDecay: o.WeightDecay));
        var backprop = new DecoderBackprop(lm.Decoder);

        int startStep = 0;
        var cursor = new BatchCursor(0, 0);
        if (o.Resume && Checkpoint.Latest(o.OutDir) is string ck)
        {
            var st = Checkpoint.Load(ck, ps, opt);
            if (st.DataSha256 != data.Sha256) throw new TemperException($"{ck}: the checkpoint was trained on different data (SHA-256 {st.DataSha256[..12]}..., {o.DataPath} is {data.Sha256[..12]}...)");
            startStep = st.Step;
            cursor = new BatchCursor(st.Epoch, st.BatchIndex);
        }
        else if (o.Resume) OnWarning?.Invoke($"--resume: no checkpoint in {o.OutDir}; starting from step 0");

        RunManifest.Write(o.OutDir, o.Full ? "sft-full" : "sft-lora", o.ModelDir,
            new JsonObject { ["path"] = Path.GetFullPath(o.DataPath), ["sha256"] = data.Sha256, ["lines"] = data.LineCount, ["examples"] = data.Examples.Count, ["truncated"] = data.TruncatedCount, ["dropped"] = data.DroppedCount, ["skipped_bad_lines"] = data.SkippedBadLines },
            o.ToJson());
        using var metrics = new MetricsLog(Path.Combine(o.OutDir, "metrics.jsonl"), o.Resume ? startStep : null);

        var reports = new List<StepReport>();
        int bad = 0;
        string? lastCheckpoint = null;
        bool interrupted = false;
        int step = startStep;
        while (step < total)
        {
            if (cancel.IsCancellationRequested) { interrupted = true; break; }
            var sw = Stopwatch.StartNew();
            var micro = new List<SftBatch>();
            for (int i = 0; i < o.GradAccum; i++)
            {
                micro.Add(batcher.Batch(cursor.Epoch, cursor.Index));
                cursor = cursor.Next(batcher.BatchesPerEpoch);
            }
            int count = micro.Sum(b => b.LabelTokens);
            ps.ZeroGrads();
            double lossSum = 0;
            long tokens = 0;
            foreach (var b in micro)
            {
                lossSum += backprop.Run(b.Ids, b.Labels, b.Mask, b.Batch, 1f / Math.Max(1, count), ps.GradOf).Sum(x => (double)x);
                tokens += b.Ids.Length;
            }
            step++;
            double loss = lossSum / Math.Max(1, count);
            double norm = ps.GradNorm();
            float lr = schedule.At(step - 1);
            bool skipped = !double.IsFinite(loss) || !double.IsFinite(norm);
            if (skipped)
            {
                bad++;
                OnWarning?.Invoke($"step {step}: loss {loss} / grad norm {norm} is not finite; step skipped ({bad} in a row)");
                if (bad >= o.MaxBadSteps)
                    throw new TemperException($"{bad} non-finite steps in a row at step {step}; aborting. Last good checkpoint: {lastCheckpoint ?? Checkpoint.Latest(o.OutDir) ?? "none"}");
            }
            else
            {
                bad = 0;
                if (o.MaxGradNorm > 0 && norm > o.MaxGradNorm)
                    foreach (var p in ps.All) backend.Scale(p.Grad, (float)(o.MaxGradNorm / (norm + 1e-6)));
                opt.Update(lr);
            }
            var report = new StepReport(step, total, loss, norm, lr, tokens / Math.Max(1e-9, sw.Elapsed.TotalSeconds), skipped);
            reports.Add(report);
            var line = MetricsLog.Line(step, loss, norm, lr, report.TokensPerSecond);
            line["epoch"] = cursor.Epoch;
            if (skipped) line["skipped"] = true;
            if (eval != null && o.EvalEvery > 0 && (step % o.EvalEvery == 0 || step == total))
            {
                double evalLoss = Evaluate(backprop, eval, pad);
                line["eval_loss"] = MetricsLog.Round(evalLoss);
                line["eval_ppl"] = MetricsLog.Round(Math.Exp(evalLoss));
            }
            metrics.Write(line);
            OnStep?.Invoke(report);
            if (o.SaveEvery > 0 && step % o.SaveEvery == 0 && !skipped)
                lastCheckpoint = Checkpoint.Save(o.OutDir, new TrainerState(step, cursor.Epoch, cursor.Index, data.Sha256), ps, opt, backend);
        }
        if (interrupted)
            lastCheckpoint = Checkpoint.Save(o.OutDir, new TrainerState(step, cursor.Epoch, cursor.Index, data.Sha256), ps, opt, backend);
        SaveResult(lm, lora);
        return new SftResult(step, interrupted, o.OutDir, reports);
    }

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

    private void SaveResult(LanguageModel lm, LoraConfig? lora)
    {
        if (lora != null)
        {
            PeftAdapterWriter.Save(o.OutDir, lm.Weights, lora, backend, Path.GetFullPath(o.ModelDir));
            return;
        }
        ModelExport.Save(o.OutDir, lm, backend);
    }

    private void Validate()
    {
        if (o.BatchSize < 1) throw new TemperException($"--batch-size must be >= 1 (got {o.BatchSize})");
        if (o.GradAccum < 1) throw new TemperException($"--grad-accum must be >= 1 (got {o.GradAccum})");
        if (o.MaxSteps is < 1) throw new TemperException($"--max-steps must be >= 1 (got {o.MaxSteps})");
        if (o.Epochs < 1) throw new TemperException($"--epochs must be >= 1 (got {o.Epochs})");
        if (o.MaxLength < 2) throw new TemperException($"--max-len must be >= 2 (got {o.MaxLength})");
        if (!(o.LearningRate > 0)) throw new TemperException($"--lr must be > 0 (got {o.LearningRate})");
        if (o.Full && o.InitAdapter != null) throw new TemperException("--full and --init-adapter cannot be combined");
        if (!File.Exists(o.DataPath)) throw new TemperException($"{o.DataPath}: data file not found");
        if (o.EvalData != null && !File.Exists(o.EvalData)) throw new TemperException($"{o.EvalData}: eval data file not found");
    }
}
