// The reward model: the score head's and a LoRA weight's gradients of the Bradley-Terry loss against
// central finite differences; a tiny reward model learning a synthetic preference (held-out pair
// accuracy > 0.9, scored by the model loaded back from its run folder); save/load round trips of both
// folder forms (PEFT SEQ_CLS adapter + head, full *ForSequenceClassification folder) giving the same scores.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Core.SafeTensors;
using Temper.Kernels.Cpu;
using Temper.Models;
using Temper.Training;
using Temper.Training.Lora;
using Temper.Training.Losses;
using Temper.Training.Reward;
using Temper.Training.Rl;
using Temper.Training.Runs;
using Temper.Training.Trainers;

namespace Temper.Tests;

public class RewardModelTests
{
    private static int[] Ids(SafetensorsFile r, string name) => r.Get(name).Span<int>().ToArray();

    [Fact]
    public void Head_and_lora_gradients_match_finite_differences()
    {
        string dir = Fixtures.Hf("llama-tiny");
        var be = new CpuBackend();
        using var r = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var lm = LanguageModel.Load(dir, be, Path.Combine(dir, "adapter"));
        // A head with std 0.5 so the decoder's gradients are well above float noise.
        using var head = RewardTrainer.InitialHead(lm.Config.HiddenSize, 0.5f, 3, be);
        using var ps = TrainableParameters.Lora(lm.Weights, be, [("score.weight", head)]);
        var ids = Ids(r, "dpo.chosen").Concat(Ids(r, "dpo.rejected")).ToArray();
        int batch = 4, n = 2;
        var rows = ScoreHead.LastTokenRows(Enumerable.Repeat(1, ids.Length).ToArray(), batch);
        var backprop = new DecoderBackprop(lm.Decoder);
        double Loss(float[] s) => BradleyTerryLoss.Compute(s[..n].Select(x => (double)x).ToArray(), s[n..].Select(x => (double)x).ToArray(), 0.1).Loss;
        float[] Gradient(float[] s)
        {
            var res = BradleyTerryLoss.Compute(s[..n].Select(x => (double)x).ToArray(), s[n..].Select(x => (double)x).ToArray(), 0.1);
            return res.DChosen.Concat(res.DRejected).Select(d => (float)d).ToArray();
        }
        ps.ZeroGrads();
        backprop.Run(ids, [], batch, new ScoreHead(head, rows, Gradient), ps.GradOf);
        double Evaluate() => Loss(backprop.Run(ids, [], batch, new ScoreHead(head, rows), null));

        foreach (var name in new[] { "score.weight", "model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.1.mlp.down_proj.lora_B.weight" })
        {
            var p = ps.All.Single(x => x.Name == name);
            var grad = p.Grad.Floats.ToArray();
            // The three largest entries of the analytic gradient, each against (L(w+e) - L(w-e)) / 2e.
            foreach (int i in Enumerable.Range(0, grad.Length).OrderByDescending(i => Math.Abs(grad[i])).Take(3))
            {
                float w = p.Value.Floats[i], eps = 2e-3f;
                p.Value.Floats[i] = w + eps;
                double up = Evaluate();
                p.Value.Floats[i] = w - eps;
                double down = Evaluate();
                p.Value.Floats[i] = w;
                double fd = (up - down) / (2 * eps);
                Assert.True(Math.Abs(grad[i]) > 1e-4, $"{name}[{i}]: gradient {grad[i]:G3} too small to check");
                Assert.True(Math.Abs(fd - grad[i]) <= 2e-2 * Math.Abs(grad[i]) + 1e-5, $"{name}[{i}]: analytic {grad[i]:G6}, finite difference {fd:G6}");
            }
        }
    }

    private static string Pair(Random rng, bool heldOut)
    {
        string[] fillers = heldOut ? ["red", "blue", "green", "grey"] : ["cat", "dog", "sun", "tree", "car", "hat"];
        string F() => fillers[rng.Next(fillers.Length)];
        string prompt = $"Review of the {F()}:";
        return new JsonObject
        {
            ["prompt"] = prompt,
            ["chosen"] = $" the {F()} was good, the {F()} too.",
            ["rejected"] = $" the {F()} was bad, the {F()} too.",
        }.ToJsonString();
    }

    [Fact]
    public void Tiny_reward_model_learns_a_synthetic_preference()
    {
        string dir = Directory.CreateTempSubdirectory("temper-rm-").FullName;
        var rng = new Random(5);
        string train = Path.Combine(dir, "train.jsonl");
        File.WriteAllLines(train, Enumerable.Range(0, 48).Select(_ => Pair(rng, heldOut: false)));
        var o = new SftOptions
        {
            ModelDir = Fixtures.Hf("llama-tiny"), DataPath = train, OutDir = Path.Combine(dir, "run"), LoraRank = 8, LoraAlpha = 16,
            LearningRate = 1e-2f, BatchSize = 16, MaxSteps = 30, Seed = 1, Scheduler = Temper.Training.Optim.ScheduleKind.Constant,
        };
        var result = new RewardTrainer(o, new RewardOptions(0.01), new CpuBackend()).Run();
        Assert.Equal(30, result.Steps);
        var lines = File.ReadAllLines(Path.Combine(dir, "run", "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).ToArray();
        Assert.All(lines, l => Assert.NotNull(l["accuracy"]));
        Assert.True(lines[^1]["loss"]!.GetValue<double>() < lines[0]["loss"]!.GetValue<double>());

        using var rm = RewardModel.Load(Path.Combine(dir, "run"), new CpuBackend());
        int correct = 0, total = 40;
        for (int i = 0; i < total; i++)
        {
            var pair = JsonNode.Parse(Pair(rng, heldOut: true))!;
            if (rm.Score(pair["prompt"]!, pair["chosen"]!) > rm.Score(pair["prompt"]!, pair["rejected"]!)) correct++;
        }
        Assert.True(correct > 0.9 * total, $"held-out accuracy {correct}/{total}");
        Directory.Delete(dir, true);
    }

    private static JsonNode[] Metrics(string dir) => RunMetrics.Read(dir);

    [Fact]
    public void Interrupted_run_resumes_with_its_head_to_the_same_metrics()
    {
        string root = Directory.CreateTempSubdirectory("temper-rm-resume-").FullName;
        string model = Fixtures.Hf("qwen2-tiny");
        var o = new SftOptions
        {
            ModelDir = model, DataPath = Path.Combine(model, "trainer", "dpo.jsonl"), OutDir = Path.Combine(root, "straight"), LoraRank = 4,
            BatchSize = 4, MaxSteps = 4, LearningRate = 1e-2f, Seed = 3,
        };
        new RewardTrainer(o, new RewardOptions(), new CpuBackend()).Run();
        using var cancel = new CancellationTokenSource();
        var first = new RewardTrainer(o with { OutDir = Path.Combine(root, "split") }, new RewardOptions(), new CpuBackend()) { OnStep = s => { if (s.Step == 2) cancel.Cancel(); } };
        Assert.True(first.Run(cancel.Token).Interrupted);
        using (var ck = SafetensorsFile.Open(Path.Combine(root, "split", "checkpoint-2", "trainable.safetensors")))
            Assert.True(ck.Contains("score.weight"));
        new RewardTrainer(o with { OutDir = Path.Combine(root, "split"), Resume = true }, new RewardOptions(), new CpuBackend()).Run();
        var (a, b) = (Metrics(Path.Combine(root, "straight")), Metrics(Path.Combine(root, "split")));
        Assert.Equal(4, b.Length);
        for (int i = 0; i < 4; i++)
            foreach (var key in new[] { "loss", "grad_norm", "accuracy", "margin" })
                Assert.Equal(a[i][key]!.ToJsonString(), b[i][key]!.ToJsonString());
        Directory.Delete(root, true);
    }

    [Fact]
    public void Full_fine_tune_writes_a_loadable_sequence_classification_folder()
    {
        string dir = Directory.CreateTempSubdirectory("temper-rm-fullrun-").FullName;
        string model = Fixtures.Hf("llama-tiny");
        var o = new SftOptions
        {
            ModelDir = model, DataPath = Path.Combine(model, "trainer", "dpo.jsonl"), OutDir = dir, Full = true, BatchSize = 8, MaxSteps = 2, LearningRate = 1e-3f,
        };
        new RewardTrainer(o, new RewardOptions(), new CpuBackend()).Run();
        Assert.False(File.Exists(Path.Combine(dir, "adapter_config.json")));
        Assert.Equal("LlamaForSequenceClassification", JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!["architectures"]![0]!.GetValue<string>());
        using var rm = RewardModel.Load(dir, new CpuBackend());
        Assert.True(float.IsFinite(rm.Score(JsonValue.Create("Hi")!, JsonValue.Create(" there")!)));
        Directory.Delete(dir, true);
    }

    private static float[] Scores(LanguageModel lm, Tensor head, int[][] seqs)
    {
        var b = Temper.Training.Data.SftBatcher.Pad(seqs.Select(s => new Temper.Training.Data.SftExample(s, s, 0)).ToList(), 0);
        return new DecoderBackprop(lm.Decoder).Run(b.Ids, b.Mask, b.Batch, new ScoreHead(head, ScoreHead.LastTokenRows(b.Mask, b.Batch)), null);
    }

    private static int[][] Sequences(string model)
    {
        using var r = SafetensorsFile.Open(Path.Combine(Fixtures.Hf(model), "reference.safetensors"));
        var ids = Ids(r, "input_ids");
        return [ids[..24], ids[24..40], ids[24..31]]; // different lengths: padding and the last-token pick
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Adapter_with_head_round_trips_in_peft_seq_cls_form(bool dora)
    {
        string baseDir = Fixtures.Hf("llama-tiny"), adapterDir = Path.Combine(baseDir, "adapter");
        string dir = Directory.CreateTempSubdirectory("temper-rm-peft-").FullName;
        var be = new CpuBackend();
        var seqs = Sequences("llama-tiny");
        float[] before;
        var config = dora ? LoraConfig.Load(adapterDir) with { UseDora = true } : LoraConfig.Load(adapterDir);
        using (var lm = LanguageModel.Load(baseDir, be, dora ? null : adapterDir))
        using (var head = RewardTrainer.InitialHead(lm.Config.HiddenSize, 0.3f, 9, be))
        {
            if (dora) // a DoRA reward model (--use-dora): B and the magnitudes away from their initial values
            {
                LoraInit.Attach(lm.Weights, config, be, 5);
                var rng = new Random(5);
                foreach (var p in lm.Weights.Projections)
                {
                    foreach (ref float b in p.Lora!.B.Floats) b = (float)(0.05 * (rng.NextDouble() * 2 - 1));
                    foreach (ref float m in p.Lora.Magnitude!.Floats) m *= (float)(1 + 0.2 * (rng.NextDouble() * 2 - 1));
                }
            }
            before = Scores(lm, head, seqs);
            PeftAdapterWriter.Save(dir, lm.Weights, config, be, baseDir, PeftAdapterWriter.SequenceClassification(head));
        }
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
        Assert.Equal("SEQ_CLS", cfg["task_type"]!.GetValue<string>());
        Assert.Contains("score", cfg["modules_to_save"]!.AsArray().Select(x => x!.GetValue<string>()));
        using (var f = SafetensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            Assert.Equal(new Shape(1, 64), f.Get("base_model.model.score.weight").Shape);
        using var rm = RewardModel.Load(dir, be);
        var after = rm.Score(seqs);
        Assert.Equal(before, after);
        Assert.NotEqual(after[1], after[2]);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Full_model_round_trips_as_a_sequence_classification_folder()
    {
        string baseDir = Fixtures.Hf("qwen2-tiny"); // untied: the saved folder has no lm_head
        string dir = Directory.CreateTempSubdirectory("temper-rm-full-").FullName;
        var be = new CpuBackend();
        var seqs = Sequences("qwen2-tiny");
        float[] before;
        using (var lm = LanguageModel.Load(baseDir, be))
        using (var head = RewardTrainer.InitialHead(lm.Config.HiddenSize, 0.3f, 9, be))
        {
            before = Scores(lm, head, seqs);
            ModelExport.Save(dir, lm, be, [new("score.weight", head)], RewardModelExport.SequenceClassificationConfig(lm.Config, 0));
        }
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
        Assert.Equal("Qwen2ForSequenceClassification", cfg["architectures"]![0]!.GetValue<string>());
        Assert.Equal(1, cfg["num_labels"]!.GetValue<int>());
        using (var f = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors")))
            Assert.False(f.Contains("lm_head.weight"));
        using var rm = RewardModel.Load(dir, be);
        Assert.Equal(before, rm.Score(seqs));
        Directory.Delete(dir, true);
    }

    [Fact]
    public void Reward_model_reward_is_the_sigmoid_of_its_score()
    {
        string dir = Directory.CreateTempSubdirectory("temper-rm-fn-").FullName;
        var be = new CpuBackend();
        using (var lm = LanguageModel.Load(Fixtures.Hf("llama-tiny"), be))
        using (var head = RewardTrainer.InitialHead(lm.Config.HiddenSize, 2f, 4, be))
            ModelExport.Save(dir, lm, be, [new("score.weight", head)], RewardModelExport.SequenceClassificationConfig(lm.Config, 0));
        using var rm = RewardModel.Load(dir, be);
        var fn = new RewardModelReward(rm);
        var row = new JsonObject { ["prompt"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "2+2?" }) };
        double got = fn.Score(row, "4");
        double s = rm.Score(row["prompt"]!, new JsonArray(new JsonObject { ["role"] = "assistant", ["content"] = "4" }));
        Assert.Equal(1 / (1 + Math.Exp(-s)), got, 1e-9);
        Assert.InRange(got, 0, 1);
        Assert.NotEqual(got, fn.Score(row, "five"), 1e-6);
        Directory.Delete(dir, true);
    }
}
