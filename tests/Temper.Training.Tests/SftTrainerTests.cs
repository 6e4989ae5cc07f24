// The SFT recipe end to end on the fixture models: step-0 loss and grad norm against TRL/PEFT
// (trainer_reference.json), gradient accumulation invariance, bit-identical resume, NaN handling,
// and the PEFT adapter round trip.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class SftTrainerTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    private static string TempDir() => Directory.CreateTempSubdirectory("temper-sft-").FullName;

    private static JsonObject[] Metrics(string dir) => RunMetrics.Read(dir);

    private static SftOptions Fixture(string model, string outDir) => new()
    {
        ModelDir = Fixtures.Hf(model),
        DataPath = Path.Combine(Fixtures.Hf(model), "trainer", "sft.jsonl"),
        OutDir = outDir,
        InitAdapter = Path.Combine(Fixtures.Hf(model), "adapter"),
        BatchSize = 64,
        MaxSteps = 1,
    };

    [Theory, MemberData(nameof(Models))]
    public void Step0_loss_and_grad_norm_match_trl(string model)
    {
        var reference = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Hf(model), "trainer", "trainer_reference.json")))!["sft"]!;
        string dir = TempDir();
        new SftTrainer(Fixture(model, dir), new CpuBackend()).Run();
        var first = Metrics(dir)[0];
        double loss = reference["loss"]!.GetValue<double>(), norm = reference["grad_norm"]!.GetValue<double>();
        Assert.Equal(1, first["step"]!.GetValue<int>());
        Assert.True(Math.Abs(first["loss"]!.GetValue<double>() - loss) <= 1e-4 * loss, $"loss {first["loss"]} vs {loss}");
        Assert.True(Math.Abs(first["grad_norm"]!.GetValue<double>() - norm) <= 1e-3 * norm, $"grad_norm {first["grad_norm"]} vs {norm}");
        Assert.True(File.Exists(Path.Combine(dir, "adapter_model.safetensors")));
        var manifest = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "manifest.json")))!;
        Assert.Equal(6, manifest["data"]!["lines"]!.GetValue<int>());
        Assert.Equal(64, manifest["hyperparameters"]!["batch_size"]!.GetValue<int>());
        Assert.Equal(64, manifest["model"]!["sha256"]!.GetValue<string>().Length);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Gradient_accumulation_does_not_change_the_step()
    {
        string a = TempDir(), b = TempDir();
        new SftTrainer(Fixture("llama-tiny", a) with { BatchSize = 6, GradAccum = 1 }, new CpuBackend()).Run();
        new SftTrainer(Fixture("llama-tiny", b) with { BatchSize = 2, GradAccum = 3 }, new CpuBackend()).Run();
        var (ma, mb) = (Metrics(a)[0], Metrics(b)[0]);
        Assert.Equal(ma["loss"]!.GetValue<double>(), mb["loss"]!.GetValue<double>(), 1e-5);
        Assert.Equal(ma["grad_norm"]!.GetValue<double>(), mb["grad_norm"]!.GetValue<double>(), 1e-5);
        Directory.Delete(a, true);
        Directory.Delete(b, true);
    }

    [Fact]
    public void Resume_reproduces_the_uninterrupted_run_exactly()
    {
        var baseOptions = Fixture("qwen2-tiny", "") with { InitAdapter = null, LoraRank = 4, BatchSize = 2, MaxSteps = 6, LearningRate = 1e-2f, Seed = 3 };
        string straight = TempDir(), split = TempDir();
        new SftTrainer(baseOptions with { OutDir = straight }, new CpuBackend()).Run();

        using var cancel = new CancellationTokenSource();
        var first = new SftTrainer(baseOptions with { OutDir = split }, new CpuBackend());
        first.OnStep = s => { if (s.Step == 3) cancel.Cancel(); };
        var r1 = first.Run(cancel.Token);
        Assert.True(r1.Interrupted);
        Assert.True(Directory.Exists(Path.Combine(split, "checkpoint-3")));
        new SftTrainer(baseOptions with { OutDir = split, Resume = true }, new CpuBackend()).Run();

        var (s, p) = (Metrics(straight), Metrics(split));
        Assert.Equal(6, s.Length);
        Assert.Equal(6, p.Length);
        for (int i = 0; i < 6; i++)
            foreach (var key in new[] { "step", "loss", "grad_norm", "lr" })
                Assert.Equal(s[i][key]!.ToJsonString(), p[i][key]!.ToJsonString());
        Directory.Delete(straight, true);
        Directory.Delete(split, true);
    }

    [Fact]
    public void Non_finite_steps_are_skipped_then_abort_keeps_the_checkpoint()
    {
        string model = TempDir();
        foreach (var f in Directory.GetFiles(Fixtures.Hf("llama-tiny")))
            File.Copy(f, Path.Combine(model, Path.GetFileName(f)));
        using (var src = SafetensorsFile.Open(Path.Combine(Fixtures.Hf("llama-tiny"), "model.safetensors")))
        {
            var list = src.Entries.Select(e => new KeyValuePair<string, Tensor>(e.Name, Tensor.FromFloats(e.Shape, src.Get(e.Name).ToFloatArray(), e.Name))).ToList();
            list.First(kv => kv.Key == "model.norm.weight").Value.Floats[3] = float.NaN;
            SafetensorsWriter.Write(Path.Combine(model, "model.safetensors"), list);
        }
        string dir = TempDir();
        var o = Fixture("llama-tiny", dir) with { ModelDir = model, InitAdapter = null, LoraRank = 2, BatchSize = 2, MaxSteps = 10, MaxBadSteps = 3 };
        var warnings = new List<string>();
        var e = Assert.Throws<TemperException>(() => new SftTrainer(o, new CpuBackend()) { OnWarning = warnings.Add }.Run());
        Assert.Contains("3 non-finite steps in a row", e.Message);
        Assert.Equal(3, warnings.Count(w => w.Contains("not finite", StringComparison.Ordinal)));
        Assert.All(Metrics(dir), m => Assert.True(m["skipped"]!.GetValue<bool>()));
        Directory.Delete(model, true);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Peft_adapter_round_trip_is_exact()
    {
        string src = Path.Combine(Fixtures.Hf("llama-tiny"), "adapter");
        string dir = TempDir();
        using var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), new CpuBackend(), src);
        PeftAdapterWriter.Save(dir, lm.Weights, LoraConfig.Load(src), lm.Decoder.Backend, "temper-fixtures/llama-tiny");
        using var a = SafetensorsFile.Open(Path.Combine(src, "adapter_model.safetensors"));
        using var b = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
        Assert.Equal(a.Entries.Select(e => e.Name).Order(), b.Entries.Select(e => e.Name).Order());
        foreach (var e in a.Entries)
            Assert.True(a.Get(e.Name).Bytes.SequenceEqual(b.Get(e.Name).Bytes), e.Name);
        var cfg = LoraConfig.Load(dir);
        Assert.Equal((4, 8.0), (cfg.Rank, cfg.Alpha));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Merged_export_reproduces_merged_logits()
    {
        string dir = Fixtures.Hf("qwen2-tiny");
        string outDir = TempDir();
        using (var lm = LanguageModel.Load(dir, new CpuBackend(), Path.Combine(dir, "adapter"), mergeAdapter: true))
            Temper.Training.Runs.ModelExport.Save(outDir, lm, lm.Decoder.Backend);
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var exported = LanguageModel.Load(outDir, new CpuBackend());
        var ids = r.Get("input_ids");
        using var logits = exported.Logits(ids.Span<int>().ToArray(), ids.Shape[0]);
        var want = r.Get("merged.logits").Floats;
        float maxRef = 0, maxErr = 0;
        for (int i = 0; i < want.Length; i++) { maxRef = Math.Max(maxRef, Math.Abs(want[i])); maxErr = Math.Max(maxErr, Math.Abs(want[i] - logits.Floats[i])); }
        Assert.True(maxErr <= 1e-4 * maxRef, $"max error {maxErr}");
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer.json")));
        Directory.Delete(outDir, true);
    }
}
