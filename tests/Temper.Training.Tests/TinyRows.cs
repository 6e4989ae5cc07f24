// What the adapter-training tests (prompt and prefix tuning, modules_to_save, LoRA+) share on the llama-tiny fixture:
// the two rows of 8 tokens they run through DecoderBackprop (Ids [2, 8] flat; Labels the same tokens with each row's
// first two unscored, -100) and the SFT options of a short run on its trainer/sft.jsonl (batch 3, 6 steps, learning
// rate 0.05, seed 3) to which each test adds its adapter; and the one row of 12 tokens (ids below 512, so any tiny
// fixture or Qwen3Tiny takes it; the first three unscored) of the DoRA, IA3 and Qwen3 training tests.
using Temper.Training.Trainers;

namespace Temper.Tests;

public static class TinyRows
{
    public static string Model => Fixtures.Hf("llama-tiny");

    public static readonly int[] Ids = [1, 40, 41, 42, 43, 50, 51, 52, 1, 60, 61, 62, 63, 64, 65, 2];
    public static readonly int[] Labels = [-100, -100, 41, 42, 43, 50, 51, 52, -100, -100, 61, 62, 63, 64, 65, 2];

    public static readonly int[] Row12Ids = [5, 17, 99, 260, 31, 7, 400, 3, 88, 150, 42, 501];
    public static readonly int[] Row12Labels = [-100, -100, -100, 260, 31, 7, 400, 3, 88, 150, 42, 501];

    /// <summary>A short SFT run on the fixture's sft.jsonl writing to <paramref name="outDir"/>, with no adapter chosen yet.</summary>
    public static SftOptions ShortSft(string outDir) => new()
    {
        ModelDir = Model,
        DataPath = Path.Combine(Model, "trainer", "sft.jsonl"),
        OutDir = outDir,
        BatchSize = 3,
        MaxSteps = 6,
        LearningRate = 0.05f,
        Seed = 3,
    };
}
