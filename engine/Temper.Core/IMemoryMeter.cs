// A backend that counts the bytes of the tensors it allocates (Zeros) while they are alive, and the
// peak of that count: what a training run reports as its measured peak beside the plan's prediction.
namespace Temper.Core;

public interface IMemoryMeter
{
    /// <summary>Bytes of this backend's allocated tensors not yet disposed.</summary>
    long LiveBytes { get; }
    /// <summary>The most LiveBytes has been since the last ResetPeak.</summary>
    long PeakBytes { get; }
    /// <summary>Starts a new peak from the current LiveBytes.</summary>
    void ResetPeak();
}
