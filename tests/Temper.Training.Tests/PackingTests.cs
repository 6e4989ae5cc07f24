// Packing without attention across examples (TRL packing=True): a packed row, with positions that
// restart per example and attention kept inside each example, gives every token the loss it has when
// its example is run alone (padded batch), and the same gradients; through SftTrainer, the same step.
using System.Text.Json.Nodes;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Models.Text;
using Temper.Training;
using Temper.Training.Data;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class PackingTests
{
    public static TheoryData<string, bool> Cases => new() { { "llama-tiny", false }, { "qwen2-tiny", true } };

    [Theory, MemberData(nameof(Cases))]
    public void Packed_row_gives_each_example_its_unpacked_losses_and_gradients(string name, bool lora)
    {
        string dir = Fixtures.Hf(name);
        var examples = SftDataset.Load(Path.Combine(dir, "trainer", "sft.jsonl"), HfTokenizer.Load(dir), ChatTemplate.LoadFromModelDir(dir), new()).Examples;
        var row = Assert.Single(SftPacker.Pack(examples, examples.Sum(e => e.Length)));
        Assert.True(examples.Count > 2);
        using var lm = LanguageModel.Load(dir, new CpuBackend(), lora ? Path.Combine(dir, "adapter") : null);
        var be = lm.Decoder.Backend;
        var bp = new DecoderBackprop(lm.Decoder);
        int count = row.LabelTokens;
        Assert.Equal(examples.Sum(e => e.LabelTokens), count);

        using var packedGrads = lora ? TrainableParameters.Lora(lm.Weights, be) : TrainableParameters.Full(lm.Weights, be);
        var packed = bp.Run(row.Ids, row.Labels, [], 1, 1f / count, packedGrads.GradOf, default, row.PositionIds(), row.SegmentIds);
        using var plainGrads = lora ? TrainableParameters.Lora(lm.Weights, be) : TrainableParameters.Full(lm.Weights, be);
        var batch = SftBatcher.Pad(examples, 0);
        var plain = bp.Run(batch.Ids, batch.Labels, batch.Mask, batch.Batch, 1f / count, plainGrads.GradOf);

        int start = 0, compared = 0;
        for (int r = 0; r < examples.Count; r++)
        {
            for (int i = 0; i < examples[r].Length; i++)
            {
                float a = plain[r * batch.Length + i], b = packed[start + i];
                Assert.True(Math.Abs(a - b) <= 1e-5 * Math.Max(1, Math.Abs(a)), $"example {r} token {i}: loss {b} packed, {a} alone");
                if (a != 0) compared++;
            }
            start += examples[r].Length;
        }
        Assert.Equal(count, compared);
        foreach (var (p, q) in packedGrads.All.Zip(plainGrads.All))
        {
            double err = GradientParityTests.RelativeL2(q.Grad.Floats, p.Grad.Floats);
            Assert.True(err < 1e-4, $"{p.Name}: relative L2 {err:G3} between packed and unpacked gradients");
        }
    }

    [Fact]
    public void Sft_with_packing_takes_the_unpacked_step()
    {
        string model = Fixtures.Hf("llama-tiny");
        SftOptions Options(string outDir, bool packing) => new()
        {
            ModelDir = model, DataPath = Path.Combine(model, "trainer", "sft.jsonl"), OutDir = outDir,
            InitAdapter = Path.Combine(model, "adapter"), BatchSize = 64, MaxSteps = 2, Packing = packing,
        };
        string a = Directory.CreateTempSubdirectory("temper-pack-").FullName, b = Directory.CreateTempSubdirectory("temper-pack-").FullName;
        var plain = new SftTrainer(Options(a, false), new CpuBackend()).Run().Reports;
        var packed = new SftTrainer(Options(b, true), new CpuBackend()).Run().Reports;
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(plain[i].Loss, packed[i].Loss, 1e-5 * plain[i].Loss);
            Assert.Equal(plain[i].GradNorm, packed[i].GradNorm, 1e-4 * plain[i].GradNorm);
        }
        Assert.True(JsonNode.Parse(File.ReadAllText(Path.Combine(b, "manifest.json")))!["hyperparameters"]!["packing"]!.GetValue<bool>());
        Directory.Delete(a, true);
        Directory.Delete(b, true);
    }
}
