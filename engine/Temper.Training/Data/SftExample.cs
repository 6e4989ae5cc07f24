// One tokenized SFT example (or one packed row of several), labels in transformers' unshifted
// convention: Labels[t] = Ids[t] where token t is learned, -100 where it is not; the trainer shifts, so
// Labels[t] is predicted from Ids[..t-1] and a label at t = 0 is never predicted.
// Ids, Labels and SegmentIds all have the example's length T.
namespace Temper.Training.Data;

public sealed record SftExample(int[] Ids, int[] Labels, int SourceLine)
{
    public const int IgnoreIndex = -100;

    /// <summary>
    /// For a packed row (SftPacker): per token, which of the row's examples it belongs to (0, 1, ...).
    /// Null for a plain example, which is one segment.
    /// </summary>
    public int[]? SegmentIds { get; init; }

    public int Length => Ids.Length;

    /// <summary>Labels that are predicted: those at t >= 1 that are not -100.</summary>
    public int LabelTokens
    {
        get
        {
            int n = 0;
            for (int t = 1; t < Labels.Length; t++) if (Labels[t] != IgnoreIndex) n++;
            return n;
        }
    }

    /// <summary>Position ids: 0..T-1, restarting at 0 where a packed row's next example starts.</summary>
    public int[] PositionIds()
    {
        var pos = new int[Ids.Length];
        for (int t = 1; t < pos.Length; t++)
            pos[t] = SegmentIds != null && SegmentIds[t] != SegmentIds[t - 1] ? 0 : pos[t - 1] + 1;
        return pos;
    }
}
