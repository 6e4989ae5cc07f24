// Logit-level distillation (Hinton et al.; TRL GKD's generalized JSD at beta 0 / 1 is the same forward /
// reverse KL): the student is trained to match the teacher's next-token distribution on every completion
// token, loss = T^2 KL(p_T || p_S) (forward) or T^2 KL(p_S || p_T) (reverse), softmaxes at temperature T,
// averaged over the step's completion tokens. Each micro-batch: a no-gradient teacher pass keeps its
// final normed hidden state [B*T,Ct]; the student's forward + backward puts LogitDistillationHead on its
// own, which runs the backend's fused LmHeadDistillation (no [B*T,V] logits are held). Teacher and
// student must share a tokenizer. Data: SFT-form JSONL (prompt/completion, messages, text); a file of
// prompts only is first answered by the teacher, as sequence-level distillation does.
using System.Text.Json;
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models;
using Temper.Training.Data;
using Temper.Training.Trainers;

namespace Temper.Training.Distill;

/// <summary>Logit distillation's knobs: the KL direction and the softmax temperature.</summary>
public sealed record LogitDistillOptions(bool Reverse = false, float Temperature = 1f)
{
    public static bool ParseKl(string name) => name switch
    {
        "forward" => false,
        "reverse" => true,
        _ => throw new TemperException($"--kl must be forward or reverse, not '{name}'"),
    };
}

public sealed class LogitDistiller(SftOptions student, DistillOptions d, LogitDistillOptions l, IBackend backend)
{
    public Action<StepReport>? OnStep { get; set; }
    public Action<string>? OnWarning { get; set; }

    public SftResult Run(CancellationToken cancel = default)
    {
        if (!(l.Temperature > 0)) throw new TemperException($"--temperature must be > 0 (got {l.Temperature})");
        string data = student.DataPath;
        bool generated = PromptsOnly(data);
        if (generated) data = new SequenceDistiller(student, d, backend) { OnWarning = OnWarning }.GenerateData();
        var o = student with { DataPath = data, SkipBadLines = student.SkipBadLines || generated };
        using var run = TrainingRun.Open(o, backend);
        run.OnStep = OnStep;
        run.OnWarning = OnWarning;
        using var teacher = LanguageModel.Load(d.TeacherDir, backend);
        SharedTokenizer.Check(teacher, run.Model);
        var teacherPass = new DecoderBackprop(teacher.Decoder);
        var ds = SftDataset.Load(data, run.Model.RequireTokenizer(), run.Model.Template, new SftDataOptions(o.MaxLength, o.Truncation, o.SkipBadLines));
        if (ds.Examples.Count == 0) throw new TemperException($"{data}: no training examples");
        if (ds.SkippedBadLines > 0) OnWarning?.Invoke($"{ds.SkippedBadLines} bad line(s) skipped");
        var batcher = new SftBatcher(ds.Examples, o.BatchSize, run.PadId, (ulong)o.Seed);
        int total = batcher.TotalSteps(o.MaxSteps, o.Epochs, o.GradAccum);
        double t2 = (double)l.Temperature * l.Temperature;

        StepOutput Step(BatchCursor cursor)
        {
            var micro = batcher.StepBatches(ref cursor, o.GradAccum);
            int count = Math.Max(1, micro.Sum(b => b.LabelTokens));
            double lossSum = 0;
            foreach (var b in micro)
                lossSum += Losses(run.Backprop, teacherPass, b, l, 1f / count, run.Params.GradOf).Sum(x => (double)x);
            double loss = lossSum / count;
            return new StepOutput(loss, micro.Sum(b => (long)b.Ids.Length), cursor, new JsonObject { ["kl"] = loss / t2 });
        }

        var info = new JsonObject
        {
            ["path"] = Path.GetFullPath(data), ["sha256"] = ds.Sha256, ["lines"] = ds.LineCount, ["examples"] = ds.Examples.Count,
            ["teacher_generated"] = generated, ["skipped_bad_lines"] = ds.SkippedBadLines,
            ["method"] = new JsonObject { ["teacher"] = Path.GetFullPath(d.TeacherDir), ["kl"] = l.Reverse ? "reverse" : "forward", ["temperature"] = l.Temperature },
        };
        return run.Run("distill-logits", total, ds.Sha256, info, Step, null, cancel);
    }

    /// <summary>
    /// Per-token distillation losses T^2 KL [B*T] of one batch (0 off the completion tokens): the teacher's
    /// no-gradient pass, then the student's pass with gradients of lossScale * their sum (gradOf null = none).
    /// </summary>
    public static float[] Losses(DecoderBackprop studentPass, DecoderBackprop teacherPass, SftBatch b, LogitDistillOptions l, float lossScale, Func<Tensor, Tensor?>? gradOf)
    {
        var capture = new HiddenStateHead();
        teacherPass.Run(b.Ids, b.Mask, b.Batch, capture, null);
        using var teacherHidden = capture.Hidden!;
        var head = new LogitDistillationHead(teacherHidden, teacherPass.Decoder.Weights.LmHead.FusedHeadWeight(), LogitDistillationHead.CompletionMask(b.Labels, b.Length),
            l.Temperature, l.Reverse, lossScale);
        return studentPass.Run(b.Ids, b.Mask, b.Batch, head, gradOf);
    }

    /// <summary>Whether a JSONL file holds prompts only (its first object has "prompt" and no completion, messages or text).</summary>
    public static bool PromptsOnly(string path)
    {
        if (!File.Exists(path)) throw new TemperException($"{path}: data file not found");
        foreach (var line in File.ReadLines(path))
        {
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonObject? o;
            try { o = JsonNode.Parse(line) as JsonObject; }
            catch (JsonException) { return false; } // the SFT reader reports it with its line number
            return o != null && o.ContainsKey("prompt") && !o.ContainsKey("completion") && !o.ContainsKey("messages") && !o.ContainsKey("text");
        }
        return false;
    }
}
