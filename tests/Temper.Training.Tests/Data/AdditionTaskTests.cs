// AdditionTask: disjoint, deterministic train and held-out sets; the scorer's cases; the writers'
// files read back by SftDataset with the completion's tokens as the labels.
using System.Text.Json.Nodes;
using Temper.Core;
using Temper.Models.Text;
using Temper.Training.Data;
using Temper.Training.Tasks;

namespace Temper.Tests.Data;

public sealed class AdditionTaskTests : IDisposable
{
    private readonly TempJsonl _files = new();

    public void Dispose() => _files.Dispose();

    [Fact]
    public void TrainAndHeldOutNeverShareAPair()
    {
        var task = new AdditionTask();
        var train = task.Train(3000, seed: 1);
        var held = task.HeldOut(500, seed: 1);
        Assert.Equal((3000, 500), (train.Count, held.Count));
        var trainPrompts = train.Select(i => i.Prompt).ToHashSet();
        Assert.DoesNotContain(held, i => trainPrompts.Contains(i.Prompt));
        Assert.DoesNotContain(task.HeldOut(500, seed: 2), i => trainPrompts.Contains(i.Prompt));
        Assert.All(train.Concat(held), i => Assert.InRange(i.Answer, 0, 198));
        // About HeldOutFraction of all pairs are held out.
        int heldPairs = Enumerable.Range(0, 100).Sum(a => Enumerable.Range(0, 100).Count(b => task.IsHeldOut(a, b)));
        Assert.InRange(heldPairs, 800, 1200);
    }

    [Fact]
    public void GeneratorsAreDeterministicAndRespectTheRange()
    {
        var task = new AdditionTask(10, 20);
        Assert.Equal(task.Train(50, 7), task.Train(50, 7));
        Assert.Equal(task.HeldOut(20, 7), task.HeldOut(20, 7));
        Assert.NotEqual(task.Train(50, 7), task.Train(50, 8));
        Assert.All(task.Train(200, 3), i => Assert.InRange(i.Answer, 20, 40));
        Assert.Equal(new TaskItem("What is 23+58?", "Answer: 81", 81), AdditionTask.Item(23, 58));
    }

    [Theory]
    [InlineData("Answer: 81", true, true, 1.0)]
    [InlineData("Answer: 81<|im_end|>", true, true, 1.0)]
    [InlineData("  Answer: 81 \n<|im_end|><|endoftext|>\n", true, true, 1.0)]
    [InlineData("Answer: 81</s>", true, true, 1.0)]
    [InlineData("Answer: 80", false, true, 0.1)]
    [InlineData("Answer: 081", false, true, 0.1)]
    [InlineData("Answer: -81", false, true, 0.1)]
    [InlineData("81", false, false, 0.0)]
    [InlineData("answer: 81", false, false, 0.0)]
    [InlineData("The answer is 81", false, false, 0.0)]
    [InlineData("Answer: 81 because 23+58=81", false, false, 0.0)]
    [InlineData("Answer: 81\nAnswer: 82", false, false, 0.0)]
    [InlineData("", false, false, 0.0)]
    public void ScoresCompletions(string completion, bool correct, bool formatOk, double reward)
    {
        var s = AdditionTask.Score(completion, AdditionTask.Item(23, 58));
        Assert.Equal(new TaskScore(correct, formatOk, reward, completion.Length), s);
    }

    [Fact]
    public void EvaluateAveragesScores()
    {
        var item = AdditionTask.Item(1, 2);
        var e = AdditionTask.Evaluate([(item, "Answer: 3"), (item, "Answer: 4"), (item, "3"), (item, "Answer: 3<|im_end|>")]);
        Assert.Equal(4, e.Count);
        Assert.Equal(0.5, e.Accuracy, 12);
        Assert.Equal(0.75, e.FormatRate, 12);
        Assert.Equal(2.1 / 4, e.MeanReward, 12);
        Assert.Equal((9 + 9 + 1 + 19) / 4.0, e.MeanLength, 12);
        Assert.Equal(new TaskEvaluation(0, 0, 0, 0, 0), AdditionTask.Evaluate([]));
    }

    [Theory]
    [InlineData(true, "Answer: 81<|im_end|>\n")]
    [InlineData(false, "Answer: 81<|im_end|>")]
    public void SftFilesLoadWithTheCompletionAsLabels(bool conversational, string labelled)
    {
        var dir = Fixtures.Hf("llama-tiny");
        var tok = HfTokenizer.Load(dir);
        var path = Path.Combine(_files.Dir, "sft.jsonl");
        AdditionTask.ToSftJsonl([AdditionTask.Item(23, 58), AdditionTask.Item(4, 5)], path, conversational);
        var first = JsonNode.Parse(File.ReadLines(path).First())!.AsObject();
        Assert.Equal(conversational ? ["messages"] : ["prompt", "completion"], first.Select(kv => kv.Key));
        Assert.Contains("23+58", File.ReadAllText(path));

        var ds = SftDataset.Load(path, tok, ChatTemplate.LoadFromModelDir(dir), new());
        Assert.Equal(2, ds.Examples.Count);
        var ex = ds.Examples[0];
        Assert.Equal(labelled, tok.Decode(ex.Labels.Where(l => l != -100)));
        Assert.EndsWith(labelled, tok.Decode(ex.Ids));
        Assert.Contains("What is 23+58?", tok.Decode(ex.Ids));
    }

    [Fact]
    public void PretrainTextStatesTheSumInOtherFormsThanTheQuestion()
    {
        var item = AdditionTask.Item(23, 58);
        Assert.Equal(["23+58=81", "23+58 = 81", "23 + 58 = 81", "23+58 is 81", "23+58 makes 81", "23+58 equals 81"],
            Enumerable.Range(0, AdditionTask.StatementFormCount).Select(f => AdditionTask.Statement(item, f)));
        Assert.Equal("-3+7=4", AdditionTask.Statement(AdditionTask.Item(-3, 7)));
        Assert.Throws<TemperException>(() => AdditionTask.Statement(new TaskItem("What is 2*3?", "Answer: 6", 6)));
        Assert.Throws<ArgumentOutOfRangeException>(() => AdditionTask.Statement(item, AdditionTask.StatementFormCount));

        var path = Path.Combine(_files.Dir, "pretrain.jsonl");
        var items = new AdditionTask().Train(8, 1);
        AdditionTask.ToPretrainText(items, path);
        var lines = File.ReadAllLines(path);
        Assert.Equal(8, lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            string text = (string)JsonNode.Parse(lines[i])!["text"]!;
            Assert.Equal(AdditionTask.Statement(items[i], i % AdditionTask.StatementFormCount), text);
            Assert.DoesNotContain("What is", text);
            Assert.DoesNotContain("Answer", text);
        }
        var tok = HfTokenizer.Load(Fixtures.Hf("llama-tiny"));
        var ds = SftDataset.Load(path, tok, null, new());
        Assert.Equal(ds.Examples[0].Ids, ds.Examples[0].Labels);
        Assert.StartsWith(AdditionTask.Statement(items[0]), tok.Decode(ds.Examples[0].Ids));
    }
}
