// Every knob of the demo's stages in one place, so the recipe can be retuned without touching the
// pipeline: data sizes, and per stage the steps, learning rate and batch. Default aims at about three
// minutes on 2 CPU cores, Quick at under one. The base model's own recipe is demo/make-base.sh.
namespace Temper.Training.Demo;

public sealed record DemoStageSettings(int Steps, float LearningRate, int BatchSize, int WarmupSteps = 0);

public sealed record DemoSettings
{
    /// <summary>Training examples written for each stage's data file.</summary>
    public int TrainItems { get; init; } = 4000;
    /// <summary>Held-out items every stage is evaluated on (greedy).</summary>
    public int HeldOutItems { get; init; } = 200;
    /// <summary>Held-out prompts every stage answers side by side.</summary>
    public int ShowcasePrompts { get; init; } = 4;
    public int LoraRank { get; init; } = 8;
    public double LoraAlpha { get; init; } = 16;
    public int MaxLength { get; init; } = 48;
    public DemoStageSettings Sft { get; init; } = new(Steps: 400, LearningRate: 1e-2f, BatchSize: 32, WarmupSteps: 10);
    public DemoStageSettings Dpo { get; init; } = new(Steps: 40, LearningRate: 1e-3f, BatchSize: 16);
    public double DpoBeta { get; init; } = 0.1;
    public DemoStageSettings Grpo { get; init; } = new(Steps: 40, LearningRate: 5e-4f, BatchSize: 8);
    public int GrpoGenerations { get; init; } = 8;
    public int GrpoMaxCompletionLength { get; init; } = 12;
    public float GrpoTemperature { get; init; } = 1f;

    public static DemoSettings Default { get; } = new();

    public static DemoSettings Quick { get; } = new()
    {
        TrainItems = 2000,
        HeldOutItems = 100,
        Sft = new(Steps: 200, LearningRate: 1e-2f, BatchSize: 32, WarmupSteps: 5),
        Dpo = new(Steps: 15, LearningRate: 1e-3f, BatchSize: 16),
        Grpo = new(Steps: 15, LearningRate: 5e-4f, BatchSize: 8),
    };

    /// <summary>The same settings with every trained stage run for <paramref name="steps"/> steps.</summary>
    public DemoSettings WithSteps(int steps) => this with { Sft = Sft with { Steps = steps }, Dpo = Dpo with { Steps = steps }, Grpo = Grpo with { Steps = steps } };
}
