// Logit-level distillation: the fused per-token loss against a direct f64 computation from both models'
// full logits (forward and reverse KL at a temperature); a model distilled from itself has zero loss and
// zero gradient; a student's per-token KL to its teacher falls over a few steps; teachers with another
// tokenizer are refused by name.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Data;
using Temper.Training.Distill;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class LogitDistillTests
{
    private static SftBatch ReferenceBatch(string model)
    {
        using var r = SafetensorsFile.Open(Path.Combine(Fixtures.Hf(model), "reference.safetensors"));
        var ids = r.Get("input_ids").Span<int>().ToArray();
        var labels = r.Get("labels").Span<int>().ToArray();
        int t = r.Get("input_ids").Shape[1];
        var rows = Enumerable.Range(0, ids.Length / t).Select(b => new SftExample(ids[(b * t)..((b + 1) * t)], labels[(b * t)..((b + 1) * t)], b + 1)).ToList();
        return SftBatcher.Pad(rows, 0);
    }

    [Theory]
    [InlineData(false, 1f)]
    [InlineData(true, 2f)]
    [InlineData(false, 0.5f)]
    public void Loss_equals_kl_of_the_full_logits(bool reverse, float temperature)
    {
        var be = new CpuBackend();
        using var student = LanguageModel.Load(Fixtures.Hf("llama-tiny"), be, Path.Combine(Fixtures.Hf("llama-tiny"), "adapter"));
        using var teacher = LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), be);
        var b = ReferenceBatch("llama-tiny");
        var losses = LogitDistiller.Losses(new DecoderBackprop(student.Decoder), new DecoderBackprop(teacher.Decoder), b, new LogitDistillOptions(reverse, temperature), 1f, null);

        using var ls = student.Logits(b.Ids, b.Batch);
        using var lt = teacher.Logits(b.Ids, b.Batch);
        int v = student.Config.VocabSize, counted = 0;
        var mask = LogitDistillationHead.CompletionMask(b.Labels, b.Length);
        for (int n = 0; n < mask.Length; n++)
        {
            if (mask[n] == 0) { Assert.Equal(0f, losses[n]); continue; }
            var ps = LogSoftmax(ls.Floats.Slice(n * v, v), temperature);
            var pt = LogSoftmax(lt.Floats.Slice(n * v, v), temperature);
            double kl = 0;
            for (int j = 0; j < v; j++) kl += reverse ? Math.Exp(ps[j]) * (ps[j] - pt[j]) : Math.Exp(pt[j]) * (pt[j] - ps[j]);
            double expected = temperature * (double)temperature * kl;
            Assert.True(Math.Abs(losses[n] - expected) <= 1e-4 * Math.Max(expected, 1e-2), $"row {n}: {losses[n]:G6} vs {expected:G6}");
            Assert.True(expected > 0);
            counted++;
        }
        Assert.Equal(b.LabelTokens, counted);
    }

    private static double[] LogSoftmax(ReadOnlySpan<float> logits, float temperature)
    {
        var z = new double[logits.Length];
        for (int j = 0; j < z.Length; j++) z[j] = logits[j] / (double)temperature;
        double max = z.Max(), lse = max + Math.Log(z.Sum(x => Math.Exp(x - max)));
        for (int j = 0; j < z.Length; j++) z[j] -= lse;
        return z;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_model_distilled_from_itself_has_zero_loss_and_gradient(bool reverse)
    {
        var be = new CpuBackend();
        using var student = LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), be);
        using var teacher = LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), be);
        using var ps = TrainableParameters.Full(student.Weights, be);
        ps.ZeroGrads();
        var losses = LogitDistiller.Losses(new DecoderBackprop(student.Decoder), new DecoderBackprop(teacher.Decoder), ReferenceBatch("qwen2-tiny"), new LogitDistillOptions(reverse, 1.5f), 1f, ps.GradOf);
        Assert.All(losses, l => Assert.Equal(0f, l));
        Assert.Equal(0, ps.GradNorm());
        Assert.True(ps.All.Count > 20);
    }

    [Fact]
    public void Student_kl_to_the_teacher_falls()
    {
        string dir = Directory.CreateTempSubdirectory("temper-kd-").FullName;
        string data = Path.Combine(dir, "data.jsonl");
        var rng = new Random(3);
        File.WriteAllLines(data, Enumerable.Range(0, 16).Select(i =>
            new JsonObject { ["prompt"] = $"Count from {i}:", ["completion"] = $" {i} {i + 1} {i + 2} {rng.Next(100)} done" }.ToJsonString()));
        var o = new SftOptions
        {
            ModelDir = Fixtures.Hf("llama-tiny"), DataPath = data, OutDir = Path.Combine(dir, "run"), LoraRank = 8, LoraAlpha = 16,
            LearningRate = 2e-2f, BatchSize = 8, MaxSteps = 16, Seed = 1, Scheduler = Temper.Training.Optim.ScheduleKind.Constant,
        };
        var r = new LogitDistiller(o, new DistillOptions(Fixtures.Hf("qwen2-tiny"), data), new LogitDistillOptions(Reverse: false, Temperature: 1f), new CpuBackend()).Run();
        Assert.Equal(16, r.Steps);
        var lines = File.ReadAllLines(Path.Combine(dir, "run", "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToArray();
        double Kl(int i) => lines[i]["kl"]!.GetValue<double>();
        // Mean over the two passes over the data at the start and at the end (two batches per epoch).
        double first = (Kl(0) + Kl(1)) / 2, last = (Kl(lines.Length - 1) + Kl(lines.Length - 2)) / 2;
        Assert.True(last < 0.8 * first, $"per-token KL {first:G4} -> {last:G4}");
        Assert.True(File.Exists(Path.Combine(dir, "run", "adapter_model.safetensors")));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void A_teacher_with_another_tokenizer_is_refused()
    {
        string dir = Directory.CreateTempSubdirectory("temper-kd-tok-").FullName;
        foreach (var f in Directory.GetFiles(Fixtures.Hf("llama-tiny"))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var tok = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "tokenizer.json")))!;
        var vocab = tok["model"]!["vocab"]!.AsObject();
        var (a, b) = (vocab.First(kv => kv.Value!.GetValue<int>() == 300).Key, vocab.First(kv => kv.Value!.GetValue<int>() == 301).Key);
        (vocab[a], vocab[b]) = (301, 300); // the same pieces, two ids swapped
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), tok.ToJsonString());
        var be = new CpuBackend();
        using var teacher = LanguageModel.Load(dir, be);
        using var student = LanguageModel.Load(Fixtures.Hf("llama-tiny"), be);
        var e = Assert.Throws<TemperException>(() => SharedTokenizer.Check(teacher, student));
        Assert.Contains("id 300", e.Message);
        SharedTokenizer.Check(student, LanguageModel.Load(Fixtures.Hf("qwen2-tiny"), be)); // one tokenizer.json: accepted
        Directory.Delete(dir, true);
    }
}
