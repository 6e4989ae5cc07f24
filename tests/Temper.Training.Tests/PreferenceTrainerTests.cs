// Step-0 parity of the preference trainers with TRL/torch (trainer_reference.json): LoRA from the
// fixture adapter, the whole file as one batch, reference = the base with the adapter off. The first
// metrics line carries the loss of the initial weights and the LoRA gradient norm before clipping.
using System.Text.Json.Nodes;
using Temper.Kernels.Cpu;
using Temper.Training.Losses;
using Temper.Training.Preference;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class PreferenceTrainerTests
{
    public static TheoryData<string> Models => new() { "llama-tiny", "qwen2-tiny" };

    private static JsonNode Reference(string model, string method) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Hf(model), "trainer", "trainer_reference.json")))![method]!;

    private static SftOptions Options(string model, string data, string outDir) => new()
    {
        ModelDir = Fixtures.Hf(model),
        DataPath = Path.Combine(Fixtures.Hf(model), "trainer", data),
        OutDir = outDir,
        InitAdapter = Path.Combine(Fixtures.Hf(model), "adapter"),
        BatchSize = 64,
        MaxSteps = 1,
    };

    private static JsonObject FirstLine(string dir) => JsonNode.Parse(File.ReadLines(Path.Combine(dir, "metrics.jsonl")).First())!.AsObject();

    private static void AssertStep0(JsonObject line, JsonNode reference)
    {
        double loss = reference["loss"]!.GetValue<double>(), norm = reference["grad_norm"]!.GetValue<double>();
        Assert.True(Math.Abs(line["loss"]!.GetValue<double>() - loss) <= 1e-4 * Math.Abs(loss), $"loss {line["loss"]} vs {loss}");
        Assert.True(Math.Abs(line["grad_norm"]!.GetValue<double>() - norm) <= 1e-3 * norm, $"grad_norm {line["grad_norm"]} vs {norm}");
    }

    [Theory, MemberData(nameof(Models))]
    public void Dpo_step0_matches_trl(string model)
    {
        string dir = Directory.CreateTempSubdirectory("temper-dpo-").FullName;
        new DpoTrainer(Options(model, "dpo.jsonl", dir), new PreferenceOptions { Beta = 0.1 }, new CpuBackend()).Run();
        var line = FirstLine(dir);
        var reference = Reference(model, "dpo");
        AssertStep0(line, reference);
        Assert.Equal(reference["reward_accuracy"]!.GetValue<double>(), line["reward_accuracy"]!.GetValue<double>(), 1e-9);
        Assert.True(File.Exists(Path.Combine(dir, "adapter_model.safetensors")));
        Directory.Delete(dir, true);
    }

    [Theory, MemberData(nameof(Models))]
    public void Dpo_with_precomputed_reference_gives_the_same_step(string model)
    {
        string dir = Directory.CreateTempSubdirectory("temper-dpo-").FullName;
        new DpoTrainer(Options(model, "dpo.jsonl", dir), new PreferenceOptions { Beta = 0.1, PrecomputeRef = true }, new CpuBackend()).Run();
        AssertStep0(FirstLine(dir), Reference(model, "dpo"));
        var cache = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "ref_logps.json")))!;
        var expect = Reference(model, "dpo")["ref_chosen_logps"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        var got = cache["chosen"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
        for (int i = 0; i < expect.Length; i++) Assert.Equal(expect[i], got[i], 1e-3);
        Directory.Delete(dir, true);
    }

    [Theory, MemberData(nameof(Models))]
    public void Kto_step0_matches_trl(string model)
    {
        string dir = Directory.CreateTempSubdirectory("temper-kto-").FullName;
        new KtoTrainer(Options(model, "kto.jsonl", dir), new PreferenceOptions { Beta = 0.1 }, new CpuBackend()).Run();
        var line = FirstLine(dir);
        var reference = Reference(model, "kto");
        AssertStep0(line, reference);
        Assert.Equal(reference["z0"]!.GetValue<double>(), line["kl_z0"]!.GetValue<double>(), 1e-4);
        Directory.Delete(dir, true);
    }

    [Theory, MemberData(nameof(Models))]
    public void Orpo_step0_matches_trl(string model)
    {
        string dir = Directory.CreateTempSubdirectory("temper-orpo-").FullName;
        new DpoTrainer(Options(model, "dpo.jsonl", dir), new PreferenceOptions { Beta = 0.1 }, new CpuBackend(), orpo: true).Run();
        var line = FirstLine(dir);
        var reference = Reference(model, "orpo");
        AssertStep0(line, reference);
        Assert.Equal(reference["nll"]!.GetValue<double>(), line["nll"]!.GetValue<double>(), 1e-4);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Dpo_training_raises_the_reward_margin()
    {
        string dir = Directory.CreateTempSubdirectory("temper-dpo-").FullName;
        var o = Options("llama-tiny", "dpo.jsonl", dir) with { MaxSteps = 15, LearningRate = 5e-3f, BatchSize = 4 };
        new DpoTrainer(o, new PreferenceOptions { Beta = 0.1, LossType = DpoLossType.Sigmoid }, new CpuBackend()).Run();
        var lines = File.ReadAllLines(Path.Combine(dir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToArray();
        Assert.True(lines[^1]["reward_margin"]!.GetValue<double>() > lines[0]["reward_margin"]!.GetValue<double>() + 0.05);
        Assert.True(lines[^1]["loss"]!.GetValue<double>() < lines[0]["loss"]!.GetValue<double>());
        Directory.Delete(dir, true);
    }
}
