// SftPacker: rows hold the examples in order, greedily, within the length; labels and positions
// restart per example so that nothing is predicted or attended across a boundary.
using Temper.Models.Text;
using Temper.Training.Data;

namespace Temper.Tests.Data;

public class SftPackerTests
{
    private static IReadOnlyList<SftExample> FixtureExamples()
    {
        var dir = Fixtures.Hf("llama-tiny");
        return SftDataset.Load(Path.Combine(dir, "trainer", "sft.jsonl"), HfTokenizer.Load(dir), ChatTemplate.LoadFromModelDir(dir), new()).Examples;
    }

    // Examples whose every token is labelled, lengths as given, ids telling example and position apart.
    private static List<SftExample> Synthetic(params int[] lengths) =>
        lengths.Select((n, e) =>
        {
            var ids = Enumerable.Range(0, n).Select(t => 1000 * (e + 1) + t).ToArray();
            return new SftExample(ids, (int[])ids.Clone(), e + 1);
        }).ToList();

    [Theory]
    [InlineData(0)]
    [InlineData(40)]
    [InlineData(400)]
    public void PacksFixtureExamplesInOrderWithinLength(int slack)
    {
        var examples = FixtureExamples();
        int max = examples.Max(e => e.Length) + slack;
        var rows = SftPacker.Pack(examples, max);
        Assert.All(rows, r => Assert.InRange(r.Length, 1, max));
        Assert.Equal(examples.SelectMany(e => e.Ids), rows.SelectMany(r => r.Ids));
        // Greedy: a row's successor's first example would not have fitted.
        for (int i = 0; i + 1 < rows.Count; i++)
        {
            int next = rows[i + 1].PositionIds().Skip(1).TakeWhile(p => p != 0).Count() + 1;
            Assert.True(rows[i].Length + next > max);
        }
        // Chat examples never label their first token, so packing keeps every label.
        Assert.Equal(examples.SelectMany(e => e.Labels), rows.SelectMany(r => r.Labels));
        Assert.Equal(examples.Sum(e => e.LabelTokens), rows.Sum(r => r.LabelTokens));
    }

    [Fact]
    public void SegmentsPositionsAndBoundaryLabels()
    {
        var rows = SftPacker.Pack(Synthetic(3, 2, 4, 5, 1), 6);
        Assert.Equal([[0, 0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], rows.Select(r => r.SegmentIds!));
        Assert.Equal([[0, 1, 2, 0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4, 0]], rows.Select(r => r.PositionIds()));
        Assert.Equal([1, 3, 4], rows.Select(r => r.SourceLine));
        Assert.Equal([1000, 1001, 1002, -100, 2001], rows[0].Labels);
        Assert.Equal([4000, 4001, 4002, 4003, 4004, -100], rows[2].Labels);
        Assert.Equal(rows[1].Ids, rows[1].Labels);
    }

    [Fact]
    public void RejectsExamplesLongerThanTheRow()
    {
        var e = Assert.Throws<ArgumentException>(() => SftPacker.Pack(Synthetic(3, 7), 6));
        Assert.Contains("line 2", e.Message);
    }
}
