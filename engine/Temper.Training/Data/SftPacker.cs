// Packing: examples concatenated, greedily and in order, into rows of at most maxLength tokens, so a
// batch carries no padding but the last row's. SegmentIds[t] says which of the row's examples token t
// belongs to (0, 1, ...). How the trainer must use a packed row:
//   - position ids restart at 0 where each example starts (SftExample.PositionIds);
//   - attention stays inside an example: query t attends keys t - position[t] .. t (same segment);
//   - the first token of every example after the first has label -100, so no token is predicted
//     across a boundary (the ids of one example never predict the next one's first token).
// Each example then trains exactly as it would alone, less its first label (which SftDataset never
// sets for chat data: a label at t = 0 is never predicted).
namespace Temper.Training.Data;

public static class SftPacker
{
    /// <summary>Packed rows; each SourceLine is that of the row's first example.</summary>
    public static IReadOnlyList<SftExample> Pack(IReadOnlyList<SftExample> examples, int maxLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxLength);
        var rows = new List<SftExample>();
        List<int> ids = [], labels = [], segments = [];
        int firstLine = 0, segment = 0;
        foreach (var ex in examples)
        {
            if (ex.SegmentIds != null) throw new ArgumentException($"line {ex.SourceLine}: example is already packed", nameof(examples));
            if (ex.Length > maxLength)
                throw new ArgumentException($"line {ex.SourceLine}: example of {ex.Length} tokens is longer than the packing length {maxLength}", nameof(examples));
            if (ids.Count + ex.Length > maxLength) Flush();
            if (ids.Count == 0) firstLine = ex.SourceLine;
            int start = ids.Count;
            ids.AddRange(ex.Ids);
            labels.AddRange(ex.Labels);
            if (start > 0) labels[start] = SftExample.IgnoreIndex;
            segments.AddRange(Enumerable.Repeat(segment++, ex.Length));
        }
        Flush();
        return rows;

        void Flush()
        {
            if (ids.Count == 0) return;
            rows.Add(new SftExample([.. ids], [.. labels], firstLine) { SegmentIds = [.. segments] });
            ids.Clear();
            labels.Clear();
            segments.Clear();
            segment = 0;
        }
    }
}
