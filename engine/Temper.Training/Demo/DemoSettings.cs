// Every knob of the demo's stages in one place, so the recipe can be retuned without touching the
// pipeline: data sizes, and per stage the steps, learning rate and batch. Default aims at about three
// minutes on 2 CPU cores, Quick at under one. The base model's own recipe is demo/make-base.sh.
namespace Temper.Training.Demo;

public sealed record DemoStageSettings(int Steps, float LearningRate, int BatchSize, int WarmupSteps = 0);

public sealed record DemoSettings
{
    /// <summary>The addition task's operand range: two-digit operands and sums (demo/base was pretrained on it).</summary>
    public const int OperandMin = 10, OperandMax = 49;

    /// <summary>The demo's task: <see cref="OperandMin"/>..<see cref="OperandMax"/>, the default held-out split.</summary>
    public static Tasks.AdditionTask Task => new(OperandMin, OperandMax);

    /// <summary>Training examples written for each stage's data file.</summary>
    public int TrainItems { get; init; } = 4000;
    /// <summary>Held-out items every stage is evaluated on (greedy).</summary>
    public int HeldOutItems { get; init; } = 200;
    /// <summary>Held-out prompts every stage answers side by side.</summary>
    public int ShowcasePrompts { get; init; } = 4;
    /// <summary>Completions sampled per held-out prompt for the mean reward (at <see cref="EvalTemperature"/>).</summary>
    public int EvalSamples { get; init; } = 8;
    public float EvalTemperature { get; init; } = 1f;
    public int LoraRank { get; init; } = 16;
    public double LoraAlpha { get; init; } = 32;
    public int MaxLength { get; init; } = 48;
    public DemoStageSettings Sft { get; init; } = new(Steps: 60, LearningRate: 3e-3f, BatchSize: 64, WarmupSteps: 10);
    public DemoStageSettings Dpo { get; init; } = new(Steps: 30, LearningRate: 1e-4f, BatchSize: 16);
    public double DpoBeta { get; init; } = 0.1;
    public DemoStageSettings Grpo { get; init; } = new(Steps: 550, LearningRate: 1e-3f, BatchSize: 16);
    public int GrpoGenerations { get; init; } = 8;
    public int GrpoMaxCompletionLength { get; init; } = 12;
    public float GrpoTemperature { get; init; } = 1f;

    public static DemoSettings Default { get; } = new();

    public static DemoSettings Quick { get; } = new()
    {
        TrainItems = 2000,
        HeldOutItems = 100,
        Sft = new(Steps: 40, LearningRate: 3e-3f, BatchSize: 64, WarmupSteps: 10),
        Dpo = new(Steps: 10, LearningRate: 1e-4f, BatchSize: 16),
        Grpo = new(Steps: 80, LearningRate: 1e-3f, BatchSize: 16),
    };

    /// <summary>
    /// <paramref name="settings"/> with the properties a JSON file names replaced (the others kept), e.g.
    /// {"Sft": {"Steps": 80, "LearningRate": 0.003, "BatchSize": 64, "WarmupSteps": 10}, "GrpoTemperature": 0.7}.
    /// </summary>
    public static DemoSettings Override(DemoSettings settings, string path)
    {
        if (!File.Exists(path)) throw new Core.TemperException($"{path}: settings file not found");
        System.Text.Json.Nodes.JsonObject overrides;
        try { overrides = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path)) as System.Text.Json.Nodes.JsonObject ?? throw new Core.TemperException($"{path}: not a JSON object"); }
        catch (System.Text.Json.JsonException e) { throw new Core.TemperException($"{path}: not valid JSON: {e.Message.Split('\n')[0]}"); }
        var merged = System.Text.Json.JsonSerializer.SerializeToNode(settings, DemoSettingsJson.Default.DemoSettings)!.AsObject();
        foreach (var (key, value) in overrides)
        {
            if (!merged.ContainsKey(key)) throw new Core.TemperException($"{path}: unknown setting '{key}' (known: {string.Join(", ", merged.Select(p => p.Key))})");
            merged[key] = value?.DeepClone();
        }
        try { return System.Text.Json.JsonSerializer.Deserialize(merged, DemoSettingsJson.Default.DemoSettings) ?? settings; }
        catch (System.Text.Json.JsonException e) { throw new Core.TemperException($"{path}: {e.Message.Split('\n')[0]}"); }
    }

    /// <summary>The same settings with every trained stage run for <paramref name="steps"/> steps.</summary>
    public DemoSettings WithSteps(int steps) => this with { Sft = Sft with { Steps = steps }, Dpo = Dpo with { Steps = steps }, Grpo = Grpo with { Steps = steps } };
}

[System.Text.Json.Serialization.JsonSerializable(typeof(DemoSettings))]
internal sealed partial class DemoSettingsJson : System.Text.Json.Serialization.JsonSerializerContext;
