// Batches of SFT examples for a training run. Each epoch visits every example once, in a permutation
// drawn from (seed, epoch) alone (Fisher-Yates over SplitMix64, the same on every .NET version and
// machine), cut into batches of BatchSize in that order; the last batch of an epoch may be smaller.
// A batch is right-padded to its longest row; every array is row-major [Batch, Length]:
//   Ids       pad id on padding          Labels    -100 on padding (unshifted, as SftExample)
//   Mask      1 on tokens, 0 on padding  Positions position ids (restart at 0 per packed example; 0 on padding)
//   SegmentIds  null unless a row is packed: which example of its row each token is (0 for plain rows and padding)
// Batch (epoch, index) depends on nothing else, so a run resumes exactly from a saved (Epoch, Index).
using Temper.Core;
using Temper.Training.Trainers;

namespace Temper.Training.Data;

/// <param name="ExampleIndices">Which examples (indices into the batcher's list) make the rows.</param>
/// <param name="LabelTokens">Labels that are predicted: not -100 and not in the first column.</param>
public sealed record SftBatch(int Epoch, int Index, int Batch, int Length, int[] Ids, int[] Labels, int[] Mask,
    int[] Positions, int LabelTokens, int[] ExampleIndices)
{
    public int[]? SegmentIds { get; init; }
}

public sealed class SftBatcher
{
    private readonly IReadOnlyList<SftExample> _examples;
    private readonly int _padId;
    private readonly ulong _seed;
    private readonly bool _shuffle;

    public SftBatcher(IReadOnlyList<SftExample> examples, int batchSize, int padId, ulong seed, bool shuffle = true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        if (examples.Count == 0) throw new ArgumentException("no examples to batch", nameof(examples));
        _examples = examples;
        BatchSize = batchSize;
        _padId = padId;
        _seed = seed;
        _shuffle = shuffle;
    }

    public int BatchSize { get; }
    public int BatchesPerEpoch => (_examples.Count + BatchSize - 1) / BatchSize;

    /// <summary>The order of the examples in an epoch (identity without shuffling).</summary>
    public int[] Order(int epoch)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(epoch);
        var order = Enumerable.Range(0, _examples.Count).ToArray();
        if (!_shuffle) return order;
        var rng = new SplitMix64(SplitMix64.Mix(_seed) ^ SplitMix64.Mix((ulong)epoch + 1));
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = rng.NextInt(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    public SftBatch Batch(int epoch, int index) => Make(Order(epoch), epoch, index);

    /// <summary>A run's optimizer steps: maxSteps, or epochs x the steps of gradAccum batches an epoch (at least one).</summary>
    public int TotalSteps(int? maxSteps, int epochs, int gradAccum) => maxSteps ?? epochs * Math.Max(1, (BatchesPerEpoch + gradAccum - 1) / gradAccum);

    /// <summary>The gradAccum batches one optimizer step takes from <paramref name="cursor"/>, which moves past them.</summary>
    public List<SftBatch> StepBatches(ref BatchCursor cursor, int gradAccum)
    {
        var micro = new List<SftBatch>(gradAccum);
        for (int i = 0; i < gradAccum; i++, cursor = cursor.Next(BatchesPerEpoch))
            micro.Add(Batch(cursor.Epoch, cursor.Index));
        return micro;
    }

    /// <summary>
    /// Batches from (epoch, batchIndex) on, running on into the following epochs without end: take as
    /// many as the run needs.
    /// </summary>
    public IEnumerable<SftBatch> From(int epoch, int batchIndex)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batchIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(batchIndex, BatchesPerEpoch);
        for (; ; epoch++, batchIndex = 0)
        {
            var order = Order(epoch);
            for (int i = batchIndex; i < BatchesPerEpoch; i++) yield return Make(order, epoch, i);
        }
    }

    private SftBatch Make(int[] order, int epoch, int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, BatchesPerEpoch);
        var rows = order[(index * BatchSize)..Math.Min(order.Length, (index + 1) * BatchSize)];
        return Pad(rows.Select(r => _examples[r]).ToList(), _padId) with { Epoch = epoch, Index = index, ExampleIndices = rows };
    }

    /// <summary>Right-pads any list of examples into one batch (the layout described above).</summary>
    public static SftBatch Pad(IReadOnlyList<SftExample> examples, int padId)
    {
        int b = examples.Count, t = examples.Max(e => e.Length);
        var ids = new int[b * t];
        var labels = new int[b * t];
        var mask = new int[b * t];
        var positions = new int[b * t];
        Array.Fill(ids, padId);
        Array.Fill(labels, SftExample.IgnoreIndex);
        var segments = examples.Any(e => e.SegmentIds != null) ? new int[b * t] : null;
        int labelTokens = 0;
        for (int r = 0; r < b; r++)
        {
            var ex = examples[r];
            ex.SegmentIds?.CopyTo(segments!, r * t);
            ex.Ids.CopyTo(ids, r * t);
            ex.Labels.CopyTo(labels, r * t);
            ex.PositionIds().CopyTo(positions, r * t);
            Array.Fill(mask, 1, r * t, ex.Length);
            labelTokens += ex.LabelTokens;
        }
        return new SftBatch(0, 0, b, t, ids, labels, mask, positions, labelTokens, Enumerable.Range(0, b).ToArray()) { SegmentIds = segments };
    }
}
